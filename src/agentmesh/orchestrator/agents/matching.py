"""Which agent gets a step: capability and version, pins and exclusions, an input its
schema accepts, spare capacity, operators' overrides, then a scorer among the agents left.

Which scorer is the :class:`Matcher` a step's :class:`Requirement` carries (the learner of
:mod:`agentmesh.orchestrator.agents.learning` in the orchestrator); without one, today's
fixed order: recent success rate, load, latency, round-robin.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from agentmesh import schemas
from agentmesh.models import (
    JSON,
    AgentCard,
    AgentChoice,
    AgentScore,
    version_matches,
)

#: Alternatives an explanation lists at most (the best first): an event stays small.
MAX_ALTERNATIVES = 8
#: Agents with room weighed for one step at most: matching stops looking once it has this
#: many (besides those the step should avoid). Scoring every agent cost 26 ms of CPU per step
#: with a thousand connected (issue 9); the best of a few is what load balancing needs (the
#: "power of d choices"), and the directory starts each look where the last one stopped, so
#: every agent is weighed in turn. A pinned or preferred step still looks at every agent.
MAX_WEIGHED = 16


@dataclass(slots=True)
class Arm:
    """What matching has seen of one agent on one capability, old evidence fading: each
    count and the latency's weight halve every ``half_life`` seconds (a bandit's arm)."""

    successes: float = 0.0
    failures: float = 0.0
    #: Mean attempt seconds, recent attempts weighing more (None until the first).
    latency: float | None = None
    #: The (decayed) number of attempts behind ``latency``.
    samples: float = 0.0
    #: Monotonic time the counts were last decayed to.
    updated: float = 0.0

    def decay(self, now: float, half_life: float) -> None:
        """Fade the evidence to what it is worth at ``now``."""
        if self.updated and now > self.updated:
            factor = 0.5 ** ((now - self.updated) / half_life)
            self.successes *= factor
            self.failures *= factor
            self.samples *= factor
        self.updated = max(self.updated, now)

    def record(self, seconds: float, ok: bool, now: float, half_life: float) -> None:
        """Account one finished attempt."""
        self.decay(now, half_life)
        if ok:
            self.successes += 1
        else:
            self.failures += 1
        if self.latency is None or self.samples <= 0:
            self.latency = seconds
        else:
            self.latency = (self.latency * self.samples + seconds) / (self.samples + 1)
        self.samples += 1


@dataclass(slots=True)
class AgentStats:
    """What the orchestrator has seen of an agent lately."""

    #: Exponentially weighted mean attempt latency, seconds (None until the first).
    latency: float | None = None
    successes: int = 0
    failures: int = 0
    #: Monotonic time of the last assignment, to spread equal candidates round-robin.
    last_assigned: float = 0.0
    #: Recent outcomes weigh more than old ones.
    _alpha: float = field(default=0.3, repr=False)
    #: An operator's drain: no new work (see :class:`~agentmesh.models.AgentOverride`).
    drained: bool = False
    #: An operator's weight on the agent's share of work (1 by default).
    weight: float = 1.0
    #: Per capability: the evidence the learner weighs (see :class:`Arm`).
    arms: dict[str, Arm] = field(default_factory=dict, repr=False)
    #: How fast the arms' evidence fades, seconds.
    half_life: float = 60.0

    def arm(self, capability: str) -> Arm:
        """The agent's arm for ``capability`` (empty until an attempt of it ends)."""
        arm = self.arms.get(capability)
        if arm is None:
            arm = self.arms[capability] = Arm()
        return arm

    def record(
        self, seconds: float, ok: bool, capability: str = "", now: float | None = None
    ) -> None:
        """Account one finished attempt (of ``capability``, for the learner, when given)."""
        if capability:
            moment = time.monotonic() if now is None else now
            self.arm(capability).record(seconds, ok, moment, self.half_life)
        self.latency = (
            seconds
            if self.latency is None
            else (self._alpha * seconds + (1 - self._alpha) * self.latency)
        )
        if ok:
            self.successes += 1
        else:
            self.failures += 1

    @property
    def success_rate(self) -> float:
        """Share of recent attempts that succeeded (optimistic 1.0 with no history)."""
        total = self.successes + self.failures
        return 1.0 if total == 0 else self.successes / total


@dataclass(frozen=True, slots=True)
class Requirement:
    """What a step asks of an agent."""

    capability: str
    version: str = ""
    pin: str = ""
    exclude: frozenset[str] = frozenset()
    #: Agents to avoid if any other will do (e.g. the one that just failed this step).
    avoid: frozenset[str] = frozenset()
    #: An agent to choose whenever it has room (e.g. the one already running a resumed step).
    prefer: str = ""
    #: The step's input, when known: only an agent whose own input schema accepts it gets
    #: the step (a schema belongs to its agent, not to the capability's name).
    payload: JSON | None = field(default=None, compare=False)
    #: The scorer among the agents that could take the step now (None: today's order).
    matcher: Matcher | None = field(default=None, compare=False, repr=False)
    #: The verdict on ``payload`` of each distinct input schema (by its canonical JSON):
    #: matching runs often. Keyed by schema, not by agent: with a thousand agents declaring
    #: one schema, ten thousand waiting steps held ten million verdicts (issue 9).
    _verdicts: dict[str, str | None] = field(default_factory=dict, compare=False, repr=False)
    #: Why the last agent chosen for this requirement was (set by :func:`choose`).
    _choices: list[AgentChoice] = field(default_factory=list, compare=False, repr=False)

    @property
    def choice(self) -> AgentChoice | None:
        """Why the agent last chosen for this requirement got it (None before, or without
        a matcher)."""
        return self._choices[-1] if self._choices else None

    def take_choice(self) -> AgentChoice | None:
        """:attr:`choice`, forgotten here: it goes into the attempt's event, and an attempt
        may run for long (ten thousand in flight held some 4 KiB of scores each, issue 9)."""
        choice = self.choice
        self._choices.clear()
        return choice


@dataclass(frozen=True, slots=True)
class Candidate:
    """An agent as matching sees it at one instant."""

    card: AgentCard
    active: int
    usable: bool
    stats: AgentStats


def offers(card: AgentCard, requirement: Requirement) -> bool:
    """True when ``card`` has the capability at a version starting with the required prefix."""
    capability = card.capability(requirement.capability)
    if capability is None:
        return False
    return not requirement.version or version_matches(requirement.version, capability.version)


def rejection(card: AgentCard, requirement: Requirement) -> str | None:
    """Why ``card``'s input schema refuses the step's payload, or None when it accepts it
    (or the payload is unknown, or the agent does not offer the capability)."""
    capability = card.capability(requirement.capability)
    if requirement.payload is None or capability is None or not capability.input_schema:
        return None
    key = capability.input_schema_key()
    try:
        return requirement._verdicts[key]
    except KeyError:
        problem = requirement._verdicts[key] = schemas.first_error(
            capability.input_schema, requirement.payload
        )
        return problem


def refusal(candidates: Iterable[Candidate], requirement: Requirement) -> str | None:
    """Why no agent will ever take the step: every connected agent that could serve it
    refuses its input. None while one accepts it, or while none could serve it at all (the
    step then waits for an agent to come)."""
    reason: str | None = None
    for candidate in candidates:
        if not eligible(candidate, requirement):
            continue
        problem = rejection(candidate.card, requirement)
        if problem is None:
            return None
        reason = reason or f"the input schema of {candidate.card.name} refuses it: {problem}"
    if reason is None:
        return None
    return f"no agent offering {requirement.capability!r} accepts this input; {reason}"


def eligible(candidate: Candidate, requirement: Requirement) -> bool:
    """True when the agent may ever take the step (ignoring its current load)."""
    name = candidate.card.name
    if requirement.pin and name != requirement.pin:
        return False
    return name not in requirement.exclude and offers(candidate.card, requirement)


class Matcher(Protocol):
    """A scorer: picks one of the agents that could take a step right now."""

    #: Its name in explanations (``learned``, ``recent``, ``round_robin``).
    strategy: str

    def pick(
        self, pool: Sequence[Candidate], requirement: Requirement
    ) -> tuple[Candidate, list[AgentScore], str]:
        """The chosen agent of ``pool`` (never empty), every agent's score (lower is better)
        and why, in words."""
        ...


def _unavailable(candidate: Candidate) -> str:
    """Why an eligible agent that accepts the input cannot take the step now ("" if it can)."""
    if not candidate.usable:
        return "unavailable (circuit open, disconnected or draining)"
    if candidate.stats.drained:
        return "drained by an operator"
    if candidate.active >= candidate.card.max_concurrency:
        return "full"
    return ""


def _weighed(
    candidates: Iterable[Candidate], requirement: Requirement
) -> tuple[list[Candidate], list[AgentScore]]:
    """The agents that may take the step now, at most :data:`MAX_WEIGHED` of them besides
    those it avoids (all, for a pinned or preferred step), and why the first few that may
    not take it now cannot. Stops reading ``candidates`` there: the directory builds them
    lazily."""
    bounded = not (requirement.pin or requirement.prefer)
    pool: list[Candidate] = []
    benched: list[AgentScore] = []
    fresh = 0
    for candidate in candidates:
        if not eligible(candidate, requirement) or rejection(candidate.card, requirement):
            continue
        note = _unavailable(candidate)
        if note:
            if len(benched) < MAX_ALTERNATIVES:
                benched.append(AgentScore(agent=candidate.card.name, score=0.0, note=note))
            continue
        pool.append(candidate)
        if candidate.card.name not in requirement.avoid:
            fresh += 1
            if bounded and fresh >= MAX_WEIGHED:
                break
    return pool, benched


def _matched(candidates: Iterable[Candidate], requirement: Requirement) -> Candidate | None:
    """:func:`choose` with a matcher: filters, then the matcher scores, then the explanation."""
    matcher = requirement.matcher
    assert matcher is not None
    pool, benched = _weighed(candidates, requirement)
    if not pool:
        return None
    for candidate in pool:
        if candidate.card.name == requirement.prefer:
            requirement._choices[:] = [
                AgentChoice(
                    strategy=matcher.strategy,
                    score=0.0,
                    reason="it ran this attempt before the orchestrator restarted",
                )
            ]
            return candidate
    fresh = [c for c in pool if c.card.name not in requirement.avoid]
    if fresh and len(fresh) < len(pool):
        benched.extend(
            AgentScore(agent=c.card.name, score=0.0, note="failed this step")
            for c in pool
            if c.card.name in requirement.avoid
        )
        pool = fresh
    chosen, scores, reason = matcher.pick(pool, requirement)
    own = next((s for s in scores if s.agent == chosen.card.name), None)
    others = sorted((s for s in scores if s.agent != chosen.card.name), key=lambda s: s.score)
    requirement._choices[:] = [
        AgentChoice(
            strategy=matcher.strategy,
            score=own.score if own is not None else 0.0,
            reason=reason,
            alternatives=tuple([*others, *benched][:MAX_ALTERNATIVES]),
        )
    ]
    return chosen


def choose(candidates: Iterable[Candidate], requirement: Requirement) -> Candidate | None:
    """The best agent with room for the step right now, or None.

    With a :class:`Matcher` on the requirement, it scores the agents left and
    :attr:`Requirement.choice` says why; without one, today's fixed order decides. Either
    weighs the first :data:`MAX_WEIGHED` agents of ``candidates`` with room.
    """
    if requirement.matcher is not None:
        return _matched(candidates, requirement)
    best: tuple[tuple[float, ...], Candidate] | None = None
    for candidate in _weighed(candidates, requirement)[0]:
        stats = candidate.stats
        # An operator's weight makes the agent look less (or more) loaded and faster (or
        # slower) than it is: a weight of 0.5 gets work as if it were twice as busy and slow.
        weight = stats.weight
        score = (
            0.0 if candidate.card.name == requirement.prefer else 1.0,
            1.0 if candidate.card.name in requirement.avoid else 0.0,
            # Lower is better from here on.
            -round(stats.success_rate, 1),
            candidate.active / candidate.card.max_concurrency / weight,
            (stats.latency or 0.0) / weight,
            stats.last_assigned,
        )
        if best is None or score < best[0]:
            best = (score, candidate)
    return None if best is None else best[1]
