"""A step waiting for a person's answer survives ``kill -9`` of its orchestrator: the one that
comes back (on the same database), or the replica that takes the task over, waits on and takes
the answer given after it, to whichever replica it is given."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from agentmesh.client import Client
from agentmesh.errors import DeadlineExceeded, Unavailable
from agentmesh.models import StepState, TaskRecord, TaskState
from tests.conftest import REDIS_URL
from tests.engine.test_human_input import BOB, approval
from tests.support.events import step_states, watch_all
from tests.support.orchestrator import OrchestratorProcess
from tests.support.waiting import eventually

#: Starts real processes of its own (see PROCESS_FIXTURES in tests/conftest.py).
pytestmark = pytest.mark.slow


async def _task(alice: Client, task_id: str) -> TaskRecord | None:
    try:
        return await alice.get(task_id)
    except (Unavailable, DeadlineExceeded):
        return None  # the orchestrator is away


async def test_a_wait_for_input_survives_kill_9_of_the_orchestrator(
    certs: Path, tmp_path: Path
) -> None:
    database = {"database_url": f"sqlite+aiosqlite:///{tmp_path / 'mesh.db'}"}
    async with OrchestratorProcess(
        certs, tmp_path / "orchestrator", database, lease_seconds="3"
    ) as orchestrator:
        async with Client(orchestrator.address, certs, "alice") as alice:
            task_id = await alice.submit(plan=approval())
            await eventually(
                lambda: _task(alice, task_id),
                lambda t: t is not None and t.steps["approve"].state is StepState.INPUT_REQUIRED,
                within=30,
            )
        orchestrator.kill()
        await orchestrator.start()
        async with (
            Client(orchestrator.address, certs, "alice") as alice,
            Client(orchestrator.address, certs, "bob") as bob,
        ):
            # The restarted orchestrator has the task waiting still; the answer is taken
            # whether its run has resumed yet or not (it is kept until then).
            still = await alice.get(task_id)
            await bob.provide_input(task_id, "approve", {"approved": True})
            task = await eventually(
                lambda: _task(alice, task_id),
                lambda t: t is not None and t.state.final,
                within=40,
                interval=0.2,
            )
            events = await watch_all(alice, task_id)

    assert still.steps["approve"].state is StepState.INPUT_REQUIRED
    assert task is not None
    assert task.state is TaskState.SUCCEEDED, task.error
    assert task.steps["approve"].output == {"approved": True}
    # Asked once: the resumed run waited on instead of asking again.
    assert step_states(events, "approve") == [StepState.INPUT_REQUIRED, StepState.SUCCEEDED]
    (answered,) = [e for e in events if e.step_id == "approve" and e.state == "succeeded"]
    assert answered.reason == f"answered by {BOB}"


@pytest.fixture
async def replicas(
    certs: Path, tmp_path: Path, postgres_database: dict[str, str]
) -> AsyncIterator[tuple[OrchestratorProcess, OrchestratorProcess]]:
    """Two replicas on one PostgreSQL schema and one Redis, with 2-second task leases."""
    common = {"redis_url": REDIS_URL, "lease_seconds": "2"}
    a = OrchestratorProcess(certs, tmp_path / "a", postgres_database, replica_id="a", **common)
    b = OrchestratorProcess(certs, tmp_path / "b", postgres_database, replica_id="b", **common)
    async with a, b:
        yield a, b


async def test_an_answer_given_to_another_replica_or_after_a_takeover_is_taken(
    certs: Path, replicas: tuple[OrchestratorProcess, OrchestratorProcess]
) -> None:
    a, b = replicas
    async with (
        Client(a.address, certs, "alice") as alice_a,
        Client(b.address, certs, "alice") as alice_b,
        Client(b.address, certs, "bob") as bob_b,
    ):
        elsewhere = await alice_a.submit(plan=approval())
        taken_over = await alice_a.submit(plan=approval())
        for task_id in (elsewhere, taken_over):
            await eventually(
                lambda task_id=task_id: _task(alice_b, task_id),
                lambda t: t is not None and t.steps["approve"].state is StepState.INPUT_REQUIRED,
                within=30,
            )
        # Replica a runs both; b takes the first answer and a's run hears of it.
        await bob_b.provide_input(elsewhere, "approve", {"approved": True})
        first = await eventually(
            lambda: _task(alice_b, elsewhere), lambda t: t is not None and t.state.final, within=30
        )
        # a dies; b takes the second task over once a's lease runs out, and waits on.
        a.kill()
        await bob_b.provide_input(taken_over, "approve", {"approved": False})
        second = await eventually(
            lambda: _task(alice_b, taken_over),
            lambda t: t is not None and t.state.final,
            within=40,
            interval=0.2,
        )
        events = await watch_all(alice_b, taken_over)

    assert first is not None
    assert first.state is TaskState.SUCCEEDED, first.error
    assert first.steps["approve"].output == {"approved": True}
    assert second is not None
    assert second.state is TaskState.SUCCEEDED, second.error
    assert second.steps["approve"].output == {"approved": False}
    assert step_states(events, "approve") == [StepState.INPUT_REQUIRED, StepState.SUCCEEDED]
