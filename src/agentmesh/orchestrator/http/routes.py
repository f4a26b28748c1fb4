"""The HTTP/JSON API: the gRPC Orchestrator service's calls as FastAPI routes.

Routes translate JSON ⇄ the protobuf requests and domain answers, and call
:class:`~agentmesh.orchestrator.api.tasks.TaskService`, the same as the gRPC servicers: one
set of checks, identities and policy behind both doors.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Header, Query, Request, Response
from fastapi.responses import StreamingResponse
from fastapi.security import HTTPBearer

from agentmesh._proto.agentmesh.v1 import orchestrator_pb2 as pb
from agentmesh.errors import ValidationError
from agentmesh.models import TaskState
from agentmesh.orchestrator.api.tasks import TaskService
from agentmesh.orchestrator.http import dashboard, errors
from agentmesh.orchestrator.http.auth import Authenticator
from agentmesh.orchestrator.http.events import frame, stream, task_frame
from agentmesh.orchestrator.http.models import (
    AgentOverrideView,
    AgentView,
    CancelBody,
    ErrorView,
    HealthView,
    InputBody,
    SubmitBody,
    TaskPageView,
    TaskView,
    WeightBody,
    WorkflowView,
    input_value,
    submit_request,
)
from agentmesh.security import Peer
from agentmesh.security.policy import Action
from agentmesh.wire.tasks import task_state_to_proto

#: Longest Last-Event-ID header accepted (a sequence number is at most 19 digits).
_MAX_EVENT_ID = 20

#: Documented for the OpenAPI schema; the actual check is the Authenticator's.
_bearer = HTTPBearer(auto_error=False, description="a token from `agentmesh tokens issue`")


def _caller(request: Request, _: Annotated[Any, Depends(_bearer)]) -> Peer:
    authenticator: Authenticator = request.app.state.authenticator
    peer = authenticator.peer(request)
    request.state.peer = peer
    return peer


Caller = Annotated[Peer, Depends(_caller)]
TaskId = Annotated[str, "a task id as POST /v1/tasks returns it"]
OmitOutputs = Annotated[
    bool, Query(description="leave each step's output and the task's result out")
]


def _tasks(request: Request) -> TaskService:
    service: TaskService = request.app.state.tasks
    return service


Tasks = Annotated[TaskService, Depends(_tasks)]


def _after(after: int, last_event_id: str | None) -> int:
    """The cursor: the Last-Event-ID an EventSource resends on reconnecting, else ``after``."""
    if last_event_id is None:
        return after
    text = last_event_id.strip()
    if not text:
        return after
    if len(text) > _MAX_EVENT_ID or not text.isascii() or not text.isdigit():
        raise ValidationError("must be the id of an event of this stream", field="Last-Event-ID")
    return int(text)


def _event_stream(frames: AsyncIterator[bytes]) -> StreamingResponse:
    return StreamingResponse(
        frames,
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


def create_api(tasks: TaskService, authenticator: Authenticator) -> FastAPI:
    """The API's ASGI application, over ``tasks`` (shared with the gRPC servicers)."""
    api = FastAPI(
        title="agentmesh",
        summary="Submit, inspect, cancel and watch tasks; list agents and workflows.",
        version="1",
        # The interactive docs load their scripts from the internet: serve the schema only.
        docs_url=None,
        redoc_url=None,
        responses={status: {"model": ErrorView} for status in errors.ERROR_STATUSES},
    )
    api.state.tasks = tasks
    api.state.authenticator = authenticator
    errors.install(api)
    dashboard.install(api)
    # Imported here: the a2a-sdk (and what it loads) costs an orchestrator without the HTTP
    # API memory and start-up time for nothing.
    from agentmesh.orchestrator.http import a2a

    a2a.install(api, tasks, authenticator)

    @api.get("/healthz", tags=["health"])
    async def healthz() -> HealthView:
        """Serving (no identity needed)."""
        return HealthView(status="serving")

    @api.post("/v1/tasks", status_code=201, tags=["tasks"])
    async def submit_task(
        body: SubmitBody, caller: Caller, tasks: Tasks, response: Response
    ) -> TaskView:
        """Submit a task; a retry with the same idempotency key answers the first task."""
        task = await tasks.submit(caller.identity, submit_request(body))
        response.headers["Location"] = f"/v1/tasks/{task.id}"
        return TaskView.of(task)

    @api.get("/v1/tasks", tags=["tasks"])
    async def list_tasks(
        caller: Caller,
        tasks: Tasks,
        state: Annotated[list[TaskState] | None, Query(description="only these states")] = None,
        page_size: Annotated[int, Query(ge=0, le=2**32 - 1)] = 0,
        page_token: str = "",
        omit_outputs: OmitOutputs = False,
    ) -> TaskPageView:
        """The tasks the caller may see, newest first, a page at a time."""
        request = pb.ListTasksRequest(
            states=[task_state_to_proto(s) for s in state or ()],
            page_size=page_size,
            page_token=page_token,
            omit_outputs=omit_outputs,
        )
        found, offset, size = await tasks.list_tasks(caller.identity, request)
        return TaskPageView(
            tasks=[TaskView.of(t, omit_outputs=omit_outputs) for t in found[:size]],
            next_page_token=str(offset + size) if len(found) > size else "",
        )

    @api.get(
        "/v1/tasks/changes",
        tags=["tasks"],
        response_class=StreamingResponse,
        responses={200: {"content": {"text/event-stream": {"schema": {"type": "string"}}}}},
    )
    async def watch_task_list(caller: Caller, tasks: Tasks) -> StreamingResponse:
        """The task list's changes as Server-Sent Events: ``relist`` first (list now: every
        change from here on follows), then ``task`` with a task the caller may list, as
        ``GET /v1/tasks`` has it, whenever it changes; ``relist`` again when changes were
        lost. It does not end; a reconnecting client gets ``relist`` first."""
        changes = tasks.list_changes(caller.identity)
        frames = stream(
            changes, task_frame, guard=tasks.guard, peer=caller, method="GET /v1/tasks/changes"
        )
        return _event_stream(frames)

    @api.get("/v1/tasks/{task_id}", tags=["tasks"])
    async def get_task(
        task_id: TaskId, caller: Caller, tasks: Tasks, omit_outputs: OmitOutputs = False
    ) -> TaskView:
        """One task with its steps (someone else's is not found, as one never issued)."""
        task = await tasks.task(caller.identity, task_id, Action.GET_TASKS)
        return TaskView.of(task, omit_outputs=omit_outputs)

    @api.post("/v1/tasks/{task_id}/cancel", tags=["tasks"])
    async def cancel_task(
        task_id: TaskId, caller: Caller, tasks: Tasks, body: CancelBody | None = None
    ) -> TaskView:
        """Cancel a task and roll back what it did; answers once it is final."""
        request = pb.CancelTaskRequest(task_id=task_id, reason=body.reason if body else "")
        return TaskView.of(await tasks.cancel(caller.identity, request))

    @api.post("/v1/tasks/{task_id}/steps/{step_id}/input", tags=["tasks"])
    async def provide_input(
        task_id: TaskId, step_id: str, body: InputBody, caller: Caller, tasks: Tasks
    ) -> TaskView:
        """Answer a step waiting for input; the task as it is then (without outputs)."""
        request = pb.ProvideInputRequest(task_id=task_id, step_id=step_id)
        request.value.CopyFrom(input_value(body))
        task = await tasks.provide_input(caller.identity, request)
        return TaskView.of(task, omit_outputs=True)

    @api.get(
        "/v1/tasks/{task_id}/events",
        tags=["tasks"],
        response_class=StreamingResponse,
        responses={200: {"content": {"text/event-stream": {"schema": {"type": "string"}}}}},
    )
    async def watch_task(
        task_id: TaskId,
        caller: Caller,
        tasks: Tasks,
        after: Annotated[int, Query(ge=0, le=2**63 - 1)] = 0,
        last_event_id: Annotated[str | None, Header()] = None,
    ) -> StreamingResponse:
        """The task's events as Server-Sent Events after sequence ``after`` (or the
        ``Last-Event-ID``), ending after its final state."""
        cursor = _after(after, last_event_id)
        request = pb.WatchTaskRequest(task_id=task_id, after_sequence=cursor)
        events = await tasks.watch(caller.identity, request)
        frames = stream(
            events,
            frame,
            guard=tasks.guard,
            peer=caller,
            method=f"GET /v1/tasks/{task_id}/events",
        )
        return _event_stream(frames)

    @api.get("/v1/agents", tags=["agents"])
    async def list_agents(caller: Caller, tasks: Tasks, capability: str = "") -> list[AgentView]:
        """The registered agents, those offering ``capability`` when given."""
        statuses = await tasks.agents(caller.identity, pb.ListAgentsRequest(capability=capability))
        return [AgentView.of(s) for s in statuses]

    @api.post("/v1/agents/{name}/drain", tags=["agents"])
    async def drain_agent(name: str, caller: Caller, tasks: Tasks) -> AgentOverrideView:
        """Give the agent no new work, on every replica (policy action ``manage_agents``)."""
        return AgentOverrideView.of(await tasks.override_agent(caller.identity, name, drained=True))

    @api.post("/v1/agents/{name}/resume", tags=["agents"])
    async def resume_agent(name: str, caller: Caller, tasks: Tasks) -> AgentOverrideView:
        """Give a drained agent work again (policy action ``manage_agents``)."""
        return AgentOverrideView.of(
            await tasks.override_agent(caller.identity, name, drained=False)
        )

    @api.put("/v1/agents/{name}/weight", tags=["agents"])
    async def set_agent_weight(
        name: str, body: WeightBody, caller: Caller, tasks: Tasks
    ) -> AgentOverrideView:
        """Scale the agent's share of work (policy action ``manage_agents``)."""
        return AgentOverrideView.of(
            await tasks.override_agent(caller.identity, name, weight=body.weight)
        )

    @api.get("/v1/workflows", tags=["workflows"])
    async def list_workflows(caller: Caller) -> list[WorkflowView]:
        """The catalog's workflows (policy action ``list_workflows``)."""
        return [WorkflowView.of(w) for w in tasks.workflows(caller.identity)]

    return api
