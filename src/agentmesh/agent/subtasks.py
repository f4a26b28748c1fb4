"""Sub-tasks: an agent's handler submits tasks of its own and waits for their results.

The agent talks to an orchestrator as itself (its agent certificate), naming the step it
runs as the parent; the orchestrator checks that this agent runs that step right now, and
the child belongs to the parent task's owner. One channel per agent, opened on first use and
closed with the agent. (The SDK speaks the protocol itself: it uses only the shared
vocabulary, never :mod:`agentmesh.client`.)
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import TracebackType

import grpc

from agentmesh._proto.agentmesh.v1 import orchestrator_pb2 as pb
from agentmesh._proto.agentmesh.v1 import orchestrator_pb2_grpc as pb_grpc
from agentmesh.errors import StepFailed
from agentmesh.models import JSON, Budget, ParentStep, Plan, TaskState
from agentmesh.security import CertFiles, IdentityKind, channel_credentials
from agentmesh.tracing import metadata as trace_metadata
from agentmesh.wire.tasks import plan_to_proto, task_from_proto
from agentmesh.wire.usage import budget_to_proto

#: How long to wait before following a sub-task again after its orchestrator went away.
RECONNECT_SECONDS = 1.0


class SubTasks:
    """Submits sub-tasks to the agent's orchestrators and follows them.

    Each sub-task goes to the replica running its parent if it can: the agent's
    orchestrators are asked in turn, and one that cannot vouch for the parent step yet (it
    runs on another replica, whose news of the step it may not have) refuses with
    PERMISSION_DENIED, so the next is asked. The child then runs beside its parent.
    """

    def __init__(self, orchestrators: list[str], certs_dir: Path, name: str) -> None:
        self._orchestrators = orchestrators
        self._certs_dir = certs_dir
        self._name = name
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._lock = asyncio.Lock()
        #: False once an orchestrator said it does not serve WatchTaskBatches.
        self._batched_watch = True

    async def __aenter__(self) -> SubTasks:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        channels, self._channels = self._channels, {}
        for channel in channels.values():
            await channel.close()

    async def _stub(self, address: str) -> pb_grpc.OrchestratorAsyncStub:
        async with self._lock:
            channel = self._channels.get(address)
            if channel is None:
                files = CertFiles.of(self._certs_dir, IdentityKind.AGENT, self._name)
                channel = grpc.aio.secure_channel(address, channel_credentials(files))
                self._channels[address] = channel
            return pb_grpc.OrchestratorStub(channel)

    async def _submit(
        self, request: pb.SubmitTaskRequest
    ) -> tuple[str, pb_grpc.OrchestratorAsyncStub]:
        """The child's id and the orchestrator that took it."""
        if not self._orchestrators:
            raise StepFailed(
                "cannot submit a sub-task: the agent knows no orchestrator",
                code="subtask_failed",
                retryable=False,
            )
        refused: grpc.aio.AioRpcError | None = None
        for address in self._orchestrators:
            stub = await self._stub(address)
            try:
                # The handler's span (when traced) parents the child's: one trace for the tree.
                answer = await stub.SubmitTask(request, timeout=30, metadata=trace_metadata())
            except grpc.aio.AioRpcError as exc:
                if exc.code() not in (
                    grpc.StatusCode.PERMISSION_DENIED,
                    grpc.StatusCode.UNAVAILABLE,
                ):
                    raise _failed("cannot submit a sub-task", exc) from None
                refused = refused or exc
                continue
            return answer.task_id, stub
        assert refused is not None
        raise _failed("cannot submit a sub-task", refused)

    async def _follow(self, stub: pb_grpc.OrchestratorAsyncStub, child: str, after: int) -> int:
        """Follow ``child``'s events after ``after`` to its final one; its sequence.

        With WatchTaskBatches, several events to a message; from an orchestrator that does
        not serve it (UNIMPLEMENTED before any event), with WatchTask from then on.
        """
        if self._batched_watch:
            try:
                return await _follow_batches(stub, child, after)
            except _NoBatches:
                self._batched_watch = False
        return await _follow_one_by_one(stub, child, after)

    async def run(
        self,
        parent: ParentStep,
        *,
        key: str,
        plan: Plan | None,
        workflow: str,
        goal: str,
        input: dict[str, JSON] | None,
        timeout_seconds: float,
        budget: Budget | None,
    ) -> JSON:
        """Submit a sub-task of ``parent`` and return its result once it succeeded.

        StepFailed (``subtask_failed``, final) when it ends otherwise.
        """
        request = pb.SubmitTaskRequest(
            timeout_seconds=timeout_seconds,
            idempotency_key=key,
            parent=pb.ParentStep(task_id=parent.task_id, step_id=parent.step_id),
        )
        if plan is not None:
            request.plan.CopyFrom(plan_to_proto(plan))
        elif workflow:
            request.workflow = workflow
        elif goal:
            request.goal = goal
        request.input.update(input or {})
        if budget is not None:
            budget_to_proto(budget, request.budget)
        child, stub = await self._submit(request)
        after = 0
        while True:
            try:
                after = await self._follow(stub, child, after)
                break
            except grpc.aio.AioRpcError as exc:
                if exc.code() is not grpc.StatusCode.UNAVAILABLE:
                    raise _failed(f"cannot follow sub-task {child}", exc) from None
                # The orchestrator restarts: follow on from where we were.
                await asyncio.sleep(RECONNECT_SECONDS)
        try:
            task = task_from_proto(await stub.GetTask(pb.GetTaskRequest(task_id=child), timeout=30))
        except grpc.aio.AioRpcError as exc:
            raise _failed(f"cannot read sub-task {child}", exc) from None
        if task.state is TaskState.SUCCEEDED:
            return task.result
        raise StepFailed(
            f"sub-task {child} {task.state.value}: {task.error}",
            code="subtask_failed",
            retryable=False,
        )


async def _follow_batches(stub: pb_grpc.OrchestratorAsyncStub, child: str, after: int) -> int:
    call = stub.WatchTaskBatches(pb.WatchTaskRequest(task_id=child, after_sequence=after))
    received = False
    try:
        async for batch in call:
            received = True
            if batch.events:
                after = batch.events[-1].sequence
        return after
    except grpc.aio.AioRpcError as exc:
        if exc.code() is grpc.StatusCode.UNIMPLEMENTED and not received:
            raise _NoBatches from None
        raise
    finally:
        call.cancel()


async def _follow_one_by_one(stub: pb_grpc.OrchestratorAsyncStub, child: str, after: int) -> int:
    call = stub.WatchTask(pb.WatchTaskRequest(task_id=child, after_sequence=after))
    try:
        async for event in call:
            after = event.sequence
        return after
    finally:
        call.cancel()


class _NoBatches(Exception):
    """The orchestrator does not serve WatchTaskBatches (built from older protos)."""


def _failed(what: str, exc: grpc.aio.AioRpcError) -> StepFailed:
    # Unavailable may pass (the handler's step may be retried); a refusal will not.
    return StepFailed(
        f"{what}: {exc.code().name}: {exc.details()}",
        code="subtask_failed",
        retryable=exc.code() is grpc.StatusCode.UNAVAILABLE,
    )
