"""Answers to steps of kind ``input`` in the store: written by whoever receives the answer,
read by the run that waits for it, wherever and whenever that run is."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.exc import IntegrityError

from agentmesh.errors import FailedPrecondition
from agentmesh.models import JSON
from agentmesh.orchestrator.store.connection import Connection, utc
from agentmesh.orchestrator.store.tables import StepAnswerRow


@dataclass(frozen=True, slots=True)
class Answer:
    """A person's answer to a step, and who gave it when."""

    value: JSON
    answered_by: str
    answered_at: datetime


class Answers(Connection):
    """Keeping and reading the answers to input steps."""

    async def save_answer(self, task_id: str, step_id: str, answer: Answer) -> None:
        """Keep the answer to a step; FailedPrecondition when it was answered already (the
        first answer stands)."""
        row = StepAnswerRow(
            task_id=task_id,
            step_id=step_id,
            value=answer.value,
            answered_by=answer.answered_by,
            answered_at=answer.answered_at,
        )
        try:
            async with self._transaction() as session:
                session.add(row)
        except IntegrityError:
            raise FailedPrecondition(
                f"step {step_id!r} was answered already", field="step_id"
            ) from None

    async def answer(self, task_id: str, step_id: str) -> Answer | None:
        """The answer to a step, or None while there is none."""
        async with self._read() as session:
            row = await session.get(StepAnswerRow, (task_id, step_id))
        if row is None:
            return None
        return Answer(row.value, row.answered_by, utc(row.answered_at) or row.answered_at)
