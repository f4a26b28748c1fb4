"""Which agent gets a step: capability and version, pins and exclusions, an input its
schema accepts, spare capacity, recent latency and success rate, spread fairly."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from agentmesh import schemas
from agentmesh.models import JSON, AgentCard, Capability, version_matches


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

    def record(self, seconds: float, ok: bool) -> None:
        """Account one finished attempt."""
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
    #: Each agent's verdict on ``payload``, by capability declaration: matching runs often.
    _verdicts: dict[int, tuple[Capability, str | None]] = field(
        default_factory=dict, compare=False, repr=False
    )


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
    cached = requirement._verdicts.get(id(capability))
    # The declaration is kept with its verdict, so that a recycled id() never matches.
    if cached is None or cached[0] is not capability:
        problem = schemas.first_error(capability.input_schema, requirement.payload)
        cached = requirement._verdicts[id(capability)] = (capability, problem)
    return cached[1]


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


def choose(candidates: Iterable[Candidate], requirement: Requirement) -> Candidate | None:
    """The best agent with room for the step right now, or None."""
    best: tuple[tuple[float, ...], Candidate] | None = None
    for candidate in candidates:
        if not candidate.usable or candidate.active >= candidate.card.max_concurrency:
            continue
        if candidate.stats.drained:
            continue
        if not eligible(candidate, requirement) or rejection(candidate.card, requirement):
            continue
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
