"""Assignments as the SDK sees them.

What becomes of one is an :class:`agentmesh.models.Outcome` with a
:class:`agentmesh.models.FailureCode` when it failed: the vocabulary the orchestrator reads.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from agentmesh.models import JSON, FailureCode

#: Codes that say why a run was interrupted rather than what it produced; never cached.
INTERRUPTIONS = frozenset({FailureCode.CANCELLED, FailureCode.DRAINING})


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
    #: W3C trace context of the orchestrator's attempt (see :mod:`agentmesh.tracing`).
    trace_context: dict[str, str] = field(default_factory=dict)
