"""A burst of calls beyond gRPC's default backlog is answered, every call with its own status.

gRPC core keeps calls that arrived before the server asked for them in a backlog, and by
default cancels those beyond 1,000 (status CANCELLED, no reason). The orchestrator's event
loop asks for one call at a time, so a burst of submissions while it is busy filled that
backlog: found as SubmitTask CANCELLED with 1,200 tasks submitted at once.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from pathlib import Path

import grpc

from agentmesh._proto.agentmesh.v1 import orchestrator_pb2 as pb
from agentmesh.orchestrator import Orchestrator
from tests.security.helpers import orchestrator_stub

BURST = 3000


async def test_a_burst_of_calls_far_past_grpcs_default_backlog_gets_its_answers(
    orchestrator: Orchestrator, certs: Path
) -> None:
    async with orchestrator_stub(orchestrator, certs) as stub:
        await stub.ListAgents(pb.ListAgentsRequest(), timeout=30)  # connected first

        async def unknown_task() -> str:
            try:
                await stub.GetTask(pb.GetTaskRequest(task_id=str(uuid.uuid4())), timeout=120)
            except grpc.aio.AioRpcError as exc:
                return exc.code().name
            return "OK"

        answers = Counter(await asyncio.gather(*(unknown_task() for _ in range(BURST))))

    assert answers == {"NOT_FOUND": BURST}
