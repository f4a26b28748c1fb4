"""What the front doors do with tasks and agents, once: gRPC servicers and HTTP routes call this.

Each call takes the verified caller and a request in its wire shape (the protobuf message;
the HTTP API translates its JSON into the same message), checks the request's fields
(:mod:`agentmesh.orchestrator.api.validation`) and asks the
:class:`~agentmesh.security.guard.Guard` whether the caller may do it before anything is
looked up, converted or stored, so a refused request changes nothing, whichever door it
came through.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from agentmesh._proto.agentmesh.v1 import orchestrator_pb2 as pb
from agentmesh.errors import NotFound
from agentmesh.models import AgentOverride, AgentStatus, TaskEvent, TaskRecord, WorkflowInfo
from agentmesh.orchestrator.agents.registry import Registry
from agentmesh.orchestrator.api import validation
from agentmesh.orchestrator.engine import Engine
from agentmesh.orchestrator.events import EventBus
from agentmesh.orchestrator.planning import Catalog, PlanLimits
from agentmesh.orchestrator.store import Store
from agentmesh.security import Identity
from agentmesh.security.guard import Guard
from agentmesh.security.policy import Action
from agentmesh.wire import tasks as convert

DEFAULT_PAGE = 50


class TaskService:
    """Submit, inspect, list, cancel and watch tasks; list agents and workflows; for one caller."""

    def __init__(
        self,
        engine: Engine,
        store: Store,
        bus: EventBus,
        registry: Registry,
        guard: Guard,
        limits: PlanLimits | None = None,
        *,
        catalog: Catalog | None = None,
    ) -> None:
        self._catalog = catalog or Catalog()
        self._engine = engine
        self._store = store
        self._bus = bus
        self._registry = registry
        self.guard = guard
        self._limits = limits or PlanLimits()

    async def task(self, caller: Identity, task_id: str, action: Action) -> TaskRecord:
        """The task, if ``caller`` may do ``action`` with it; else PermissionDenied/NotFound
        (a task of someone else's is concealed as not found)."""
        validation.check_task_id(task_id)
        access = self.guard.task_access(caller, action)
        task = self._engine.live(task_id) or await self._store.get_task(task_id)
        if task is None:
            raise NotFound(f"no task {task_id!r}", field="task_id")
        access.check(task_id, task.owner)
        return task

    async def submit(self, caller: Identity, request: pb.SubmitTaskRequest) -> TaskRecord:
        """Plan and start a task owned by ``caller`` (or the first one of its idempotency key)."""
        self.guard.require(caller, Action.SUBMIT_TASKS)
        validation.check_submit(request, self._limits)
        return await self._engine.submit(convert.request_from_proto(request), caller.uri)

    async def list_tasks(
        self, caller: Identity, request: pb.ListTasksRequest
    ) -> tuple[list[TaskRecord], int, int]:
        """Up to one more than a page of the tasks ``caller`` may see, newest first, with the
        page's offset and size (the extra task says that another page follows)."""
        owner = self.guard.task_owner_filter(caller)
        offset = validation.check_list_tasks(request)
        size = request.page_size or DEFAULT_PAGE
        states = [
            convert.task_state_from_proto(s, f"states[{i}]") for i, s in enumerate(request.states)
        ]
        tasks = await self._store.list_tasks(
            owner=owner, states=states, limit=size + 1, offset=offset
        )
        return tasks, offset, size

    async def cancel(self, caller: Identity, request: pb.CancelTaskRequest) -> TaskRecord:
        """Cancel the task (rolling back what it did) and return it as it is then."""
        validation.check_cancel(request)
        task = await self.task(caller, request.task_id, Action.CANCEL_TASKS)
        await self._engine.cancel(task.id, request.reason or f"cancelled by {caller}")
        return await self.task(caller, task.id, Action.CANCEL_TASKS)

    async def watch(
        self, caller: Identity, request: pb.WatchTaskRequest
    ) -> AsyncIterator[TaskEvent]:
        """The task's events after ``after_sequence``, ending after its final state.

        Every refusal (a bad id, someone else's task, a cursor past the task's last event:
        OUT_OF_RANGE) is raised here, before the first event is waited for, so that a
        front door can answer it as an error rather than as a broken stream.
        """
        validation.check_watch(request)
        task = await self.task(caller, request.task_id, Action.WATCH_TASKS)
        await self._bus.check_cursor(task.id, request.after_sequence)
        return self._bus.watch(task.id, request.after_sequence)

    def workflows(self, caller: Identity) -> list[WorkflowInfo]:
        """The workflows of the catalog the orchestrator plans from, to submit by name."""
        self.guard.require(caller, Action.LIST_WORKFLOWS)
        return [
            WorkflowInfo(
                name=w.name,
                description=w.description,
                input_schema=w.input_schema,
                plan=w.to_plan(),
            )
            for w in self._catalog
        ]

    def agents(self, caller: Identity, request: pb.ListAgentsRequest) -> list[AgentStatus]:
        """The registered agents (offering ``capability``, when given)."""
        self.guard.require(caller, Action.LIST_AGENTS)
        validation.check_list_agents(request)
        return list(self._registry.statuses(request.capability))

    async def override_agent(
        self,
        caller: Identity,
        name: str,
        *,
        drained: bool | None = None,
        weight: float | None = None,
    ) -> AgentOverride:
        """Drain or resume an agent, or set its weight (policy action ``manage_agents``)."""
        self.guard.require(caller, Action.MANAGE_AGENTS)
        validation.check_agent_name(name)
        if weight is not None:
            validation.check_weight(weight)
        return await self._registry.override(name, caller.uri, drained=drained, weight=weight)
