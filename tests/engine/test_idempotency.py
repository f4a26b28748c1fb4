"""SubmitTask idempotency keys: the same request gets the first task, a different one is refused.

On SQLite and PostgreSQL, over mTLS, against an agent written against the protos.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import grpc
import pytest
from sqlalchemy import update

from agentmesh._proto.agentmesh.v1 import orchestrator_pb2 as pb
from agentmesh._proto.agentmesh.v1 import orchestrator_pb2_grpc as pb_grpc
from agentmesh.models import Plan, StepRecord, StepSpec, TaskRecord
from agentmesh.orchestrator import Orchestrator
from agentmesh.orchestrator.store import Store
from agentmesh.orchestrator.store.tables import TaskRow
from tests.security.helpers import (
    RawAgent,
    hang,
    orchestrator_stub,
    plan_request,
    refusal,
    struct,
)

ALICE = "spiffe://agentmesh.test/client/alice"


def _request(key: str, value: int = 1, **fields: object) -> pb.SubmitTaskRequest:
    return plan_request(("a", "test.echo", {"value": value}), idempotency_key=key, **fields)


@pytest.fixture
async def alice(
    orchestrator_on_database: Orchestrator, certs: Path
) -> AsyncIterator[pb_grpc.OrchestratorAsyncStub]:
    """Alice's stub to an orchestrator (on either database) with an agent that holds its work."""
    async with (
        RawAgent(certs, "echo-1", hang) as agent,
        orchestrator_stub(orchestrator_on_database, certs) as stub,
    ):
        await agent.register(orchestrator_on_database)
        yield stub


async def _owned(orchestrator: Orchestrator) -> list[str]:
    return [t.id for t in await orchestrator.store.list_tasks(owner=ALICE)]


async def test_the_same_request_with_the_same_key_gets_the_first_task(
    alice: pb_grpc.OrchestratorAsyncStub, orchestrator_on_database: Orchestrator
) -> None:
    first = await alice.SubmitTask(_request("k1"), timeout=20)
    again = await alice.SubmitTask(_request("k1"), timeout=20)
    assert again.task_id == first.task_id
    assert await _owned(orchestrator_on_database) == [first.task_id]


@pytest.mark.parametrize(
    "different",
    [
        _request("k1", value=2),
        _request("k1", priority=3),
        _request("k1", timeout_seconds=60),
        _request("k1", labels={"team": "b"}),
        pb.SubmitTaskRequest(
            workflow="document-brief", input=struct({"text": "x"}), idempotency_key="k1"
        ),
    ],
    ids=["input", "priority", "timeout", "labels", "workflow"],
)
async def test_a_different_request_with_a_used_key_is_refused(
    alice: pb_grpc.OrchestratorAsyncStub,
    orchestrator_on_database: Orchestrator,
    different: pb.SubmitTaskRequest,
) -> None:
    first = await alice.SubmitTask(_request("k1"), timeout=20)
    error = await refusal(alice.SubmitTask(different, timeout=20))
    assert error.code() is grpc.StatusCode.ALREADY_EXISTS, error.details()
    assert (error.details() or "").startswith("idempotency_key: "), error.details()
    assert await _owned(orchestrator_on_database) == [first.task_id]


async def test_of_two_concurrent_different_requests_with_one_key_one_wins_the_other_is_refused(
    alice: pb_grpc.OrchestratorAsyncStub, orchestrator_on_database: Orchestrator
) -> None:
    rounds = 8
    for number in range(rounds):
        key = f"race-{number}"
        answers = await asyncio.gather(
            alice.SubmitTask(_request(key, value=1), timeout=20),
            alice.SubmitTask(_request(key, value=2), timeout=20),
            return_exceptions=True,
        )
        won = [a for a in answers if isinstance(a, pb.SubmitTaskResponse)]
        lost = [a for a in answers if isinstance(a, grpc.aio.AioRpcError)]
        assert len(won) == 1, answers
        assert [e.code() for e in lost] == [grpc.StatusCode.ALREADY_EXISTS], answers
    assert len(await _owned(orchestrator_on_database)) == rounds


async def test_a_task_stored_before_fingerprints_keeps_answering_its_key(
    database: dict[str, str],
) -> None:
    # Tasks written before migration 0003 have no fingerprint: any request with their key
    # gets them, as before.
    async with Store(database["database_url"], schema=database.get("database_schema", "")) as s:
        now = datetime.now(UTC)
        plan = Plan(steps=(StepSpec(id="a", capability="echo"),))
        task = TaskRecord(
            id="t1",
            owner=ALICE,
            plan=plan,
            steps={"a": StepRecord(spec=plan.steps[0])},
            created_at=now,
            updated_at=now,
        )
        await s.create_task(task, "old-key", fingerprint="f" * 64)
        async with s._transaction() as session:
            await session.execute(update(TaskRow).values(request_fingerprint=None))
        again = await s.create_task(
            task.model_copy(update={"id": "t2"}), "old-key", fingerprint="0" * 64
        )
    assert again.id == "t1"
