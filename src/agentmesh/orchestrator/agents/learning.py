"""Scorers for matching: a learner that treats agents as a bandit's arms, today's fixed order,
and plain round-robin (the last two as baselines).

The learner (:class:`Learner`) does Thompson sampling per capability. For each agent that could
take the step it draws a success probability from Beta(prior + decayed successes, prior +
decayed failures) and a mean latency around the decayed mean it has seen (the spread narrowing
as evidence grows), and scores the agent by the expected seconds to a success, ``latency /
probability``, made worse by its load and divided by the operator's weight; the lowest draw
wins. Why Thompson sampling: it explores in proportion to what it does not know, with no
schedule to tune, and a draw per decision keeps equal agents sharing work. Why decay by time
rather than by count: an agent that stopped getting work (slow, or its circuit opened) sees its
evidence fade back towards the prior, so it is tried again after a while and a recovered agent
wins back its share; an agent that turns slow loses its old good record within a half-life.
A new agent's latency prior is the mean of its peers' (assumed average, uncertain), its
success prior Beta(``learn_prior_successes``, ``learn_prior_failures``). On top, with
probability ``learn_explore`` a uniformly random agent of those with room is taken, a floor
of exploration when every draw is confident.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from agentmesh.models import AgentScore
from agentmesh.orchestrator.agents.matching import Candidate, Matcher, Requirement

#: Latency assumed of an agent on a capability no agent has finished an attempt of yet.
_NO_LATENCY = 1.0
#: A draw's success probability is never taken below this (no division by ~0).
_FLOOR = 0.02


@dataclass(frozen=True, slots=True)
class LearnerKnobs:
    """The learner's settings (``AGENTMESH_LEARN_*``); see docs/operations.rst."""

    #: Beta prior of a new agent's success probability.
    prior_successes: float = 1.0
    prior_failures: float = 1.0
    #: Spread of the latency draw, in log space, with no evidence; it narrows as
    #: 1/sqrt(1 + attempts).
    latency_spread: float = 0.5
    #: Evidence halves every this many seconds.
    half_life_seconds: float = 60.0
    #: Share of decisions that pick a random agent with room.
    explore: float = 0.05
    #: How much a full agent's expected time grows (0.5: one at full load looks 1.5x slower).
    load_penalty: float = 0.5
    #: Seed of the draws (None: from the OS); a seed makes decisions reproducible.
    seed: int | None = None


class Learner:
    """Thompson sampling over success and latency, per capability (see the module's text)."""

    strategy = "learned"

    def __init__(
        self, knobs: LearnerKnobs | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        """``clock`` is what evidence fades by: the stats' record times must be of it too."""
        self.knobs = knobs or LearnerKnobs()
        self._rng = random.Random(self.knobs.seed)
        self._clock = clock

    def pick(
        self, pool: Sequence[Candidate], requirement: Requirement
    ) -> tuple[Candidate, list[AgentScore], str]:
        """The agent of ``pool`` with the lowest drawn expected seconds per success."""
        knobs = self.knobs
        capability = requirement.capability
        latencies = [
            arm.latency
            for c in pool
            if (arm := c.stats.arms.get(capability)) is not None and arm.latency is not None
        ]
        prior_latency = sum(latencies) / len(latencies) if latencies else _NO_LATENCY
        scores: list[AgentScore] = []
        best: tuple[float, Candidate] | None = None
        now = self._clock()
        for candidate in pool:
            stats = candidate.stats
            arm = stats.arm(capability)
            arm.decay(now, knobs.half_life_seconds)
            probability = self._rng.betavariate(
                knobs.prior_successes + arm.successes, knobs.prior_failures + arm.failures
            )
            mean = arm.latency if arm.latency is not None else prior_latency
            spread = knobs.latency_spread / math.sqrt(1 + arm.samples)
            latency = mean * math.exp(self._rng.gauss(0.0, spread))
            load = candidate.active / candidate.card.max_concurrency
            score = (
                latency / max(probability, _FLOOR) * (1 + knobs.load_penalty * load) / stats.weight
            )
            scores.append(AgentScore(agent=candidate.card.name, score=round(score, 6)))
            if best is None or score < best[0]:
                best = (score, candidate)
        assert best is not None
        if len(pool) > 1 and self._rng.random() < knobs.explore:
            chosen = self._rng.choice(list(pool))
            return chosen, scores, "exploring: a random agent with room"
        return (
            best[1],
            scores,
            "lowest sampled seconds per success (latency / success probability, by load and"
            " weight)",
        )


class Recent:
    """Today's fixed order as a :class:`Matcher`: recent success rate, load, latency,
    round-robin (the operator's weight dividing load and latency)."""

    strategy = "recent"

    def pick(
        self, pool: Sequence[Candidate], requirement: Requirement
    ) -> tuple[Candidate, list[AgentScore], str]:
        """The first agent of ``pool`` in that order."""

        def key(c: Candidate) -> tuple[float, ...]:
            stats, weight = c.stats, c.stats.weight
            return (
                -round(stats.success_rate, 1),
                c.active / c.card.max_concurrency / weight,
                (stats.latency or 0.0) / weight,
                stats.last_assigned,
            )

        chosen = min(pool, key=key)
        scores = [
            AgentScore(
                agent=c.card.name,
                score=round((c.stats.latency or 0.0) / max(c.stats.success_rate, _FLOOR), 6),
            )
            for c in pool
        ]
        return chosen, scores, "best recent success rate, then least loaded, then fastest"


class RoundRobin:
    """Each step to the agent with room that was assigned least recently (a baseline)."""

    strategy = "round_robin"

    def pick(
        self, pool: Sequence[Candidate], requirement: Requirement
    ) -> tuple[Candidate, list[AgentScore], str]:
        """The agent of ``pool`` whose last assignment is the oldest."""
        ordered = sorted(pool, key=lambda c: c.stats.last_assigned)
        scores = [AgentScore(agent=c.card.name, score=float(i)) for i, c in enumerate(ordered)]
        return ordered[0], scores, "assigned least recently"


STRATEGIES = ("learned", "recent", "round_robin")


def matcher(
    strategy: str, knobs: LearnerKnobs | None = None, clock: Callable[[], float] = time.monotonic
) -> Matcher:
    """The scorer named ``strategy`` (one of :data:`STRATEGIES`)."""
    if strategy == "recent":
        return Recent()
    if strategy == "round_robin":
        return RoundRobin()
    return Learner(knobs, clock)
