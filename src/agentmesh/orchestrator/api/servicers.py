"""gRPC servicers: translate protobuf to domain calls and back; no business logic here.

Client calls go to :class:`~agentmesh.orchestrator.api.tasks.TaskService` (the HTTP API's
routes call the same); agent calls check their fields (:mod:`agentmesh.orchestrator.api.validation`)
and ask the :class:`~agentmesh.security.guard.Guard` whether the caller may do it before
anything is looked up, converted or stored, so a refused request changes nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc

from agentmesh import tracing
from agentmesh._proto.agentmesh.v1 import orchestrator_pb2 as pb
from agentmesh._proto.agentmesh.v1 import orchestrator_pb2_grpc as pb_grpc
from agentmesh.errors import FailedPrecondition
from agentmesh.models import TaskRecord
from agentmesh.orchestrator import metrics
from agentmesh.orchestrator.agents.registry import Registry
from agentmesh.orchestrator.api import validation
from agentmesh.orchestrator.api.interceptors import current_caller, current_peer
from agentmesh.orchestrator.api.tasks import TaskService
from agentmesh.orchestrator.api.turns import Turns
from agentmesh.orchestrator.planning import PlanLimits
from agentmesh.security.guard import Guard
from agentmesh.security.policy import Action
from agentmesh.wire import card_from_proto
from agentmesh.wire import tasks as convert
from agentmesh.wire.batches import chunks
from agentmesh.wire.workflows import workflow_to_proto

Context = grpc.aio.ServicerContext[Any, Any]

#: Bytes of a response message besides its tasks (page token, framing), rounded up.
_ENVELOPE = 1024


#: Most events, and bytes, of one WatchTaskBatches message: past a few dozen events a
#: message batching saves little more, and each message is built whole in memory.
WATCH_BATCH = 64
WATCH_BATCH_BYTES = 256 * 1024


def _byte_size(message: pb.TaskEvent) -> int:
    return message.ByteSize()


class OrchestratorServicer(pb_grpc.OrchestratorServicer):
    """The client-facing API: submit, inspect, cancel and watch tasks; list agents and workflows.

    The work is the :class:`~agentmesh.orchestrator.api.tasks.TaskService`'s (shared with
    the HTTP API); what is left here is protobuf and the one-message size limit.
    """

    def __init__(self, tasks: TaskService, max_message_bytes: int = 4 * 1024 * 1024) -> None:
        self._tasks = tasks
        self._max_message_bytes = max_message_bytes

    async def SubmitTask(
        self, request: pb.SubmitTaskRequest, context: Context
    ) -> pb.SubmitTaskResponse:
        # The caller's span (W3C trace context in the metadata) parents the task's.
        with tracing.attached(tracing.metadata_context(context.invocation_metadata())):
            task = await self._tasks.submit(current_caller(), request)
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
        task = await self._tasks.task(current_caller(), request.task_id, Action.GET_TASKS)
        return self._fitting(task, request.omit_outputs)

    async def ListTasks(
        self, request: pb.ListTasksRequest, context: Context
    ) -> pb.ListTasksResponse:
        tasks, offset, size = await self._tasks.list_tasks(current_caller(), request)
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
        task = await self._tasks.cancel(current_caller(), request)
        message = convert.task_to_proto(task)
        if message.ByteSize() > self._max_message_bytes - _ENVELOPE:
            # The cancellation happened: answer with what fits rather than an error.
            message = convert.task_to_proto(task, omit_outputs=True)
        return message

    async def ProvideInput(self, request: pb.ProvideInputRequest, context: Context) -> pb.Task:
        task = await self._tasks.provide_input(current_caller(), request)
        # States and errors only: an approver need not be someone who may read the outputs.
        return convert.task_to_proto(task, omit_outputs=True)

    async def WatchTask(
        self, request: pb.WatchTaskRequest, context: Context
    ) -> AsyncIterator[pb.TaskEvent]:
        # A cursor past the last event is refused (OUT_OF_RANGE), one at the end of a
        # finished task ends at once.
        async for event in await self._tasks.watch(current_caller(), request):
            yield convert.event_to_proto(event)

    async def WatchTaskBatches(
        self, request: pb.WatchTaskRequest, context: Context
    ) -> AsyncIterator[pb.TaskEventBatch]:
        # WatchTask's events, as many to a message as are ready together: each message on a
        # stream costs gRPC about as much as its content (issue 9).
        # A batch's events are converted WATCH_BATCH at a time, each slice then cut by size.
        room = min(self._max_message_bytes - _ENVELOPE, WATCH_BATCH_BYTES)
        async for events in await self._tasks.watch_batches(current_caller(), request):
            for first in range(0, len(events), WATCH_BATCH):
                messages = [convert.event_to_proto(e) for e in events[first : first + WATCH_BATCH]]
                for run in chunks(messages, room, _byte_size):
                    yield pb.TaskEventBatch(events=run)

    async def ListAgents(
        self, request: pb.ListAgentsRequest, context: Context
    ) -> pb.ListAgentsResponse:
        statuses = await self._tasks.agents(current_caller(), request)
        return pb.ListAgentsResponse(agents=[convert.status_to_proto(s) for s in statuses])

    async def ListWorkflows(
        self, request: pb.ListWorkflowsRequest, context: Context
    ) -> pb.ListWorkflowsResponse:
        workflows = self._tasks.workflows(current_caller())
        return pb.ListWorkflowsResponse(workflows=[workflow_to_proto(w) for w in workflows])

    async def DrainAgent(self, request: pb.DrainAgentRequest, context: Context) -> pb.AgentOverride:
        override = await self._tasks.override_agent(current_caller(), request.name, drained=True)
        return convert.override_to_proto(override)

    async def ResumeAgent(
        self, request: pb.ResumeAgentRequest, context: Context
    ) -> pb.AgentOverride:
        override = await self._tasks.override_agent(current_caller(), request.name, drained=False)
        return convert.override_to_proto(override)

    async def SetAgentWeight(
        self, request: pb.SetAgentWeightRequest, context: Context
    ) -> pb.AgentOverride:
        override = await self._tasks.override_agent(
            current_caller(), request.name, weight=request.weight
        )
        return convert.override_to_proto(override)


#: Registrations run at once; more wait their turn. A thousand agents registering together
#: each made slow progress, past their callers' deadlines, and every one abandoned cost a
#: TLS handshake and a Session for nothing: registrations all but stopped for minutes
#: (issue 9). A call waiting its turn costs nothing when its caller gives up.
MAX_REGISTERING = 16


class RegistryServicer(pb_grpc.RegistryServicer):
    """The agent-facing API: register and deregister."""

    def __init__(
        self,
        registry: Registry,
        ping_interval: float,
        guard: Guard,
        limits: PlanLimits | None = None,
        *,
        agent_timeout: float = 3.0,
    ) -> None:
        self._registry = registry
        self._ping_interval = ping_interval
        self._agent_timeout = agent_timeout
        self._guard = guard
        self._limits = limits or PlanLimits()
        self._turns = Turns(MAX_REGISTERING, "registrations", metrics.REGISTRATIONS_WAITING)

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
        guard = self._guard
        async with self._turns.turn(context.time_remaining()):
            await asyncio.to_thread(validation.check_schemas, card)
            await self._registry.register(
                card,
                identity.uri,
                # Asked when needed: a policy file reloaded meanwhile applies.
                may_redefine=lambda name: guard.policy.allows_redefining(identity, name),
            )
            await self._guard.registered(peer)
        return pb.RegisterAgentResponse(
            identity=identity.uri,
            ping_interval_seconds=self._ping_interval,
            agent_timeout_seconds=self._agent_timeout,
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
