"""gRPC servicers: translate protobuf to domain calls and back; no business logic here."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc

from agentmesh._proto.agentmesh.v1 import orchestrator_pb2 as pb
from agentmesh._proto.agentmesh.v1 import orchestrator_pb2_grpc as pb_grpc
from agentmesh.engine import Engine
from agentmesh.errors import NotFound, PermissionDenied, ValidationError
from agentmesh.events import EventBus
from agentmesh.models import TaskRecord
from agentmesh.registry import Registry
from agentmesh.security import Identity, IdentityKind
from agentmesh.server import convert
from agentmesh.server.interceptors import current_caller
from agentmesh.store import Store
from agentmesh.wire import card_from_proto

Context = grpc.aio.ServicerContext[Any, Any]

_SUBMITTERS = (IdentityKind.CLIENT, IdentityKind.ADMIN)
_MAX_PAGE = 500


def _require(identity: Identity, kinds: tuple[IdentityKind, ...], action: str) -> None:
    if identity.kind not in kinds:
        allowed = ", ".join(k.value for k in kinds)
        raise PermissionDenied(f"{identity} may not {action} (allowed: {allowed})")


def _check_task_id(task_id: str) -> str:
    if not task_id or len(task_id) > 64:
        raise ValidationError("must be a task id as returned by SubmitTask", field="task_id")
    return task_id


class OrchestratorServicer(pb_grpc.OrchestratorServicer):
    """The client-facing API: submit, inspect, cancel and watch tasks; list agents."""

    def __init__(self, engine: Engine, store: Store, bus: EventBus, registry: Registry) -> None:
        self._engine = engine
        self._store = store
        self._bus = bus
        self._registry = registry

    async def _visible_task(self, task_id: str) -> TaskRecord:
        identity = current_caller()
        task = self._engine.live(_check_task_id(task_id)) or await self._store.get_task(task_id)
        # A task someone else owns is reported as absent: its existence is not leaked.
        if task is None or (task.owner != identity.uri and identity.kind is not IdentityKind.ADMIN):
            raise NotFound(f"no task {task_id!r}", field="task_id")
        return task

    async def SubmitTask(
        self, request: pb.SubmitTaskRequest, context: Context
    ) -> pb.SubmitTaskResponse:
        identity = current_caller()
        _require(identity, _SUBMITTERS, "submit tasks")
        task = await self._engine.submit(convert.request_from_proto(request), identity.uri)
        return pb.SubmitTaskResponse(task_id=task.id)

    async def GetTask(self, request: pb.GetTaskRequest, context: Context) -> pb.Task:
        return convert.task_to_proto(await self._visible_task(request.task_id))

    async def ListTasks(
        self, request: pb.ListTasksRequest, context: Context
    ) -> pb.ListTasksResponse:
        identity = current_caller()
        size = min(request.page_size or 50, _MAX_PAGE)
        try:
            offset = int(request.page_token or 0)
        except ValueError:
            raise ValidationError("not a token returned by ListTasks", field="page_token") from None
        states = [
            convert.task_state_from_proto(s, f"states[{i}]") for i, s in enumerate(request.states)
        ]
        owner = None if identity.kind is IdentityKind.ADMIN else identity.uri
        tasks = await self._store.list_tasks(
            owner=owner, states=states, limit=size + 1, offset=offset
        )
        response = pb.ListTasksResponse(tasks=[convert.task_to_proto(t) for t in tasks[:size]])
        if len(tasks) > size:
            response.next_page_token = str(offset + size)
        return response

    async def CancelTask(self, request: pb.CancelTaskRequest, context: Context) -> pb.Task:
        task = await self._visible_task(request.task_id)
        await self._engine.cancel(task.id, request.reason or f"cancelled by {current_caller()}")
        return convert.task_to_proto(await self._visible_task(task.id))

    async def WatchTask(
        self, request: pb.WatchTaskRequest, context: Context
    ) -> AsyncIterator[pb.TaskEvent]:
        task = await self._visible_task(request.task_id)
        if task.state.final and request.after_sequence >= await self._store.last_sequence(task.id):
            return
        async for event in self._bus.watch(task.id, request.after_sequence):
            yield convert.event_to_proto(event)

    async def ListAgents(
        self, request: pb.ListAgentsRequest, context: Context
    ) -> pb.ListAgentsResponse:
        return pb.ListAgentsResponse(
            agents=[convert.status_to_proto(s) for s in self._registry.statuses(request.capability)]
        )


class RegistryServicer(pb_grpc.RegistryServicer):
    """The agent-facing API: register and deregister."""

    def __init__(self, registry: Registry, ping_interval: float) -> None:
        self._registry = registry
        self._ping_interval = ping_interval

    async def RegisterAgent(
        self, request: pb.RegisterAgentRequest, context: Context
    ) -> pb.RegisterAgentResponse:
        identity = current_caller()
        _require(identity, (IdentityKind.AGENT,), "register agents")
        card = card_from_proto(request.card)
        if card.name != identity.name:
            raise PermissionDenied(
                f"{identity} may register only as {identity.name!r}, not {card.name!r}",
                field="card.name",
            )
        if not card.capabilities:
            raise ValidationError(
                "an agent must offer at least one capability", field="card.capabilities"
            )
        await self._registry.register(card, identity.uri)
        return pb.RegisterAgentResponse(
            identity=identity.uri, ping_interval_seconds=self._ping_interval
        )

    async def DeregisterAgent(
        self, request: pb.DeregisterAgentRequest, context: Context
    ) -> pb.DeregisterAgentResponse:
        await self._registry.deregister(request.name, current_caller().uri)
        return pb.DeregisterAgentResponse()
