"""A Python client of the Orchestrator service: submit, watch, inspect, cancel.

Every method returns domain objects (:mod:`agentmesh.models`) and raises
:class:`~agentmesh.errors.AgentMeshError` subclasses; protobuf and gRPC errors stay inside.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterable, Iterator
from pathlib import Path
from types import TracebackType

import grpc
from google.protobuf import json_format

from agentmesh._proto.agentmesh.v1 import orchestrator_pb2 as pb
from agentmesh._proto.agentmesh.v1 import orchestrator_pb2_grpc as pb_grpc
from agentmesh.errors import FIELD_METADATA_KEY, ValidationError, error_from_status
from agentmesh.models import (
    JSON,
    AgentOverride,
    AgentStatus,
    Budget,
    ParentStep,
    Plan,
    TaskEvent,
    TaskPage,
    TaskRecord,
    TaskState,
    WorkflowInfo,
)
from agentmesh.security import CertFiles, IdentityKind, channel_credentials
from agentmesh.tracing import metadata as trace_metadata
from agentmesh.wire.tasks import (
    event_from_proto,
    override_from_proto,
    page_from_proto,
    plan_to_proto,
    status_from_proto,
    task_from_proto,
    task_state_to_proto,
)
from agentmesh.wire.usage import budget_to_proto
from agentmesh.wire.workflows import workflow_from_proto


def _field_of(error: grpc.aio.AioRpcError) -> str | None:
    for key, value in error.trailing_metadata() or ():
        if key == FIELD_METADATA_KEY:
            return value.decode(errors="replace") if isinstance(value, bytes) else str(value)
    return None


@contextlib.contextmanager
def _domain_errors() -> Iterator[None]:
    """Turn a failed call into the AgentMeshError its status stands for."""
    try:
        yield
    except grpc.aio.AioRpcError as exc:
        raise error_from_status(exc.code(), exc.details() or "", field=_field_of(exc)) from exc


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
        self._stub: pb_grpc.OrchestratorAsyncStub
        #: False once the orchestrator said it does not serve WatchTaskBatches.
        self._batched_watch = True

    async def __aenter__(self) -> Client:
        self._channel = grpc.aio.secure_channel(self.address, channel_credentials(self._files))
        self._stub = pb_grpc.OrchestratorStub(self._channel)
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
        budget: Budget | None = None,
        parent: ParentStep | None = None,
    ) -> str:
        """Submit a task given as a plan, a catalog workflow name or a goal; return its id.

        With ``budget`` the task stops (failing with ``budget_exceeded``) once its steps have
        used that much.
        """
        request = pb.SubmitTaskRequest(
            priority=priority, timeout_seconds=timeout_seconds, idempotency_key=idempotency_key
        )
        if budget is not None:
            budget_to_proto(budget, request.budget)
        if parent is not None:  # a sub-task, submitted by the agent running that step
            request.parent.task_id = parent.task_id
            request.parent.step_id = parent.step_id
        if plan is not None:
            request.plan.CopyFrom(plan_to_proto(plan))
        elif workflow:
            request.workflow = workflow
        elif goal:
            request.goal = goal
        request.input.update(input or {})
        with _domain_errors():
            # The current span, if any, parents the task's spans in the orchestrator.
            response = await self._stub.SubmitTask(request, timeout=30, metadata=trace_metadata())
        return response.task_id

    async def get(self, task_id: str) -> TaskRecord:
        """The task as the orchestrator sees it now."""
        with _domain_errors():
            task = await self._stub.GetTask(pb.GetTaskRequest(task_id=task_id), timeout=10)
        return task_from_proto(task)

    async def cancel(self, task_id: str, reason: str = "") -> TaskRecord:
        """Cancel a task; returns it once cancellation (and rollback) finished."""
        with _domain_errors():
            task = await self._stub.CancelTask(pb.CancelTaskRequest(task_id=task_id, reason=reason))
        return task_from_proto(task)

    async def provide_input(self, task_id: str, step_id: str, value: JSON) -> TaskRecord:
        """Answer a step of kind ``input`` with ``value``; the task as it is then (without
        outputs). ValidationError (field ``value``) when the answer breaks the step's
        schema, PermissionDenied when the caller is not one of its approvers."""
        request = pb.ProvideInputRequest(task_id=task_id, step_id=step_id)
        try:
            json_format.ParseDict(value, request.value)
        except (json_format.ParseError, ValueError, TypeError) as exc:
            raise ValidationError(f"not a JSON value: {exc}", field="value") from None
        with _domain_errors():
            task = await self._stub.ProvideInput(request, timeout=30)
        return task_from_proto(task)

    async def watch(self, task_id: str, *, after: int = 0) -> AsyncIterator[TaskEvent]:
        """The task's events in order, those after sequence ``after``, until its final state.

        Read with WatchTaskBatches, several events to a message; from an orchestrator that
        does not serve it (UNIMPLEMENTED before any event), with WatchTask.
        """
        request = pb.WatchTaskRequest(task_id=task_id, after_sequence=after)
        if self._batched_watch:
            batches = self._stub.WatchTaskBatches(request)
            try:
                with _domain_errors():
                    try:
                        async for batch in batches:
                            for event in batch.events:
                                yield event_from_proto(event)
                        return
                    except grpc.aio.AioRpcError as exc:
                        if exc.code() is not grpc.StatusCode.UNIMPLEMENTED:
                            raise
                self._batched_watch = False  # an older orchestrator: one event a message
            finally:
                batches.cancel()
        call = self._stub.WatchTask(request)
        try:
            with _domain_errors():
                async for message in call:
                    yield event_from_proto(message)
        finally:
            call.cancel()

    async def list_tasks(
        self, *, states: Iterable[TaskState] = (), page_size: int = 0, page_token: str = ""
    ) -> TaskPage:
        """One page of the caller's tasks (every task for an admin), optionally in ``states``."""
        request = pb.ListTasksRequest(
            states=[task_state_to_proto(s) for s in states],
            page_size=page_size,
            page_token=page_token,
        )
        with _domain_errors():
            response = await self._stub.ListTasks(request, timeout=10)
        return page_from_proto(response)

    async def list_agents(self, capability: str = "") -> list[AgentStatus]:
        """The live agents, optionally only those offering ``capability``."""
        with _domain_errors():
            response = await self._stub.ListAgents(
                pb.ListAgentsRequest(capability=capability), timeout=10
            )
        return [status_from_proto(s) for s in response.agents]

    async def drain_agent(self, name: str) -> AgentOverride:
        """Give agent ``name`` no new work (on every replica); its work in flight finishes."""
        with _domain_errors():
            answer = await self._stub.DrainAgent(pb.DrainAgentRequest(name=name), timeout=10)
        return override_from_proto(answer)

    async def resume_agent(self, name: str) -> AgentOverride:
        """Give a drained agent work again."""
        with _domain_errors():
            answer = await self._stub.ResumeAgent(pb.ResumeAgentRequest(name=name), timeout=10)
        return override_from_proto(answer)

    async def set_agent_weight(self, name: str, weight: float) -> AgentOverride:
        """Scale agent ``name``'s share of work (1 is the default; more than 0, at most 100)."""
        request = pb.SetAgentWeightRequest(name=name, weight=weight)
        with _domain_errors():
            answer = await self._stub.SetAgentWeight(request, timeout=10)
        return override_from_proto(answer)

    async def list_workflows(self) -> list[WorkflowInfo]:
        """The workflows of the orchestrator's catalog, by name; submit one with ``workflow=``."""
        with _domain_errors():
            response = await self._stub.ListWorkflows(pb.ListWorkflowsRequest(), timeout=10)
        return [workflow_from_proto(w) for w in response.workflows]
