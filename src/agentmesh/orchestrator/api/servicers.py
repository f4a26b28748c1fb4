"""gRPC servicers: translate protobuf to domain calls and back; no business logic here.

Each method checks its request's fields (:mod:`agentmesh.orchestrator.api.validation`) and asks the
:class:`~agentmesh.security.guard.Guard` whether the caller may do it before anything is
looked up, converted or stored, so a refused request changes nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc

from agentmesh._proto.agentmesh.v1 import orchestrator_pb2 as pb
from agentmesh._proto.agentmesh.v1 import orchestrator_pb2_grpc as pb_grpc
from agentmesh.errors import FailedPrecondition, NotFound
from agentmesh.models import TaskRecord, WorkflowInfo
from agentmesh.orchestrator.agents.registry import Registry
from agentmesh.orchestrator.api import validation
from agentmesh.orchestrator.api.interceptors import current_caller, current_peer
from agentmesh.orchestrator.engine import Engine
from agentmesh.orchestrator.events import EventBus
from agentmesh.orchestrator.planning import Catalog, PlanLimits
from agentmesh.orchestrator.store import Store
from agentmesh.security.guard import Guard
from agentmesh.security.policy import Action
from agentmesh.wire import card_from_proto
from agentmesh.wire import tasks as convert
from agentmesh.wire.workflows import workflow_to_proto

Context = grpc.aio.ServicerContext[Any, Any]

_DEFAULT_PAGE = 50
#: Bytes of a response message besides its tasks (page token, framing), rounded up.
_ENVELOPE = 1024


class OrchestratorServicer(pb_grpc.OrchestratorServicer):
    """The client-facing API: submit, inspect, cancel and watch tasks; list agents and
    workflows."""

    def __init__(
        self,
        engine: Engine,
        store: Store,
        bus: EventBus,
        registry: Registry,
        guard: Guard,
        limits: PlanLimits | None = None,
        max_message_bytes: int = 4 * 1024 * 1024,
        catalog: Catalog | None = None,
    ) -> None:
        self._engine = engine
        self._catalog = catalog or Catalog()
        self._max_message_bytes = max_message_bytes
        self._store = store
        self._bus = bus
        self._registry = registry
        self._guard = guard
        self._limits = limits or PlanLimits()

    async def _task(self, task_id: str, action: Action) -> TaskRecord:
        """The task, if the caller may do ``action`` with it; else PermissionDenied/NotFound."""
        validation.check_task_id(task_id)
        access = self._guard.task_access(current_caller(), action)
        task = self._engine.live(task_id) or await self._store.get_task(task_id)
        if task is None:
            raise NotFound(f"no task {task_id!r}", field="task_id")
        access.check(task_id, task.owner)
        return task

    async def SubmitTask(
        self, request: pb.SubmitTaskRequest, context: Context
    ) -> pb.SubmitTaskResponse:
        identity = current_caller()
        self._guard.require(identity, Action.SUBMIT_TASKS)
        validation.check_submit(request, self._limits)
        task = await self._engine.submit(convert.request_from_proto(request), identity.uri)
        return pb.SubmitTaskResponse(task_id=task.id)

    def _fitting(self, task: TaskRecord, omit_outputs: bool) -> pb.Task:
        """The task on the wire; FailedPrecondition when it is too big for one message."""
        message = convert.task_to_proto(task, omit_outputs=omit_outputs)
        size = message.ByteSize()
        if size > self._max_message_bytes - _ENVELOPE:
            # Clearer than the transport's RESOURCE_EXHAUSTED, and says what to do.
            raise FailedPrecondition(
                f"task {task.id} takes {size} bytes, more than the {self._max_message_bytes}"
                "-byte message limit: ask without its outputs",
                field="omit_outputs",
            )
        return message

    async def GetTask(self, request: pb.GetTaskRequest, context: Context) -> pb.Task:
        task = await self._task(request.task_id, Action.GET_TASKS)
        return self._fitting(task, request.omit_outputs)

    async def ListTasks(
        self, request: pb.ListTasksRequest, context: Context
    ) -> pb.ListTasksResponse:
        owner = self._guard.task_owner_filter(current_caller())
        offset = validation.check_list_tasks(request)
        size = request.page_size or _DEFAULT_PAGE
        states = [
            convert.task_state_from_proto(s, f"states[{i}]") for i, s in enumerate(request.states)
        ]
        tasks = await self._store.list_tasks(
            owner=owner, states=states, limit=size + 1, offset=offset
        )
        response = pb.ListTasksResponse()
        room = self._max_message_bytes - _ENVELOPE
        for task in tasks[:size]:
            message = convert.task_to_proto(task, omit_outputs=request.omit_outputs)
            room -= message.ByteSize() + 8
            if room < 0 and response.tasks:
                # The page ends before it outgrows one message; the next one starts here.
                response.next_page_token = str(offset + len(response.tasks))
                return response
            if room < 0:
                self._fitting(task, request.omit_outputs)  # a task too big on its own: say so
            response.tasks.append(message)
        if len(tasks) > size:
            response.next_page_token = str(offset + size)
        return response

    async def CancelTask(self, request: pb.CancelTaskRequest, context: Context) -> pb.Task:
        validation.check_cancel(request)
        task = await self._task(request.task_id, Action.CANCEL_TASKS)
        await self._engine.cancel(task.id, request.reason or f"cancelled by {current_caller()}")
        task = await self._task(task.id, Action.CANCEL_TASKS)
        message = convert.task_to_proto(task)
        if message.ByteSize() > self._max_message_bytes - _ENVELOPE:
            # The cancellation happened: answer with what fits rather than an error.
            message = convert.task_to_proto(task, omit_outputs=True)
        return message

    async def WatchTask(
        self, request: pb.WatchTaskRequest, context: Context
    ) -> AsyncIterator[pb.TaskEvent]:
        validation.check_watch(request)
        task = await self._task(request.task_id, Action.WATCH_TASKS)
        # A cursor past the last event is refused (OUT_OF_RANGE) by the bus, one at the end
        # of a finished task ends at once.
        async for event in self._bus.watch(task.id, request.after_sequence):
            yield convert.event_to_proto(event)

    async def ListAgents(
        self, request: pb.ListAgentsRequest, context: Context
    ) -> pb.ListAgentsResponse:
        self._guard.require(current_caller(), Action.LIST_AGENTS)
        validation.check_list_agents(request)
        return pb.ListAgentsResponse(
            agents=[convert.status_to_proto(s) for s in self._registry.statuses(request.capability)]
        )

    async def ListWorkflows(
        self, request: pb.ListWorkflowsRequest, context: Context
    ) -> pb.ListWorkflowsResponse:
        self._guard.require(current_caller(), Action.LIST_WORKFLOWS)
        return pb.ListWorkflowsResponse(
            workflows=[
                workflow_to_proto(
                    WorkflowInfo(
                        name=w.name,
                        description=w.description,
                        input_schema=w.input_schema,
                        plan=w.to_plan(),
                    )
                )
                for w in self._catalog
            ]
        )


class RegistryServicer(pb_grpc.RegistryServicer):
    """The agent-facing API: register and deregister."""

    def __init__(
        self,
        registry: Registry,
        ping_interval: float,
        guard: Guard,
        limits: PlanLimits | None = None,
    ) -> None:
        self._registry = registry
        self._ping_interval = ping_interval
        self._guard = guard
        self._limits = limits or PlanLimits()

    async def RegisterAgent(
        self, request: pb.RegisterAgentRequest, context: Context
    ) -> pb.RegisterAgentResponse:
        peer = current_peer()
        identity = peer.identity
        # Who before what: the caller must be this agent before its card is even read.
        self._guard.check_registrant(identity, request.card.name)
        validation.check_card(request.card, self._limits)
        self._guard.check_capabilities(identity, [c.name for c in request.card.capabilities])
        card = card_from_proto(request.card)
        await asyncio.to_thread(validation.check_schemas, card)
        guard = self._guard
        await self._registry.register(
            card,
            identity.uri,
            # Asked when needed: a policy file reloaded meanwhile applies.
            may_redefine=lambda name: guard.policy.allows_redefining(identity, name),
        )
        await self._guard.registered(peer)
        return pb.RegisterAgentResponse(
            identity=identity.uri, ping_interval_seconds=self._ping_interval
        )

    async def DeregisterAgent(
        self, request: pb.DeregisterAgentRequest, context: Context
    ) -> pb.DeregisterAgentResponse:
        identity = current_caller()
        validation.check_deregister(request)
        self._guard.check_deregistration(identity, request.name)
        await self._registry.deregister(request.name, identity.uri)
        self._guard.deregistered(identity)
        return pb.DeregisterAgentResponse()
