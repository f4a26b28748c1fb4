"""Assignments as the SDK sees them, and the outcomes it reports for them.

The failure codes are the mesh's one vocabulary, :class:`agentmesh.models.FailureCode`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from agentmesh.models import JSON, FailureCode, StepSpec

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
