"""matching: which scorer gets a mixed fleet's work done soonest, and with fewest failures.

A seeded discrete-event simulation (virtual time, no processes): the orchestrator's own
matching code (:func:`~agentmesh.orchestrator.agents.matching.choose` with the same
:class:`AgentStats`, arms and :class:`Requirement` the registry uses) assigns a stream of
one-step tasks to four agents of concurrency 4:

- **fast**: 0.1 s a step; **slow**: 0.6 s; **flaky**: 0.1 s, failing (retryably) 35 % of
  attempts; **turning**: 0.1 s until half the steps have arrived, then 1.5 s.

The workload is one workflow of ``STAGES`` stages, each a fan-out of ``WIDTH`` steps; a stage
starts when the one before has ended (so the makespan is the sum of each stage's slowest
step: what a scorer that puts one step on a slow agent costs). An agent's time for a step
varies ±20 % (log-normal); a failed attempt is retried, up to 3 attempts in all, on another
agent when one has room, as the dispatcher does; steps that find no room wait in line. Each
scorer meets the same luck: an attempt's time and failure are drawn from the seed, step,
attempt and agent alone. The same run without the turning agent ("steady") shows the
scorers where nothing changes. Reported per scorer, averaged over ``SEEDS``: makespan, mean
step latency, failed attempts and failed steps; the baseline of each is today's scorer
(``recent``), and the learner is held to a makespan no longer than today's.

Simulated because the question is the policy's: real processes would add the mesh's own
noise and minutes of wall time per scorer, while the same seeds give the same answer on
every machine.
"""

from __future__ import annotations

import heapq
import itertools
import math
import random
import statistics
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from agentmesh.models import AgentCard, Capability
from agentmesh.orchestrator.agents.learning import Learner, LearnerKnobs, RoundRobin
from agentmesh.orchestrator.agents.matching import (
    AgentStats,
    Candidate,
    Matcher,
    Requirement,
    choose,
)
from benchmarks.mesh import Profiling
from benchmarks.report import Measurement

NAME = "matching"
CAPABILITY = "bench.work"
STAGES = 60
WIDTH = 8
CONCURRENCY = 4
MAX_ATTEMPTS = 3
SEEDS = (1, 2, 3)
SCORERS = ("round_robin", "recent", "learned")


@dataclass(frozen=True, slots=True)
class Profile:
    """How one simulated agent behaves."""

    name: str
    seconds: float
    failure_rate: float = 0.0
    #: From this share of the arrivals on, a step takes ``then_seconds``.
    turns_at: float = 2.0
    then_seconds: float = 0.0


MIXED = (
    Profile("fast", 0.1),
    Profile("slow", 0.6),
    Profile("flaky", 0.1, failure_rate=0.35),
    Profile("turning", 0.1, turns_at=0.5, then_seconds=1.5),
)
STEADY = MIXED[:3]


@dataclass(slots=True)
class _Agent:
    profile: Profile
    card: AgentCard
    stats: AgentStats
    active: int = 0


@dataclass(slots=True)
class _Step:
    index: int
    arrived: float
    attempt: int = 1
    failed_on: set[str] = field(default_factory=set)


@dataclass(frozen=True, slots=True)
class Outcome:
    """One scorer's run over one fleet and seed."""

    makespan: float
    mean_latency: float
    attempt_failure_rate: float
    step_failure_rate: float


def _scorer(name: str, seed: int, clock: _Clock) -> Matcher | None:
    if name == "round_robin":
        return RoundRobin()
    if name == "learned":
        return Learner(LearnerKnobs(seed=seed), clock)
    return None  # today's fixed order: choose() without a matcher


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def simulate(fleet: tuple[Profile, ...], scorer: str, seed: int) -> Outcome:
    """Run ``STAGES`` stages of ``WIDTH`` steps through ``fleet`` with ``scorer``: each
    stage starts when the one before has ended. Deterministic for a seed."""
    clock = _Clock()
    matcher = _scorer(scorer, seed, clock)
    agents = {
        p.name: _Agent(
            p,
            AgentCard(
                name=p.name,
                endpoint=f"{p.name}:1",
                capabilities=(Capability(name=CAPABILITY, version="1.0.0"),),
                max_concurrency=CONCURRENCY,
            ),
            AgentStats(half_life=LearnerKnobs().half_life_seconds),
        )
        for p in fleet
    }
    #: (time, order, step, agent, ok, seconds the attempt took)
    events: list[tuple[float, int, _Step, str, bool, float]] = []
    order = itertools.count()
    waiting: deque[_Step] = deque()
    attempts = failures = failed_steps = 0
    latencies: list[float] = []
    stage = 0
    left = 0

    def assign(step: _Step) -> bool:
        nonlocal attempts
        candidates = [
            Candidate(card=a.card, active=a.active, usable=True, stats=a.stats)
            for a in agents.values()
        ]
        requirement = Requirement(CAPABILITY, avoid=frozenset(step.failed_on), matcher=matcher)
        chosen = choose(candidates, requirement)
        if chosen is None:
            return False
        agent = agents[chosen.card.name]
        agent.active += 1
        agent.stats.last_assigned = clock.now
        attempts += 1
        # The agent's behaviour is drawn from the seed, step, attempt and agent alone: every
        # scorer meets the same luck.
        profile = agent.profile
        luck = random.Random(f"{seed}/{step.index}/{step.attempt}/{profile.name}")
        turned = profile.then_seconds and stage >= profile.turns_at * STAGES
        seconds = (profile.then_seconds if turned else profile.seconds) * math.exp(
            luck.gauss(0.0, 0.2)
        )
        ok = luck.random() >= profile.failure_rate
        heapq.heappush(events, (clock.now + seconds, next(order), step, profile.name, ok, seconds))
        return True

    def dispatch() -> None:
        for _ in range(len(waiting)):
            step = waiting.popleft()
            if not assign(step):
                waiting.append(step)

    def start_stage() -> None:
        nonlocal left
        left = WIDTH
        waiting.extend(_Step(stage * WIDTH + i, clock.now) for i in range(WIDTH))
        dispatch()

    start_stage()
    while events:
        now, _, step, name, ok, seconds = heapq.heappop(events)
        clock.now = now
        agent = agents[name]
        agent.active -= 1
        agent.stats.record(seconds, ok, CAPABILITY, now=now)
        if not ok:
            failures += 1
        if ok or step.attempt >= MAX_ATTEMPTS:
            latencies.append(now - step.arrived)
            failed_steps += not ok
            left -= 1
        else:
            step.attempt += 1
            step.failed_on.add(name)
            waiting.appendleft(step)
        if left == 0 and stage + 1 < STAGES:
            stage += 1
            start_stage()
        else:
            dispatch()
    return Outcome(
        makespan=clock.now,
        mean_latency=statistics.fmean(latencies),
        attempt_failure_rate=failures / attempts,
        step_failure_rate=failed_steps / (STAGES * WIDTH),
    )


def compare(fleet: tuple[Profile, ...]) -> dict[str, Outcome]:
    """Every scorer's outcome on ``fleet``, averaged over the seeds."""
    results: dict[str, Outcome] = {}
    for scorer in SCORERS:
        runs = [simulate(fleet, scorer, seed) for seed in SEEDS]
        results[scorer] = Outcome(
            *(statistics.fmean(getattr(r, f) for r in runs) for f in Outcome.__slots__)
        )
    return results


async def run(folder: Path, profiling: Profiling | None = None) -> list[Measurement]:
    """Run the benchmark; return its measurements (no processes, so nothing to profile)."""
    measurements: list[Measurement] = []
    for fleet_name, fleet in (("mixed", MIXED), ("steady", STEADY)):
        results = compare(fleet)
        today = results["recent"]
        for scorer in SCORERS:
            outcome = results[scorer]
            better = scorer != "learned" or None
            measurements += [
                Measurement(
                    NAME,
                    f"{fleet_name} {scorer} makespan",
                    outcome.makespan,
                    "s",
                    baseline=today.makespan,
                    baseline_name="recent",
                    target="<= 1.00" if better is None else "",
                    ok=outcome.makespan <= today.makespan * 1.0001 if better is None else None,
                ),
                Measurement(
                    NAME,
                    f"{fleet_name} {scorer} mean step latency",
                    outcome.mean_latency,
                    "s",
                    baseline=today.mean_latency,
                    baseline_name="recent",
                ),
                Measurement(
                    NAME,
                    f"{fleet_name} {scorer} failed attempts",
                    100 * outcome.attempt_failure_rate,
                    "%",
                    baseline=100 * today.attempt_failure_rate,
                    baseline_name="recent",
                ),
                Measurement(
                    NAME,
                    f"{fleet_name} {scorer} failed steps",
                    100 * outcome.step_failure_rate,
                    "%",
                ),
            ]
    return measurements
