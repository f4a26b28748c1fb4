"""Assignments as the SDK sees them, and the outcomes it reports for them."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime

from agentmesh.models import JSON, StepSpec


class FailureCode(enum.StrEnum):
    """The failure codes the SDK itself reports (handlers may raise others via StepFailed)."""

    DRAINING = "draining"
    UNKNOWN_CAPABILITY = "unknown_capability"
    BUSY = "busy"
    INVALID_INPUT = "invalid_input"
    INVALID_OUTPUT = "invalid_output"
    ERROR = "error"
    TIMEOUT = "timeout"
    CANCELLED = "cancelled"

    @property
    def retryable(self) -> bool:
        """Whether trying the same work again, here or elsewhere, may succeed."""
        return self in _RETRYABLE


_RETRYABLE = frozenset(
    {FailureCode.DRAINING, FailureCode.BUSY, FailureCode.ERROR, FailureCode.TIMEOUT}
)

#: Codes that say why a run was interrupted rather than what it produced; never cached.
INTERRUPTIONS = frozenset({FailureCode.CANCELLED.value, FailureCode.DRAINING.value})


@dataclass(frozen=True, slots=True, kw_only=True)
class Assignment:
    """Work sent by an orchestrator: run ``capability`` on ``input``."""

    assignment_id: str
    capability: str
    input: dict[str, JSON] = field(default_factory=dict)
    idempotency_key: str = ""
    task_id: str = ""
    step_id: str = ""
    attempt: int = 0
    deadline: datetime | None = None
    compensation: bool = False


@dataclass(frozen=True, slots=True)
class Completed:
    """The handler returned a valid output (and possibly steps to add to the plan)."""

    output: dict[str, JSON]
    follow_ups: tuple[StepSpec, ...] = ()


@dataclass(frozen=True, slots=True)
class Failed:
    """The assignment did not produce an output; ``retryable`` tells whether to try again."""

    code: str
    message: str
    retryable: bool

    @classmethod
    def of(cls, code: FailureCode, message: str) -> Failed:
        """A failure with one of the SDK's own codes and its usual retryability."""
        return cls(code.value, message, code.retryable)


Outcome = Completed | Failed
"""How an assignment ended."""
