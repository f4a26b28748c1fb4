"""The domain: agents and their capabilities, tasks, plans, steps and events.

These are the types every module speaks; protobuf messages appear only at the
wire and are converted in :mod:`agentmesh.wire` (``tasks`` and ``cards``).
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import json
import re
import sys
from datetime import datetime
from typing import Any, Final

from pydantic import BaseModel, ConfigDict, Field

JSON = Any
"""A JSON-shaped value: dict, list, str, float, int, bool or None."""


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class TaskState(enum.StrEnum):
    """Where a task is in its life; the last five are final."""

    PENDING = "pending"
    RUNNING = "running"
    COMPENSATING = "compensating"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    ROLLED_BACK = "rolled_back"
    ROLLBACK_FAILED = "rollback_failed"

    @property
    def final(self) -> bool:
        """True once the task will change no more."""
        return self in _FINAL_TASK_STATES


_FINAL_TASK_STATES = frozenset(
    {
        TaskState.SUCCEEDED,
        TaskState.FAILED,
        TaskState.CANCELLED,
        TaskState.ROLLED_BACK,
        TaskState.ROLLBACK_FAILED,
    }
)


class StepState(enum.StrEnum):
    """Where a step is in its life."""

    PENDING = "pending"
    WAITING = "waiting"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"
    CANCELLED = "cancelled"
    COMPENSATED = "compensated"
    #: A step of kind ``input`` waits for a person's answer.
    INPUT_REQUIRED = "input_required"

    @property
    def final(self) -> bool:
        """True once the step will run no more (compensation aside)."""
        return self not in _LIVE_STEP_STATES


_LIVE_STEP_STATES = frozenset(
    {StepState.PENDING, StepState.WAITING, StepState.RUNNING, StepState.INPUT_REQUIRED}
)

#: What a capability may be called: dotted lowercase words, e.g. ``text.summarize``.
CAPABILITY_NAME: Final = re.compile(r"[a-z][a-z0-9_-]*(?:\.[a-z][a-z0-9_-]*)*")
#: The longest capability name an orchestrator accepts.
MAX_CAPABILITY_NAME: Final = 128


#: What a shared resource may be called, e.g. ``llm:openai/gpt-4o``.
RESOURCE_NAME: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/@+-]*")
#: The longest resource name an orchestrator accepts.
MAX_RESOURCE_NAME: Final = 128


def is_resource_name(name: str) -> bool:
    """True when all of ``name`` fits :data:`RESOURCE_NAME`, in :data:`MAX_RESOURCE_NAME`."""
    return len(name) <= MAX_RESOURCE_NAME and RESOURCE_NAME.fullmatch(name) is not None


def is_capability_name(name: str) -> bool:
    """True when all of ``name`` fits :data:`CAPABILITY_NAME`, in :data:`MAX_CAPABILITY_NAME`."""
    return len(name) <= MAX_CAPABILITY_NAME and CAPABILITY_NAME.fullmatch(name) is not None


class Capability(_Frozen):
    """A named, versioned operation an agent offers, with JSON schemas for its payloads."""

    name: str
    version: str = "1.0.0"
    description: str = ""
    input_schema: dict[str, JSON] = Field(default_factory=dict)
    output_schema: dict[str, JSON] = Field(default_factory=dict)
    tags: tuple[str, ...] = ()
    #: Shared resources each run uses (pools an operator limits across the mesh).
    resources: tuple[str, ...] = ()

    def input_schema_key(self) -> str:
        """``input_schema`` as canonical JSON, one shared string for all equal schemas.

        What matching keys a step's input verdict on: a thousand agents declaring one schema
        share one verdict per step instead of holding a thousand.
        """
        return self._schema_key("input_schema")

    def output_schema_key(self) -> str:
        """``output_schema`` as canonical JSON, shared like :meth:`input_schema_key`."""
        return self._schema_key("output_schema")

    def _schema_key(self, field: str) -> str:
        # Made once per declaration and kept beside the fields, as a cached_property would
        # be. The key names the dict it was made from: a model_copy(update=...) carries the
        # cached key along, and must not answer for the old schema. Interned: every agent's
        # declaration of one schema holds the same string.
        schema = getattr(self, field)
        slot = f"_{field}_key"
        cached = self.__dict__.get(slot)
        if cached is None or cached[0] is not schema:
            cached = self.__dict__[slot] = (schema, sys.intern(json.dumps(schema, sort_keys=True)))
        key: str = cached[1]
        return key


class AgentCard(_Frozen):
    """What an agent says about itself when it registers."""

    name: str
    endpoint: str
    capabilities: tuple[Capability, ...]
    max_concurrency: int = Field(default=1, ge=1)
    version: str = "0.0.0"
    labels: dict[str, str] = Field(default_factory=dict)
    #: The agent reads batches on its Session (the Python SDK does); False: every message
    #: is sent to it alone, as to an agent of the protos before batches.
    reads_batches: bool = False

    def capability(self, name: str) -> Capability | None:
        """The capability called ``name``, if this agent offers it."""
        # Looked up for every candidate of every attempt: a dict, not a scan. The index
        # names the tuple it was built from: a model_copy(update=...) carries the cached
        # index along, and must not answer from the old capabilities.
        built_from, by_name = self._capability_index
        if built_from is not self.capabilities:
            del self.__dict__["_capability_index"]
            built_from, by_name = self._capability_index
        return by_name.get(name)

    @functools.cached_property
    def _capability_index(self) -> tuple[tuple[Capability, ...], dict[str, Capability]]:
        by_name: dict[str, Capability] = {}
        for capability in self.capabilities:
            by_name.setdefault(capability.name, capability)  # the first of a name, as a scan
        return self.capabilities, by_name


class RetryPolicy(_Frozen):
    """How often and how patiently a step is retried."""

    max_attempts: int = Field(default=0, ge=0)
    initial_backoff_seconds: float = Field(default=0.2, ge=0)
    max_backoff_seconds: float = Field(default=5.0, ge=0)


class CachePolicy(_Frozen):
    """When a step may reuse an earlier output instead of running (see ``StepSpec.cache``)."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    #: How old an earlier output of the same capability, version and input may be.
    ttl_seconds: float = Field(gt=0)


class StepKind(enum.StrEnum):
    """Who does a step's work."""

    #: An agent offering the step's capability.
    AGENT = "agent"
    #: A person, answering with ``ProvideInput`` (see :class:`HumanInput`).
    INPUT = "input"


class HumanInput(_Frozen):
    """What a step of kind ``input`` asks, of whom, and what stands when nobody answers."""

    prompt: str
    #: JSON Schema the answer must match; empty for any JSON value.
    answer_schema: dict[str, JSON] = Field(default_factory=dict)
    #: SPIFFE ID patterns of who may answer; empty: the task's owner.
    approvers: tuple[str, ...] = ()
    #: The answer once the step's timeout passes unanswered; None: the step fails then.
    default: JSON = None


class StepSpec(_Frozen):
    """One step of a plan: a capability to run on an input that may reference other steps."""

    id: str
    capability: str = ""
    version: str = ""
    input: dict[str, JSON] = Field(default_factory=dict)
    needs: tuple[str, ...] = ()
    timeout_seconds: float = Field(default=0.0, ge=0)
    retry: RetryPolicy = Field(default_factory=RetryPolicy)
    optional: bool = False
    compensation: str = ""
    pin_agent: str = ""
    exclude_agents: tuple[str, ...] = ()
    for_each: str = ""
    #: Reuse an earlier successful output (never for a step with a compensation).
    cache: CachePolicy | None = None
    kind: StepKind = StepKind.AGENT
    #: For a step of kind ``input``: the question.
    human_input: HumanInput | None = None


class Plan(_Frozen):
    """A DAG of steps plus how their outputs combine into the task result."""

    steps: tuple[StepSpec, ...]
    aggregate: dict[str, JSON] = Field(default_factory=dict)


class WorkflowInfo(_Frozen):
    """A workflow of an orchestrator's catalog as a client sees it: submitted by ``name``."""

    name: str
    description: str = ""
    #: JSON Schema the task input must fit; None for any input.
    input_schema: dict[str, JSON] | None = None
    plan: Plan


class Usage(_Frozen):
    """What a run used: tokens and cost as agents report them, seconds and steps as counted.

    Reported by an agent for one run (only tokens and cost), or summed over a task's steps.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    input_tokens: int = Field(default=0, ge=0)
    output_tokens: int = Field(default=0, ge=0)
    cost: float = Field(default=0.0, ge=0)
    #: Seconds of agent work: every attempt's duration, parallel attempts added up.
    seconds: float = Field(default=0.0, ge=0)
    #: Steps run by agents (each fan-out instance counts once, retries do not).
    steps: int = Field(default=0, ge=0)

    @property
    def tokens(self) -> int:
        """Input and output tokens together."""
        return self.input_tokens + self.output_tokens

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            input_tokens=self.input_tokens + other.input_tokens,
            output_tokens=self.output_tokens + other.output_tokens,
            cost=self.cost + other.cost,
            seconds=self.seconds + other.seconds,
            steps=self.steps + other.steps,
        )


class Budget(_Frozen):
    """The most a task may use; 0 in a field for no limit on it."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    #: Input and output tokens together.
    tokens: int = Field(default=0, ge=0)
    cost: float = Field(default=0.0, ge=0)
    #: Seconds of agent work (see :attr:`Usage.seconds`); wall time is ``timeout_seconds``.
    seconds: float = Field(default=0.0, ge=0)
    steps: int = Field(default=0, ge=0)


class ParentStep(_Frozen):
    """The step of another task whose agent submitted a sub-task."""

    task_id: str
    step_id: str


class TaskRequest(_Frozen):
    """A validated SubmitTask request, before planning."""

    plan: Plan | None = None
    workflow: str = ""
    goal: str = ""
    input: dict[str, JSON] = Field(default_factory=dict)
    priority: int = 0
    timeout_seconds: float = Field(default=0.0, ge=0)
    labels: dict[str, str] = Field(default_factory=dict)
    idempotency_key: str = ""
    budget: Budget = Field(default_factory=Budget)
    #: For a sub-task: the task and step whose agent submits it.
    parent: ParentStep | None = None


class StepRecord(BaseModel):
    """A step's live state inside a task."""

    spec: StepSpec
    state: StepState = StepState.PENDING
    agent: str = ""
    attempts: int = 0
    #: The agent's result; for a fan-out step, the list of every run's output.
    output: JSON = None
    error: str = ""
    #: While waiting: what for (no agent with room, a pool at its limit, a question's
    #: prompt); not stored.
    waiting_for: str = ""
    #: While its agent waits for an answer (``ctx.ask``): the question; in memory only.
    asked: HumanInput | None = Field(default=None, exclude=True)
    started_at: datetime | None = None
    finished_at: datetime | None = None


class TaskRecord(BaseModel):
    """A task as stored and served: request, plan, step states and outcome."""

    id: str
    owner: str
    state: TaskState = TaskState.PENDING
    input: dict[str, JSON] = Field(default_factory=dict)
    priority: int = 0
    labels: dict[str, str] = Field(default_factory=dict)
    timeout_seconds: float = 0.0
    plan: Plan | None = None
    steps: dict[str, StepRecord] = Field(default_factory=dict)
    result: JSON = None
    error: str = ""
    partial: bool = False
    created_at: datetime
    updated_at: datetime
    #: W3C trace context of the task's first ``invoke_workflow`` span (see agentmesh.tracing).
    trace_context: dict[str, str] = Field(default_factory=dict)
    #: True while a streaming planner is still adding steps to ``plan``.
    planning: bool = False
    budget: Budget = Field(default_factory=Budget)
    #: What the task has used so far, summed over its steps.
    usage: Usage = Field(default_factory=Usage)
    #: For a sub-task: the task and step whose agent submitted it.
    parent: ParentStep | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class TaskPage:
    """One page of ``ListTasks``: the tasks, and the token of the next page ("" at the end)."""

    tasks: tuple[TaskRecord, ...]
    next_page_token: str = ""


class EventKind(enum.StrEnum):
    """Which of the three event shapes a :class:`TaskEvent` carries."""

    TASK_STATE = "task_state"
    STEP_STATE = "step_state"
    STEP_PROGRESS = "step_progress"


@dataclasses.dataclass(frozen=True, slots=True)
class AgentScore:
    """How matching rated one agent for a step: lower scores are better.

    A frozen dataclass rather than a model: matching makes one for each agent it weighs,
    and up to eight stay in each attempt's running event (about 3.4 KiB a step in flight
    as models, 0.9 as dataclasses). Models that hold it validate it all the same.
    """

    agent: str
    score: float
    #: Why it was not a contender, when it was not (``full``, ``circuit open``, ``drained``,
    #: ``failed this step``); empty for one that was.
    note: str = ""


class AgentChoice(_Frozen):
    """Why a step's attempt went to its agent: the strategy, the winner's score (lower is
    better; the learner's is its sampled seconds per success), and the others."""

    strategy: str
    score: float
    reason: str
    alternatives: tuple[AgentScore, ...] = ()


class TaskEvent(_Frozen):
    """One ordered change of a task, as persisted and streamed to watchers."""

    task_id: str
    sequence: int
    time: datetime
    kind: EventKind
    #: For task events: the task state; for step events: the step state.
    state: str = ""
    step_id: str = ""
    agent: str = ""
    attempt: int = 0
    reason: str = ""
    fraction: float = -1.0
    message: str = ""
    output: JSON = None
    partial: bool = False
    #: On task events and a step's final events: the task's usage so far.
    usage: Usage | None = None
    #: On a step's SUCCEEDED event: the output came from the step cache.
    cached: bool = False
    #: On progress events: the sub-task the step's agent submitted (or that ended).
    child_task_id: str = ""
    #: On a step's RUNNING event: why matching gave the attempt to ``agent``.
    choice: AgentChoice | None = None


def version_matches(prefix: str, version: str) -> bool:
    """True when ``prefix`` is ``version`` or its leading dotted parts: "1.2" fits "1.2.3"."""
    wanted = prefix.split(".")
    return version.split(".")[: len(wanted)] == wanted


@dataclasses.dataclass(frozen=True, slots=True)
class AgentStatus:
    """A snapshot of one agent for ``ListAgents``."""

    card: AgentCard
    identity: str
    connected: bool
    draining: bool
    active: int
    circuit: str
    registered_at: datetime
    last_seen: datetime
    #: Exponentially weighted mean attempt latency, seconds (None until an attempt ends).
    latency: float | None = None
    #: Attempts that ended ok and that failed, since the orchestrator first saw the agent.
    successes: int = 0
    failures: int = 0
    #: Drained by an operator: no new work until resumed.
    drained: bool = False
    #: The operator's weight on the agent's share of work (1 by default).
    weight: float = 1.0

    @property
    def success_rate(self) -> float | None:
        """Share of the agent's attempts that succeeded (None before its first)."""
        total = self.successes + self.failures
        return None if total == 0 else self.successes / total


#: The weight an agent has until an operator sets one, and the widest an operator may set.
DEFAULT_WEIGHT: Final = 1.0
MAX_WEIGHT: Final = 100.0


@dataclasses.dataclass(frozen=True, slots=True)
class AgentOverride:
    """What operators said of one agent (drained, weight), kept in the store for every replica."""

    name: str
    drained: bool = False
    weight: float = DEFAULT_WEIGHT
    #: The identity that set it last, and when (None: never set).
    updated_by: str = ""
    updated_at: datetime | None = None


class FailureCode(enum.StrEnum):
    """Why an assignment or a step failed: the codes both the orchestrator and the SDK use.

    Handlers may raise codes of their own (``StepFailed(code=...)``); these are the ones the
    mesh itself gives.
    """

    #: The agent's Session broke or stopped answering while the work was out.
    AGENT_LOST = "agent_lost"
    #: No result within the step's timeout (or the assignment's deadline had passed).
    TIMEOUT = "timeout"
    #: The handler raised.
    ERROR = "error"
    #: The handler raised ``StepFailed`` without a code of its own.
    FAILED = "failed"
    #: The output broke the capability's output schema or the output limits.
    INVALID_OUTPUT = "invalid_output"
    #: The input broke the capability's input schema.
    INVALID_INPUT = "invalid_input"
    #: A step's input references something that is not there.
    BAD_REFERENCE = "bad_reference"
    #: The agent had no room (or the previous run of the same work is stopping).
    BUSY = "busy"
    #: The orchestrator cancelled the assignment.
    CANCELLED = "cancelled"
    #: The agent is shutting down.
    DRAINING = "draining"
    #: The agent does not offer the capability.
    UNKNOWN_CAPABILITY = "unknown_capability"
    #: The task's budget is spent: no further step may start.
    BUDGET_EXCEEDED = "budget_exceeded"

    @property
    def retryable(self) -> bool:
        """Whether trying the same work again, here or elsewhere, may succeed."""
        return self in _RETRYABLE


_RETRYABLE = frozenset(
    {
        FailureCode.DRAINING,
        FailureCode.BUSY,
        FailureCode.ERROR,
        FailureCode.FAILED,  # as StepFailed's own default has it
        FailureCode.TIMEOUT,
    }
)


@dataclasses.dataclass(slots=True)
class Outcome:
    """How an assignment ended: ``output`` on success, else a failure code and message."""

    output: dict[str, JSON] | None = None
    code: str = ""
    message: str = ""
    retryable: bool = True
    #: Steps the agent asked to add to the plan after this one.
    follow_ups: tuple[StepSpec, ...] = ()
    #: Wire bytes of the output (big ones are schema-checked in a thread).
    size: int = 0
    #: What the run used, as the agent reported it (tokens and cost).
    usage: Usage | None = None
    #: The version of the capability the agent that answered declares.
    version: str = ""
    #: True when the output is an earlier run's, reused from the step cache.
    cached: bool = False

    @property
    def ok(self) -> bool:
        """True when the agent returned a result."""
        return self.output is not None

    @classmethod
    def failed(cls, code: FailureCode, message: str) -> Outcome:
        """A failure with one of the mesh's own codes and its usual retryability."""
        return cls(code=code.value, message=message, retryable=code.retryable)
