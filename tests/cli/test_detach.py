"""Ctrl-C in a live view detaches: the command says how to come back, the task runs on.

``agentmesh submit`` (which watches by default) and ``agentmesh tasks watch`` run as real
processes against an orchestrator and an agent process over mTLS. The task's one step waits
for a gate file that the test opens only after both commands were interrupted, so the task
is certainly running when SIGINT arrives.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from pathlib import Path

import pytest

from agentmesh.models import TaskState
from agentmesh.orchestrator import Orchestrator
from tests.support.mesh import client, wait_for_agents
from tests.support.processes import AgentProcesses
from tests.support.waiting import eventually

pytestmark = pytest.mark.slow

#: Exit status after Ctrl-C: 128 + SIGINT, as a shell reports a command ended by it.
DETACHED = 130
#: The live view's line for step ``work`` starting on the agent (``#2   work running on ...``).
STEP_RUNNING = re.compile(rb"#\d+ +work running on echo-1")


async def _run_until(
    args: list[str], env: dict[str, str], seen: re.Pattern[bytes]
) -> tuple[int, str, str]:
    """Run ``agentmesh ARGS``, send SIGINT once a line of its output matches ``seen``; its exit
    status, stdout and stderr."""
    process = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).parent / "agentmesh"),
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None
    assert process.stderr is not None
    printed = b""
    try:
        async with asyncio.timeout(60):
            while not seen.search(printed):
                line = await process.stdout.readline()
                assert line, (printed, await process.stderr.read())  # ended before the view
                printed += line
        process.send_signal(signal.SIGINT)
        async with asyncio.timeout(30):
            rest, errors = await process.communicate()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode is not None
    return process.returncode, (printed + rest).decode(), errors.decode()


def _assert_detached(status: int, out: str, err: str, task_id: str) -> None:
    assert status == DETACHED, (status, out, err)
    assert f"detached from task {task_id}; it keeps running." in err
    assert f"agentmesh tasks watch {task_id}" in err
    assert f"agentmesh tasks cancel {task_id}" in err
    assert "Traceback" not in out + err
    assert "KeyboardInterrupt" not in out + err


async def test_ctrl_c_detaches_submit_and_watch_and_the_task_runs_on_to_success(
    orchestrator: Orchestrator, certs: Path, agents: AgentProcesses, tmp_path: Path
) -> None:
    agents.start("tests.support.agents", "echo-1", [f"localhost:{orchestrator.port}"])
    gate = tmp_path / "gate"
    plan = tmp_path / "plan.yaml"
    plan.write_text(
        "steps:\n"
        "  - id: work\n"
        "    capability: test.work\n"
        f"    input: {{journal: '{tmp_path / 'journal'}', entry: w, gate: '{gate}'}}\n"
    )
    env = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "COLUMNS": "200",
        "AGENTMESH_ADDRESS": f"localhost:{orchestrator.port}",
        "AGENTMESH_CERTS_DIR": str(certs),
        "AGENTMESH_CLIENT_NAME": "alice",
    }
    async with client(orchestrator, certs) as alice:
        await wait_for_agents(alice, "echo-1", within=60)

        status, out, err = await _run_until(["submit", "--plan", str(plan)], env, STEP_RUNNING)
        submitted = re.search(r"submitted task (\S+)", out)
        assert submitted is not None, out
        task_id = submitted[1]
        _assert_detached(status, out, err, task_id)
        assert (await alice.get(task_id)).state is TaskState.RUNNING

        status, out, err = await _run_until(["tasks", "watch", task_id], env, STEP_RUNNING)
        _assert_detached(status, out, err, task_id)
        assert (await alice.get(task_id)).state is TaskState.RUNNING

        gate.touch()  # only now may the step finish: the task ran on without its watchers
        done = await eventually(
            lambda: alice.get(task_id), lambda t: t.state.final, within=60, interval=0.2
        )
    assert done.state is TaskState.SUCCEEDED, done.error
