"""``agentmesh dev`` runs the working example agents and the table-insight workflow offline."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import pytest

from agentmesh.client import Client
from agentmesh.examples import sandbox
from agentmesh.models import Plan, StepSpec, TaskRecord, TaskState
from tests.support.mesh import wait_for_agents
from tests.support.network import free_port
from tests.support.waiting import eventually

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        sandbox.network_namespace_command() is None, reason="no network namespace here"
    ),
]

BIN = Path(sys.executable).parent
SALES = "region,units\nnorth,10\nsouth,4\nnorth,6\neast,3\nsouth,8\n"


async def test_dev_serves_the_table_insight_workflow_with_a_local_model(tmp_path: Path) -> None:
    port = free_port()
    env = {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
        "AGENTMESH_LISTEN": f"127.0.0.1:{port}",
        "AGENTMESH_DEMO_LATENCY": "0",
    }
    for key in (
        "AGENTMESH_CERTS_DIR",
        "AGENTMESH_DATABASE_URL",
        "AGENTMESH_REDIS_URL",
        "AGENTMESH_LLM_BASE_URL",
    ):
        env.pop(key, None)
    certs = tmp_path / "certs"
    with (tmp_path / "dev.log").open("wb") as log:
        dev = await asyncio.create_subprocess_exec(
            *(str(BIN / "agentmesh"), "dev", "--certs-dir", str(certs), "--folder", "var"),
            env=env,
            cwd=tmp_path,
            stdout=log,
            stderr=asyncio.subprocess.STDOUT,
        )
    try:

        async def ready() -> str:
            return (tmp_path / "dev.log").read_text(errors="replace")

        # dev says "ready" once every agent it started has registered.
        def started(text: str) -> bool:
            return "ready:" in text or dev.returncode is not None

        await eventually(ready, started, within=120)
        async with Client(f"localhost:{port}", certs, "cli") as cli:
            await wait_for_agents(cli, "data", "llm", "code-runner", "maths", within=90)
            task_id = await cli.submit(workflow="table-insight", input={"csv": SALES})
            insight = await _finished(cli, task_id)
            maths_id = await cli.submit(
                plan=Plan(
                    steps=(
                        StepSpec(
                            id="solve",
                            capability="math.compute",
                            input={"expression": "x**2 = 2", "operation": "solve"},
                        ),
                    )
                )
            )
            solved = await _finished(cli, maths_id)
    finally:
        dev.send_signal(signal.SIGINT)
        try:
            async with asyncio.timeout(60):
                await dev.wait()
        except TimeoutError:
            dev.kill()
            await dev.wait()
    output = (tmp_path / "dev.log").read_text(errors="replace")

    assert insight.state == TaskState.SUCCEEDED, (insight, output)
    assert "north | ############################## 16" in insight.result["stdout"]
    assert insight.result["content"].startswith("The chart ranks 3 groups")
    assert solved.state == TaskState.SUCCEEDED, solved
    assert solved.result["solve"]["solutions"] == ["-sqrt(2)", "sqrt(2)"]
    assert "local model" in output
    assert dev.returncode == 0


async def _finished(cli: Client, task_id: str) -> TaskRecord:
    async for _ in cli.watch(task_id):
        pass  # the watch ends with the task's final event
    return await cli.get(task_id)
