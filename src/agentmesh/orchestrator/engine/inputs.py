"""Steps of kind ``input``: a person's answer, checked, kept durably and waited for.

The waiting state is the step's own (``INPUT_REQUIRED``, with the time it began waiting as
its ``started_at``), so it survives a restart or a takeover by another replica: whoever
resumes the task waits again, for what is left of the same timeout. An answer goes to the
store first (the first one stands), then wakes the waiting run if it is on this replica; a
run elsewhere is woken through the cache's pub/sub, and every waiting run also looks in the
store now and then, which is enough when neither is quick.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import timedelta

from agentmesh import schemas
from agentmesh.errors import FailedPrecondition, PermissionDenied, StepFailed, ValidationError
from agentmesh.models import (
    JSON,
    FailureCode,
    HumanInput,
    Outcome,
    StepRecord,
    StepState,
    TaskRecord,
)
from agentmesh.orchestrator.engine.journal import now
from agentmesh.orchestrator.store import Answer, Store
from agentmesh.security import Identity
from agentmesh.security.policy import identity_matches

#: How often a waiting step looks in the store for an answer nobody woke it for.
POLL_SECONDS = 2.0


def may_see(task: TaskRecord, caller: Identity, trust_domain: str) -> bool:
    """True when ``caller`` owns ``task`` or is an approver of one of its input steps."""
    if caller.uri == task.owner:
        return True
    return any(
        identity_matches(pattern, caller, trust_domain)
        for step in task.steps.values()
        if step.spec.human_input is not None
        for pattern in step.spec.human_input.approvers
    )


def check_answerer(asked: HumanInput, caller: Identity, owner: str, trust_domain: str) -> None:
    """PermissionDenied unless ``caller`` may answer (an approver; without any, the owner)."""
    if asked.approvers:
        if any(identity_matches(p, caller, trust_domain) for p in asked.approvers):
            return
        raise PermissionDenied(
            f"{caller} is not an approver of this step (approvers: {', '.join(asked.approvers)})",
            field="step_id",
        )
    if caller.uri != owner:
        raise PermissionDenied(
            f"{caller} may not answer: the step names no approvers, so only the task's owner may",
            field="step_id",
        )


def question(step: StepRecord) -> HumanInput | None:
    """What ``step`` asks: its own question (kind ``input``) or its agent's, while it waits."""
    return step.spec.human_input or step.asked


def check_answer(step: StepRecord, value: JSON) -> HumanInput:
    """The question ``step`` asks, if it is waiting for ``value``'s kind of answer now."""
    asked = question(step)
    if asked is None:
        raise FailedPrecondition(f"step {step.spec.id!r} asks no question", field="step_id")
    if step.state is not StepState.INPUT_REQUIRED:
        raise FailedPrecondition(
            f"step {step.spec.id!r} is {step.state.value}, not waiting for input", field="step_id"
        )
    problem = schemas.first_error(asked.answer_schema, value, whole="the value")
    if problem:
        raise ValidationError(f"does not match the step's answer schema: {problem}", field="value")
    return asked


class AgentAsks:
    """The questions agents of one task ask mid-step (``ctx.ask``), waiting for answers.

    In memory only, unlike an input step's wait: the agent's run waits on its Session,
    which does not outlive this replica either. The first answer stands.
    """

    def __init__(self) -> None:
        self._waiting: dict[str, asyncio.Future[Answer]] = {}

    def asking(self, step_id: str) -> bool:
        """True while ``step_id``'s agent waits for an answer here."""
        return step_id in self._waiting

    async def wait(self, step_id: str) -> Answer:
        """The answer to ``step_id``'s question, once given."""
        waiting: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        self._waiting[step_id] = waiting
        try:
            return await waiting
        finally:
            self._waiting.pop(step_id, None)

    def answer(self, step_id: str, answer: Answer) -> None:
        """Give the waiting agent ``answer``; FailedPrecondition once it has one."""
        waiting = self._waiting.get(step_id)
        if waiting is None or waiting.done():
            raise FailedPrecondition(f"step {step_id!r} was answered already", field="step_id")
        waiting.set_result(answer)


class InputWait:
    """The waits of one task's input steps, and the wake-ups their answers bring."""

    def __init__(self, store: Store, task_id: str) -> None:
        self._store = store
        self._task_id = task_id
        self._wakes: dict[str, asyncio.Event] = {}

    def answered(self, step_id: str) -> None:
        """An answer to ``step_id`` is in the store: wake its wait, if it waits here."""
        wake = self._wakes.get(step_id)
        if wake is not None:
            wake.set()

    async def wait(self, step: StepRecord) -> Outcome:
        """The step's answer (or its default once its timeout passed), as its outcome.

        StepFailed (``timeout``, final) when the timeout passes without an answer or a
        default. The timeout counts from when the step began waiting, restarts included.
        """
        asked = step.spec.human_input
        assert asked is not None
        started = step.started_at or now()
        deadline = (
            started + timedelta(seconds=step.spec.timeout_seconds)
            if step.spec.timeout_seconds
            else None
        )
        wake = self._wakes.setdefault(step.spec.id, asyncio.Event())
        try:
            while True:
                wake.clear()
                answer = await self._store.answer(self._task_id, step.spec.id)
                if answer is not None:
                    return Outcome(output=answer.value, message=f"answered by {answer.answered_by}")
                left = POLL_SECONDS
                if deadline is not None:
                    left = min(left, (deadline - now()).total_seconds())
                    if left <= 0:
                        return self._timed_out(step, asked)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(left):
                        await wake.wait()
        finally:
            self._wakes.pop(step.spec.id, None)

    @staticmethod
    def _timed_out(step: StepRecord, asked: HumanInput) -> Outcome:
        waited = f"no answer within {step.spec.timeout_seconds:g}s"
        if asked.default is not None:
            return Outcome(output=asked.default, message=f"{waited}: the default applies")
        raise StepFailed(waited, code=FailureCode.TIMEOUT, retryable=False)
