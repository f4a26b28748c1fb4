"""A Python client of the Orchestrator service: submit, watch, inspect, cancel."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from types import TracebackType

import grpc

from agentmesh._proto.agentmesh.v1 import orchestrator_pb2 as pb
from agentmesh._proto.agentmesh.v1 import orchestrator_pb2_grpc as pb_grpc
from agentmesh.models import JSON, Plan
from agentmesh.security import CertFiles, IdentityKind, channel_credentials
from agentmesh.wire.tasks import plan_to_proto


class Client:
    """``async with Client(address, certs_dir, name) as client:`` talks mTLS to an orchestrator."""

    def __init__(
        self,
        address: str,
        certs_dir: Path,
        name: str,
        *,
        kind: IdentityKind = IdentityKind.CLIENT,
    ) -> None:
        self.address = address
        self._files = CertFiles.of(certs_dir, kind, name)
        self._channel: grpc.aio.Channel | None = None
        self.stub: pb_grpc.OrchestratorAsyncStub

    async def __aenter__(self) -> Client:
        self._channel = grpc.aio.secure_channel(self.address, channel_credentials(self._files))
        self.stub = pb_grpc.OrchestratorStub(self._channel)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._channel is not None:
            await self._channel.close()

    async def submit(
        self,
        *,
        plan: Plan | None = None,
        workflow: str = "",
        goal: str = "",
        input: dict[str, JSON] | None = None,
        priority: int = 0,
        timeout_seconds: float = 0.0,
        idempotency_key: str = "",
    ) -> str:
        """Submit a task given as a plan, a catalog workflow name or a goal; return its id."""
        request = pb.SubmitTaskRequest(
            priority=priority, timeout_seconds=timeout_seconds, idempotency_key=idempotency_key
        )
        if plan is not None:
            request.plan.CopyFrom(plan_to_proto(plan))
        elif workflow:
            request.workflow = workflow
        elif goal:
            request.goal = goal
        request.input.update(input or {})
        response = await self.stub.SubmitTask(request, timeout=30)
        return response.task_id

    async def get(self, task_id: str) -> pb.Task:
        """The task as the orchestrator sees it now."""
        return await self.stub.GetTask(pb.GetTaskRequest(task_id=task_id), timeout=10)

    async def cancel(self, task_id: str, reason: str = "") -> pb.Task:
        """Cancel a task; returns it once cancellation (and rollback) finished."""
        return await self.stub.CancelTask(pb.CancelTaskRequest(task_id=task_id, reason=reason))

    async def watch(self, task_id: str, after_sequence: int = 0) -> AsyncIterator[pb.TaskEvent]:
        """The task's events in order, from ``after_sequence`` on, until its final state."""
        call = self.stub.WatchTask(
            pb.WatchTaskRequest(task_id=task_id, after_sequence=after_sequence)
        )
        try:
            async for event in call:
                yield event
        finally:
            call.cancel()

    async def agents(self, capability: str = "") -> list[pb.AgentStatus]:
        """The live agents, optionally only those offering ``capability``."""
        response = await self.stub.ListAgents(
            pb.ListAgentsRequest(capability=capability), timeout=10
        )
        return list(response.agents)
