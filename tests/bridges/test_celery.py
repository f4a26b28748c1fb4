"""The Celery bridge: Celery tasks on a real worker over Redis, offered to a real mesh."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from celery.result import AsyncResult

from agentmesh.agent import AgentServer, AgentSettings
from agentmesh.agent.context import AssignmentContext
from agentmesh.bridges.celery import CELERY_FAILURE, CeleryRunner, celery_task_id
from agentmesh.bridges.celery_file import CeleryBridgeFile, load_bridge_file
from agentmesh.errors import ConfigError
from agentmesh.models import Plan, StepSpec, TaskState
from agentmesh.orchestrator import Orchestrator
from tests.support.agents import FaultyAgent
from tests.support.bridges import bridge_process
from tests.support.celery_app import CeleryWorker
from tests.support.mesh import client, wait_for_agents
from tests.support.waiting import eventually

pytestmark = pytest.mark.slow  # a Celery worker process per test

#: A Redis database of its own: Celery's broadcasts (revokes) reach every worker on one.
CELERY_URL = "redis://127.0.0.1:6379/9"
NUMBER = {"type": "number"}


def bridge_file(queue: str, name: str = "echo-2") -> dict[str, Any]:
    """A bridge file (as data) for the test worker's tasks on ``queue``."""
    anything = {"type": "object"}
    return {
        "name": name,
        "broker": CELERY_URL,
        "poll_seconds": 0.05,
        "tasks": [
            {
                "task": "billing.total",
                "queue": queue,
                "input_schema": {
                    "type": "object",
                    "properties": {"amounts": {"type": "array", "items": NUMBER}},
                    "required": ["amounts"],
                },
                "output_schema": {
                    "type": "object",
                    "properties": {"total": NUMBER},
                    "required": ["total"],
                },
            },
            {"task": "billing.declined", "queue": queue, "input_schema": anything},
            {"task": "billing.flaky", "queue": queue},
            {"task": "billing.wait", "queue": queue},
        ],
    }


@pytest.fixture
def queue() -> str:
    return f"bridge-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def worker(queue: str, tmp_path: Path) -> Iterator[CeleryWorker]:
    running = CeleryWorker(CELERY_URL, queue, tmp_path / "celery-worker.log")
    running.start()
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def runner(queue: str) -> CeleryRunner:
    return CeleryRunner(CeleryBridgeFile.model_validate(bridge_file(queue)))


@pytest.fixture
async def bridge(
    orchestrator: Orchestrator, certs: Path, runner: CeleryRunner, worker: CeleryWorker
) -> AsyncIterator[AgentServer]:
    """The bridge served in this process (its Celery app talks to the worker's Redis)."""
    settings = AgentSettings(
        certs_dir=certs, name="echo-2", orchestrators=[f"localhost:{orchestrator.port}"]
    )
    async with AgentServer(runner.agent(), settings) as server:
        yield server


def one_step(capability: str, data: dict[str, Any], attempts: int = 1) -> Plan:
    step = StepSpec.model_validate(
        {
            "id": "celery",
            "capability": capability,
            "input": data,
            "retry": {"max_attempts": attempts},
        }
    )
    return Plan(steps=(step,))


async def test_a_task_combines_a_celery_step_run_by_the_bridge_command_with_a_python_step(
    orchestrator: Orchestrator, certs: Path, worker: CeleryWorker, queue: str, tmp_path: Path
) -> None:
    (tmp_path / "bridge.yaml").write_text(yaml.safe_dump(bridge_file(queue)))
    file = str(tmp_path / "bridge.yaml")
    process = bridge_process(orchestrator, certs, tmp_path, "celery-bridge", file)
    gate = tmp_path / "gate"
    python = AgentSettings(
        certs_dir=certs, name="echo-1", orchestrators=[f"localhost:{orchestrator.port}"]
    )
    plan = Plan.model_validate(
        {
            "steps": [
                {"id": "greet", "capability": "test.echo", "input": {"value": "${input.who}"}},
                {
                    "id": "bill",
                    "capability": "billing.total",
                    "input": {"amounts": "${input.amounts}", "gate": "${input.gate}"},
                },
            ],
            "aggregate": {"strategy": "merge"},
        }
    )
    try:
        async with AgentServer(FaultyAgent(), python), client(orchestrator, certs) as alice:
            await wait_for_agents(alice, "echo-1", "echo-2", within=60)
            data = {"who": "alice", "amounts": [1, 2, 3.5], "gate": str(gate)}
            task_id = await alice.submit(plan=plan, input=data)
            events = []
            async for event in alice.watch(task_id):
                events.append(event)
                if event.message == "adding up":  # the Celery task's own PROGRESS state
                    await asyncio.to_thread(gate.touch)  # ...which waits for this to finish
            task = await alice.get(task_id)
    finally:
        process.terminate()
        process.wait(30)

    assert task.state is TaskState.SUCCEEDED, (task.error, (tmp_path / "bridge.log").read_text())
    assert task.steps["bill"].agent == "echo-2"
    assert task.steps["greet"].agent == "echo-1"
    assert task.result == {"value": "alice", "agent": "", "total": 6.5, "currency": "EUR"}
    assert [e.step_id for e in events if e.message == "adding up"] == ["bill"]
    assert process.returncode == 0  # drained and deregistered on SIGTERM


async def test_a_celery_failure_fails_the_step_once_with_the_exception(
    orchestrator: Orchestrator, certs: Path, bridge: AgentServer
) -> None:
    async with client(orchestrator, certs) as alice:
        await wait_for_agents(alice, "echo-2", within=60)
        task_id = await alice.submit(plan=one_step("billing.declined", {"card": "4242"}, 3))
        _ = [e async for e in alice.watch(task_id)]
        task = await alice.get(task_id)

    assert task.state is TaskState.FAILED
    step = task.steps["celery"]
    assert CELERY_FAILURE in step.error
    assert "ValueError: card 4242 declined" in step.error
    assert step.attempts == 1  # Celery's FAILURE is final: not retried on top


async def test_celerys_own_retries_run_inside_one_mesh_attempt(
    orchestrator: Orchestrator, certs: Path, bridge: AgentServer, tmp_path: Path
) -> None:
    marker = tmp_path / "flaky-count"
    async with client(orchestrator, certs) as alice:
        await wait_for_agents(alice, "echo-2", within=60)
        data = {"marker": str(marker), "failures": 2}
        task_id = await alice.submit(plan=one_step("billing.flaky", data))
        _ = [e async for e in alice.watch(task_id)]
        task = await alice.get(task_id)

    assert task.state is TaskState.SUCCEEDED, task.error
    assert task.steps["celery"].output == {"attempts": 3}
    assert task.steps["celery"].attempts == 1


async def test_a_cancelled_step_revokes_its_celery_task(
    orchestrator: Orchestrator,
    certs: Path,
    bridge: AgentServer,
    runner: CeleryRunner,
    tmp_path: Path,
) -> None:
    journal, gate = tmp_path / "journal", tmp_path / "gate"
    async with client(orchestrator, certs) as alice:
        await wait_for_agents(alice, "echo-2", within=60)
        data = {"gate": str(gate), "journal": str(journal)}
        task_id = await alice.submit(plan=one_step("billing.wait", data))
        started = await eventually(lambda: _read(journal), lambda text: "start" in text, within=60)
        celery_id = started.split()[1]
        await alice.cancel(task_id, reason="no longer needed")
        task = await alice.get(task_id)
        state = await eventually(
            lambda: asyncio.to_thread(lambda: AsyncResult(celery_id, app=runner.app).state),
            lambda s: s == "REVOKED",
            within=60,
        )
    gate.touch()

    assert task.state is TaskState.CANCELLED
    assert state == "REVOKED"


async def test_the_same_work_sent_by_two_bridges_runs_once_on_celery(
    runner: CeleryRunner, worker: CeleryWorker, queue: str, tmp_path: Path
) -> None:
    # A bridge restarted while its task ran gets the assignment again (same idempotency
    # key): it must follow the task already sent, not send it twice.
    other = CeleryRunner(CeleryBridgeFile.model_validate(bridge_file(queue)))
    marker = tmp_path / "count"
    spec = runner.spec.tasks[2]  # billing.flaky
    data = {"marker": str(marker), "failures": 0}
    key = f"key-{uuid.uuid4().hex}"  # results outlive a test run in Redis: a key of its own
    first = context(key, "assignment-1")
    again = context(key, "assignment-2")

    outputs = [
        await runner.run(spec, data, first),
        await other.run(spec, data, again),
    ]

    assert outputs == [{"attempts": 1}, {"attempts": 1}]
    assert marker.read_text() == "1"
    assert celery_task_id(first) == celery_task_id(again)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"broker": ""}, "broker"),
        ({"tasks": []}, "tasks"),
        (
            {"tasks": [{"task": "Billing Total"}]},
            "tasks[0]: Value error, capability 'Billing Total'",
        ),
        ({"tasks": [{"task": "a.b", "input_schema": {"type": 5}}]}, "tasks[0].input_schema"),
        ({"tasks": [{"task": "a.b"}, {"task": "x", "capability": "a.b"}]}, "offered twice"),
        ({"max_concurrency": 0}, "max_concurrency"),
        ({"colour": "blue"}, "colour"),
    ],
)
def test_a_wrong_bridge_file_is_refused_naming_its_field(
    tmp_path: Path, change: dict[str, Any], message: str
) -> None:
    path = tmp_path / "bridge.json"
    path.write_text(json.dumps({**bridge_file("q"), **change}))

    with pytest.raises(ConfigError) as caught:
        load_bridge_file(path)

    assert message in str(caught.value)
    assert str(path) in str(caught.value)


def context(key: str, assignment_id: str) -> AssignmentContext:
    """The context a handler gets for an assignment (what the SDK's executor builds)."""
    return AssignmentContext(
        assignment_id=assignment_id,
        task_id="t",
        step_id="s",
        attempt=1,
        idempotency_key=key,
        compensation=False,
        deadline=None,
        _report=lambda fraction, message: None,
    )


async def _read(path: Path) -> str:
    return await asyncio.to_thread(lambda: path.read_text() if path.exists() else "")
