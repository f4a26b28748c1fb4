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
from datetime import UTC, datetime

from google.protobuf import json_format

from agentmesh._proto.agentmesh.v1 import orchestrator_pb2 as pb
from agentmesh.errors import NotFound, PermissionDenied
from agentmesh.models import (
    AgentOverride,
    AgentStatus,
    Capability,
    ParentStep,
    StepState,
    TaskEvent,
    TaskRecord,
    WorkflowInfo,
)
from agentmesh.orchestrator.agents.registry import Registry
from agentmesh.orchestrator.api import validation
from agentmesh.orchestrator.engine import Engine, inputs
from agentmesh.orchestrator.events import EventBus
from agentmesh.orchestrator.planning import Catalog, PlanLimits
from agentmesh.orchestrator.store import Answer, Store
from agentmesh.security import Identity, IdentityKind
from agentmesh.security.guard import Guard
from agentmesh.security.policy import Action, Concealed
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
        task = await self._record(task_id)
        if task is None:
            raise NotFound(f"no task {task_id!r}", field="task_id")
        try:
            access.check(task_id, task.owner)
        except Concealed:
            # The agent that submitted a sub-task follows it (and may cancel it) while it
            # runs the parent step, though the task is its parent owner's.
            if task.parent is None or await self._running_step(caller, task.parent) is None:
                raise
        return task

    async def _record(self, task_id: str, *, hot: bool = True) -> TaskRecord | None:
        """The task as freshly as this replica knows it: its live run here, its end here,
        its hot snapshot in Redis (unless not ``hot``), else the store."""
        return (
            self._engine.live(task_id)
            or self._bus.finished(task_id)
            or (await self._bus.snapshot(task_id) if hot else None)
            or await self._store.get_task(task_id)
        )

    async def _running_step(self, caller: Identity, parent: ParentStep) -> TaskRecord | None:
        """The parent task, if ``caller`` is the agent running its step ``parent.step_id``."""
        if caller.kind is not IdentityKind.AGENT:
            return None
        task = self._engine.live(parent.task_id) or await self._store.get_task(parent.task_id)
        step = task.steps.get(parent.step_id) if task is not None else None
        if step is None or step.state is not StepState.RUNNING or step.agent != caller.name:
            return None
        return task

    async def submit(self, caller: Identity, request: pb.SubmitTaskRequest) -> TaskRecord:
        """Plan and start a task owned by ``caller`` (or the first one of its idempotency key)."""
        validation.check_submit(request, self._limits)
        if not request.HasField("parent"):
            self.guard.require(caller, Action.SUBMIT_TASKS)
            return await self._engine.submit(convert.request_from_proto(request), caller.uri)
        # A sub-task: the authority is the parent owner's, lent to the agent running the
        # parent step for as long as it runs it (the policy's submit_tasks is not asked).
        validation.check_task_id(request.parent.task_id, "parent.task_id")
        parent = await self._running_step(caller, convert.parent_from_proto(request.parent))
        if parent is None:
            raise PermissionDenied(
                f"{caller} is not running step {request.parent.step_id!r} of task "
                f"{request.parent.task_id}: only the agent running a step submits its sub-tasks",
                field="parent",
            )
        return await self._engine.submit(convert.request_from_proto(request), parent.owner)

    async def list_tasks(
        self, caller: Identity, request: pb.ListTasksRequest
    ) -> tuple[list[TaskRecord], int, int]:
        """Up to one more than a page of the tasks ``caller`` may see, newest first, with the
        page's offset and size (the extra task says that another page follows).

        Only live states asked for, and Redis configured: answered from its index of live
        tasks while it can be trusted (see :meth:`EventBus.live_tasks`), else by the store.
        Final states (or all) are the store's to answer.
        """
        owner = self.guard.task_owner_filter(caller)
        offset = validation.check_list_tasks(request)
        size = request.page_size or DEFAULT_PAGE
        states = [
            convert.task_state_from_proto(s, f"states[{i}]") for i, s in enumerate(request.states)
        ]
        tasks = None
        if states and not any(s.final for s in states):
            tasks = await self._bus.live_tasks(
                owner=owner, states=states, limit=size + 1, offset=offset
            )
        if tasks is None:
            tasks = await self._store.list_tasks(
                owner=owner, states=states, limit=size + 1, offset=offset
            )
        return tasks, offset, size

    def list_changes(self, caller: Identity) -> AsyncIterator[TaskRecord | None]:
        """The tasks ``caller`` may list, each as it is whenever it changes (without steps,
        as :meth:`list_tasks` has them); None first and whenever changes were lost: list the
        tasks again then.

        A caller who may not list tasks is refused here, before anything is watched; the
        policy is asked again for every batch (it may have been reloaded meanwhile), and a
        refusal then is raised from the iteration.
        """
        self.guard.task_owner_filter(caller)
        return self._list_changes(caller)

    async def _list_changes(self, caller: Identity) -> AsyncIterator[TaskRecord | None]:
        changes = self._bus.task_changes()
        try:
            async for batch in changes:
                owner = self.guard.task_owner_filter(caller)
                if batch.lost:
                    yield None
                    continue
                for task_id in batch.task_ids:
                    task = self._engine.live(task_id) or await self._store.get_task(task_id)
                    if task is not None and owner in (None, task.owner):
                        yield task.model_copy(update={"steps": {}})
        finally:
            await changes.aclose()  # type: ignore[attr-defined]

    async def cancel(self, caller: Identity, request: pb.CancelTaskRequest) -> TaskRecord:
        """Cancel the task (rolling back what it did) and return it as it is then."""
        validation.check_cancel(request)
        task = await self.task(caller, request.task_id, Action.CANCEL_TASKS)
        await self._engine.cancel(task.id, request.reason or f"cancelled by {caller}")
        # Not from Redis: a task another replica ran was followed to its final event in the
        # store, and its hot snapshot (written after the commit) may still show it running.
        return await self._record(task.id, hot=False) or task

    async def provide_input(self, caller: Identity, request: pb.ProvideInputRequest) -> TaskRecord:
        """Answer a step of kind ``input`` and return the task as it is then.

        Only a caller the policy lets answer (``provide_input``) who is one of the step's
        approvers (without any, the task's owner) may; a caller who is neither the owner
        nor an approver of any of the task's steps is told the task does not exist.
        """
        validation.check_provide_input(request)
        self.guard.require(caller, Action.PROVIDE_INPUT)
        task_id = request.task_id
        task = self._engine.live(task_id) or await self._store.get_task(task_id)
        domain = self.guard.policy.trust_domain
        if task is None or not inputs.may_see(task, caller, domain):
            raise Concealed(
                f"no task {task_id!r}",
                field="task_id",
                reason=f"{caller} is neither the owner of task {task_id} nor an approver",
            )
        step = task.steps.get(request.step_id)
        asked = None if step is None else inputs.question(step)
        if step is None or asked is None:
            raise NotFound(f"no input step {request.step_id!r} in the task", field="step_id")
        inputs.check_answerer(asked, caller, task.owner, domain)
        value = json_format.MessageToDict(request.value)
        inputs.check_answer(step, value)
        answer = Answer(value=value, answered_by=caller.uri, answered_at=datetime.now(UTC))
        await self._engine.provide_input(task.id, step.spec.id, answer)
        return self._engine.live(task.id) or await self._store.get_task(task.id) or task

    async def watch(
        self, caller: Identity, request: pb.WatchTaskRequest
    ) -> AsyncIterator[TaskEvent]:
        """The task's events after ``after_sequence``, ending after its final state.

        Every refusal (a bad id, someone else's task, a cursor past the task's last event:
        OUT_OF_RANGE) is raised here, before the first event is waited for, so that a
        front door can answer it as an error rather than as a broken stream.
        """
        return self._bus.watch(await self._watched(caller, request), request.after_sequence)

    async def watch_batches(
        self, caller: Identity, request: pb.WatchTaskRequest
    ) -> AsyncIterator[list[TaskEvent]]:
        """:meth:`watch`, the events that are ready together as one list (WatchTaskBatches)."""
        task_id = await self._watched(caller, request)
        return self._bus.watch_batches(task_id, request.after_sequence)

    async def _watched(self, caller: Identity, request: pb.WatchTaskRequest) -> str:
        """The id of the task ``caller`` may watch as ``request`` asks; refusals raised."""
        validation.check_watch(request)
        task = await self.task(caller, request.task_id, Action.WATCH_TASKS)
        await self._bus.check_cursor(task.id, request.after_sequence)
        return task.id

    async def last_sequence(self, caller: Identity, task_id: str) -> int:
        """The sequence of the task's newest durable event: a cursor for :meth:`watch` that
        skips what happened so far."""
        task = await self.task(caller, task_id, Action.WATCH_TASKS)
        return await self._store.last_sequence(task.id)

    def workflows(self, caller: Identity) -> list[WorkflowInfo]:
        """The workflows of the catalog the orchestrator plans from, to submit by name."""
        self.guard.require(caller, Action.LIST_WORKFLOWS)
        return self._workflows()

    def _workflows(self) -> list[WorkflowInfo]:
        return [
            WorkflowInfo(
                name=w.name,
                description=w.description,
                input_schema=w.input_schema,
                plan=w.to_plan(),
            )
            for w in self._catalog
        ]

    def offered(self) -> tuple[list[WorkflowInfo], list[Capability]]:
        """What the mesh can run, for its public A2A Agent Card: the catalog's workflows and
        the capabilities registered agents offer now (each name once, newest version)."""
        workflows = self._workflows()
        capabilities: dict[str, Capability] = {}
        for status in self._registry.statuses():
            for capability in status.card.capabilities:
                capabilities.setdefault(capability.name, capability)
        return workflows, sorted(capabilities.values(), key=lambda c: c.name)

    async def agents(self, caller: Identity, request: pb.ListAgentsRequest) -> list[AgentStatus]:
        """The agents of the mesh (offering ``capability``, when given): with Redis, those
        connected to other replicas too, with their mesh-wide load."""
        self.guard.require(caller, Action.LIST_AGENTS)
        validation.check_list_agents(request)
        return await self._registry.mesh_statuses(request.capability)

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
