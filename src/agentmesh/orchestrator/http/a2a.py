"""A2A in: the mesh as an A2A agent (protocol 1.0, a2a-sdk), served beside the HTTP API.

- ``GET /.well-known/agent-card.json`` (public, as A2A clients expect): the mesh's Agent Card.
  Its skills are the catalog's workflows (``workflow:<name>``) and the capabilities that
  registered agents offer (``capability:<name>``), and ``goal`` for a task the planner
  decomposes; its security schemes are mTLS (a mesh client certificate) and bearer tokens.
- ``POST /a2a/`` (JSON-RPC): SendMessage, SendStreamingMessage, GetTask, ListTasks,
  CancelTask and SubscribeToTask, through the same :class:`TaskService` (checks, identities,
  policy) as the gRPC and HTTP doors. Push notifications are not offered.

A message becomes a task: its ``metadata.skill`` names the skill; its data part is the input
(a workflow's input, or a capability's step input); plain text with the ``goal`` skill (or
no skill at all) becomes a goal to plan. The message id is the task's idempotency key, so a
message re-sent after a lost answer finds its task instead of starting another.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
from collections.abc import AsyncGenerator, Iterator
from typing import Any

from a2a.helpers.proto_helpers import get_data_parts, get_text_parts, new_data_part
from a2a.server.context import ServerCallContext
from a2a.server.events.event_queue import Event
from a2a.server.request_handlers import RequestHandler
from a2a.server.request_handlers.response_helpers import agent_card_to_dict
from a2a.server.routes import DefaultServerCallContextBuilder, create_jsonrpc_routes
from a2a.types.a2a_pb2 import (
    AgentCapabilities,
    AgentCard,
    AgentInterface,
    AgentSkill,
    Artifact,
    CancelTaskRequest,
    GetTaskRequest,
    HTTPAuthSecurityScheme,
    ListTasksRequest,
    ListTasksResponse,
    Message,
    MutualTlsSecurityScheme,
    Part,
    Role,
    SecurityRequirement,
    SecurityScheme,
    SendMessageRequest,
    StringList,
    SubscribeToTaskRequest,
    Task,
    TaskState,
    TaskStatus,
    TaskStatusUpdateEvent,
)
from a2a.utils.errors import (
    InvalidParamsError,
    InvalidRequestError,
    PushNotificationNotSupportedError,
    TaskNotFoundError,
    UnsupportedOperationError,
)
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.applications import Starlette
from starlette.requests import HTTPConnection

from agentmesh._proto.agentmesh.v1 import orchestrator_pb2 as pb
from agentmesh.errors import AgentMeshError, NotFound, PermissionDenied, ValidationError
from agentmesh.models import EventKind, StepRecord, StepState, TaskEvent, TaskRecord
from agentmesh.models import TaskState as MeshState
from agentmesh.orchestrator.api.tasks import TaskService
from agentmesh.orchestrator.http.auth import Authenticator
from agentmesh.orchestrator.http.errors import error_response
from agentmesh.security import Identity, Peer
from agentmesh.security.policy import Action
from agentmesh.wire.tasks import task_state_to_proto, value_to_proto

#: Where the JSON-RPC endpoint is mounted.
A2A_PATH = "/a2a"

_STATES: dict[MeshState, int] = {
    MeshState.PENDING: TaskState.TASK_STATE_SUBMITTED,
    MeshState.RUNNING: TaskState.TASK_STATE_WORKING,
    MeshState.COMPENSATING: TaskState.TASK_STATE_WORKING,
    MeshState.SUCCEEDED: TaskState.TASK_STATE_COMPLETED,
    MeshState.FAILED: TaskState.TASK_STATE_FAILED,
    MeshState.CANCELLED: TaskState.TASK_STATE_CANCELED,
    MeshState.ROLLED_BACK: TaskState.TASK_STATE_FAILED,
    MeshState.ROLLBACK_FAILED: TaskState.TASK_STATE_FAILED,
}


def a2a_state(state: MeshState) -> int:
    """The A2A task state of a mesh task state."""
    return _STATES[state]


def _mesh_states(state: int) -> list[MeshState]:
    return [mesh for mesh, theirs in _STATES.items() if theirs == state]


@contextlib.contextmanager
def _as_a2a_errors() -> Iterator[None]:
    """Our errors as the A2A errors their JSON-RPC clients understand."""
    try:
        yield
    except NotFound as exc:
        raise TaskNotFoundError(str(exc)) from exc
    except ValidationError as exc:
        raise InvalidParamsError(str(exc)) from exc  # "field: reason"
    except PermissionDenied as exc:
        raise InvalidRequestError(f"permission denied: {exc}") from exc
    except AgentMeshError as exc:
        raise InvalidRequestError(f"{exc.code.name}: {exc}") from exc


def _caller(context: ServerCallContext) -> Peer:
    peer: Peer = context.state["peer"]
    return peer


def _asking(record: TaskRecord) -> StepRecord | None:
    """The step of a live task that waits for a person's answer, if one does."""
    if record.state.final:
        return None
    for step in record.steps.values():
        if step.state is StepState.INPUT_REQUIRED:
            return step
    return None


def task_of(record: TaskRecord) -> Task:
    """A mesh task as an A2A task: its state, reason and (when done) its result. A task with
    a step of kind ``input`` waiting is INPUT_REQUIRED, the step's prompt its message."""
    task = Task(id=record.id, context_id=_context_id(record))
    asking = _asking(record)
    if asking is not None:
        task.status.CopyFrom(_input_required(asking.spec.id, _prompt(asking)))
    else:
        task.status.CopyFrom(_status(record.state, record.error))
    task.status.timestamp.FromDatetime(record.updated_at)
    if record.state is MeshState.SUCCEEDED and record.result is not None:
        task.artifacts.append(_result(record))
    return task


def _context_id(record: TaskRecord) -> str:
    """The A2A context the task belongs to: the one its first message named, else its own."""
    return str(record.labels.get("a2a_context_id") or record.id)


def _status(state: MeshState, reason: str = "") -> TaskStatus:
    status = TaskStatus(state=a2a_state(state))  # type: ignore[arg-type]
    if reason:
        status.message.CopyFrom(_agent_text(reason))
    return status


def _prompt(step: StepRecord) -> str:
    return step.spec.human_input.prompt if step.spec.human_input is not None else ""


def _input_required(step_id: str, prompt: str) -> TaskStatus:
    status = TaskStatus(state=TaskState.TASK_STATE_INPUT_REQUIRED)
    status.message.CopyFrom(_agent_text(prompt))
    # Which step asks: an answer may name it (metadata.step) when several could.
    status.message.metadata.update({"step": step_id})
    return status


def _agent_text(text: str) -> Message:
    return Message(message_id="", role=Role.ROLE_AGENT, parts=[Part(text=text)])


def _result(record: TaskRecord) -> Artifact:
    return Artifact(artifact_id="result", name="result", parts=[new_data_part(record.result)])


def _event_text(event: TaskEvent) -> str:
    if event.kind is EventKind.STEP_PROGRESS:
        return f"{event.step_id}: {event.message}" if event.message else ""
    if event.kind is EventKind.STEP_STATE:
        why = f" ({event.reason})" if event.reason else ""
        return f"{event.step_id} {event.state}{why}"
    return event.reason


class MeshRequestHandler(RequestHandler):
    """A2A requests answered by the mesh's :class:`TaskService`."""

    def __init__(self, tasks: TaskService) -> None:
        self._tasks = tasks

    def submit_request(self, message: Message) -> pb.SubmitTaskRequest:
        """The SubmitTask request an A2A message stands for."""
        skill = str(message.metadata["skill"]) if "skill" in message.metadata else ""
        data = get_data_parts(list(message.parts))
        text = "\n".join(get_text_parts(list(message.parts))).strip()
        if len(data) > 1 or (data and not isinstance(data[0], dict)):
            raise ValidationError(
                "give the input as one data part holding an object", field="parts"
            )
        payload: dict[str, Any] = data[0] if data else {}
        request = pb.SubmitTaskRequest(idempotency_key=message.message_id)
        kind, _, name = skill.partition(":")
        if kind == "workflow" and name:
            request.workflow = name
            request.input.update(payload)
        elif kind == "capability" and name:
            step = request.plan.steps.add(id="a2a", capability=name)
            step.input.update(payload | ({"text": text} if text and "text" not in payload else {}))
            # The step's own output is the answer, not a map of one step id to it.
            request.plan.aggregate.update({"strategy": "pick", "step": "a2a"})
        elif skill in ("", "goal"):
            if not text:
                raise ValidationError(
                    "name a skill in metadata.skill (workflow:NAME or capability:NAME), "
                    "or send a text part as the goal",
                    field="message.metadata.skill",
                )
            request.goal = text
            request.input.update(payload)
        else:
            raise ValidationError(
                f"unknown skill {skill!r}: use workflow:NAME, capability:NAME or goal",
                field="message.metadata.skill",
            )
        if message.context_id:
            request.labels["a2a_context_id"] = message.context_id
        return request

    async def _submit(
        self, params: SendMessageRequest, context: ServerCallContext
    ) -> tuple[TaskRecord, int]:
        """A new task for the message, or (a message naming its task) the answer to the
        task's waiting input step; with the sequence to follow its events after (0 for a
        new task)."""
        caller = _caller(context).identity
        message = params.message
        with _as_a2a_errors():
            if message.task_id:
                return await self._answer(caller, message)
            return await self._tasks.submit(caller, self.submit_request(message)), 0

    async def _answer(self, caller: Identity, message: Message) -> tuple[TaskRecord, int]:
        """ProvideInput for the task's step that asks: its data part, else its text; with
        the task's newest event before the answer, which this turn's updates follow (the
        caller saw the question, and what came before it, in the turn that asked)."""
        task = await self._tasks.task(caller, message.task_id, Action.GET_TASKS)
        asking = _asking(task)
        named = str(message.metadata["step"]) if "step" in message.metadata else ""
        step_id = named or (asking.spec.id if asking is not None else "")
        if not step_id:
            raise ValidationError(
                "the task waits for no answer: send a new message (without task_id)",
                field="message.task_id",
            )
        data = get_data_parts(list(message.parts))
        text = "\n".join(get_text_parts(list(message.parts)))
        request = pb.ProvideInputRequest(task_id=task.id, step_id=step_id)
        value_to_proto(data[0] if data else text, request.value)
        seen = await self._tasks.last_sequence(caller, task.id)
        return await self._tasks.provide_input(caller, request), seen

    async def on_message_send(
        self, params: SendMessageRequest, context: ServerCallContext
    ) -> Task | Message:
        record, seen = await self._submit(params, context)
        if params.configuration.return_immediately:
            return task_of(record)
        # Blocking: until the task is final, or a step asks a person (this turn's end).
        async for _ in self._follow(record, context, stop_at_input=True, after_sequence=seen):
            pass
        return await self._task(record.id, context)

    async def on_message_send_stream(
        self, params: SendMessageRequest, context: ServerCallContext
    ) -> AsyncGenerator[Event, None]:
        record, seen = await self._submit(params, context)
        yield task_of(record)
        # Until the task is final, or a step asks a person: A2A ends the turn (and the
        # stream) there; the answer comes as a message naming the task.
        follow = self._follow(record, context, stop_at_input=True, after_sequence=seen)
        async for event in follow:
            yield event

    async def on_subscribe_to_task(
        self, params: SubscribeToTaskRequest, context: ServerCallContext
    ) -> AsyncGenerator[Event, None]:
        record = await self._record(params.id, context, Action.WATCH_TASKS)
        yield task_of(record)
        if not record.state.final:
            async for event in self._follow(record, context):
                yield event

    async def _follow(
        self,
        record: TaskRecord,
        context: ServerCallContext,
        *,
        stop_at_input: bool = False,
        after_sequence: int = 0,
    ) -> AsyncGenerator[Event, None]:
        """Status updates from the task's events after ``after_sequence`` until it is final
        (then its result); with ``stop_at_input``, also until a step asks for a person's
        answer (A2A's turn ends)."""
        request = pb.WatchTaskRequest(task_id=record.id, after_sequence=after_sequence)
        with _as_a2a_errors():
            events = await self._tasks.watch(_caller(context).identity, request)
        state = record.state
        async for event in events:
            if event.kind is EventKind.TASK_STATE:
                state = MeshState(event.state)
            if state.final:
                break
            if event.kind is EventKind.STEP_STATE and event.state == StepState.INPUT_REQUIRED:
                yield self._update(record, _input_required(event.step_id, event.reason))
                if stop_at_input:
                    return
                continue
            text = _event_text(event)
            if text:
                yield self._update(record, _status(state, text))
        final = await self._record(record.id, context, Action.WATCH_TASKS)
        if final.state is MeshState.SUCCEEDED and final.result is not None:
            yield task_of(final)  # the result, as the task's artifact
        yield self._update(final, _status(final.state, final.error))

    def _update(self, record: TaskRecord, status: TaskStatus) -> TaskStatusUpdateEvent:
        return TaskStatusUpdateEvent(
            task_id=record.id, context_id=_context_id(record), status=status
        )

    async def _record(self, task_id: str, context: ServerCallContext, action: Action) -> TaskRecord:
        with _as_a2a_errors():
            return await self._tasks.task(_caller(context).identity, task_id, action)

    async def _task(self, task_id: str, context: ServerCallContext) -> Task:
        return task_of(await self._record(task_id, context, Action.GET_TASKS))

    async def on_get_task(self, params: GetTaskRequest, context: ServerCallContext) -> Task | None:
        return await self._task(params.id, context)

    async def on_list_tasks(
        self, params: ListTasksRequest, context: ServerCallContext
    ) -> ListTasksResponse:
        states = _mesh_states(params.status) if params.status else []
        request = pb.ListTasksRequest(
            states=[task_state_to_proto(s) for s in states],
            page_size=params.page_size,
            page_token=params.page_token,
        )
        with _as_a2a_errors():
            records, offset, size = await self._tasks.list_tasks(_caller(context).identity, request)
        page = ListTasksResponse(tasks=[task_of(r) for r in records[:size]], page_size=size)
        if len(records) > size:
            page.next_page_token = str(offset + size)
        return page

    async def on_cancel_task(
        self, params: CancelTaskRequest, context: ServerCallContext
    ) -> Task | None:
        reason = str(params.metadata["reason"]) if "reason" in params.metadata else ""
        with _as_a2a_errors():
            record = await self._tasks.cancel(
                _caller(context).identity, pb.CancelTaskRequest(task_id=params.id, reason=reason)
            )
        return task_of(record)

    async def on_create_task_push_notification_config(self, params: Any, context: Any) -> Any:
        raise PushNotificationNotSupportedError()

    async def on_get_task_push_notification_config(self, params: Any, context: Any) -> Any:
        raise PushNotificationNotSupportedError()

    async def on_list_task_push_notification_configs(self, params: Any, context: Any) -> Any:
        raise PushNotificationNotSupportedError()

    async def on_delete_task_push_notification_config(self, params: Any, context: Any) -> Any:
        raise PushNotificationNotSupportedError()

    async def on_get_extended_agent_card(self, params: Any, context: Any) -> Any:
        raise UnsupportedOperationError("the mesh's Agent Card has no extended form")


def agent_card(tasks: TaskService, base_url: str) -> AgentCard:
    """The mesh's Agent Card, for clients reaching it at ``base_url``."""
    workflows, capabilities = tasks.offered()
    skills = [
        AgentSkill(
            id="goal",
            name="Plan a goal",
            description="A goal in plain text, decomposed into steps by the planner",
            tags=["goal"],
            input_modes=["text/plain"],
        )
    ]
    skills += [
        AgentSkill(
            id=f"workflow:{w.name}",
            name=w.name,
            description=w.description or f"the catalog workflow {w.name}",
            tags=["workflow"],
            input_modes=["application/json"],
        )
        for w in workflows
    ]
    skills += [
        AgentSkill(
            id=f"capability:{c.name}",
            name=c.name,
            description=c.description or f"one step of capability {c.name}",
            tags=["capability", *c.tags],
            input_modes=["application/json"],
        )
        for c in capabilities
    ]
    card = AgentCard(
        name="agentmesh",
        description="A gRPC service mesh for AI agents: tasks planned into steps, run by agents",
        version=importlib.metadata.version("agentmesh"),
        supported_interfaces=[
            AgentInterface(
                url=base_url.rstrip("/") + A2A_PATH + "/",
                protocol_binding="JSONRPC",
                protocol_version="1.0",
            )
        ],
        capabilities=AgentCapabilities(streaming=True, push_notifications=False),
        default_input_modes=["application/json", "text/plain"],
        default_output_modes=["application/json"],
        skills=skills,
    )
    card.security_schemes["mtls"].CopyFrom(
        SecurityScheme(
            mtls_security_scheme=MutualTlsSecurityScheme(
                description="a client certificate issued by the mesh CA"
            )
        )
    )
    card.security_schemes["bearer"].CopyFrom(
        SecurityScheme(
            http_auth_security_scheme=HTTPAuthSecurityScheme(
                scheme="bearer", description="a token from `agentmesh tokens issue`"
            )
        )
    )
    for scheme in ("mtls", "bearer"):
        card.security_requirements.append(SecurityRequirement(schemes={scheme: StringList()}))
    return card


class _Authenticated(DefaultServerCallContextBuilder):
    """A2A call contexts carrying the caller the wrapping middleware verified."""

    def build(self, request: Request) -> ServerCallContext:
        context = super().build(request)
        context.state["peer"] = request.state.peer
        return context


def _authenticating(app: Any, authenticator: Authenticator) -> Any:
    """``app`` behind the HTTP API's authentication: 401 (with the reason) before any A2A."""

    async def guarded(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            try:
                peer = authenticator.peer(HTTPConnection(scope))
            except AgentMeshError as exc:
                await error_response(exc)(scope, receive, send)
                return
            scope.setdefault("state", {})["peer"] = peer
        await app(scope, receive, send)

    return guarded


def install(api: FastAPI, tasks: TaskService, authenticator: Authenticator) -> None:
    """Serve the mesh's Agent Card and A2A JSON-RPC endpoint on ``api``."""
    routes = create_jsonrpc_routes(
        MeshRequestHandler(tasks), rpc_url="/", context_builder=_Authenticated()
    )
    api.mount(A2A_PATH, _authenticating(Starlette(routes=routes), authenticator))

    @api.get("/.well-known/agent-card.json", tags=["a2a"], include_in_schema=False)
    async def card(request: Request) -> JSONResponse:
        return JSONResponse(agent_card_to_dict(agent_card(tasks, str(request.base_url))))
