"""The learner: Thompson sampling over agents' success and latency per capability, bounded by
room, circuits and drains, exploring, forgetting; and the why on the step's RUNNING event."""

from __future__ import annotations

import collections
from pathlib import Path

from agentmesh.agent import AgentServer, AgentSettings
from agentmesh.models import AgentCard, Capability, EventKind, Plan, StepSpec, StepState, TaskState
from agentmesh.orchestrator import Orchestrator
from agentmesh.orchestrator.agents.learning import Learner, LearnerKnobs, Recent, RoundRobin
from agentmesh.orchestrator.agents.matching import AgentStats, Candidate, Requirement, choose
from tests.support.agents import FaultyAgent
from tests.support.mesh import client, wait_for_agents


class Clock:
    """A clock the test moves by hand, for evidence to fade by."""

    def __init__(self) -> None:
        self.now = 1.0

    def __call__(self) -> float:
        return self.now


def _agent(name: str, *, active: int = 0, usable: bool = True, drained: bool = False) -> Candidate:
    card = AgentCard(
        name=name,
        endpoint=f"{name}:1",
        capabilities=(Capability(name="test.echo", version="1.0.0"),),
        max_concurrency=4,
    )
    stats = AgentStats(drained=drained, half_life=60.0)
    return Candidate(card=card, active=active, usable=usable, stats=stats)


def _teach(candidate: Candidate, seconds: float, ok: bool, times: int, now: float) -> None:
    for _ in range(times):
        candidate.stats.record(seconds, ok, "test.echo", now=now)


def _picks(candidates: list[Candidate], learner: Learner, n: int) -> collections.Counter[str]:
    counts: collections.Counter[str] = collections.Counter()
    for _ in range(n):
        chosen = choose(candidates, Requirement("test.echo", matcher=learner))
        assert chosen is not None
        counts[chosen.card.name] += 1
    return counts


def test_the_learner_sends_most_work_to_the_fastest_reliable_agent() -> None:
    clock = Clock()
    fast, slow, flaky = _agent("fast"), _agent("slow"), _agent("flaky")
    _teach(fast, 0.1, True, 20, clock.now)
    _teach(slow, 1.0, True, 20, clock.now)
    _teach(flaky, 0.1, True, 10, clock.now)
    _teach(flaky, 0.1, False, 10, clock.now)
    counts = _picks([fast, slow, flaky], Learner(LearnerKnobs(seed=1), clock), 200)
    assert counts["fast"] >= 170, counts
    assert counts["slow"] < counts["fast"] / 10, counts


def test_a_new_agent_is_tried_beside_one_with_a_good_record() -> None:
    clock = Clock()
    known, new = _agent("known"), _agent("new")
    _teach(known, 0.1, True, 50, clock.now)
    counts = _picks([known, new], Learner(LearnerKnobs(seed=2, explore=0.0), clock), 200)
    assert counts["new"] >= 5, counts


def test_an_agent_that_failed_long_ago_gets_work_again_as_its_record_fades() -> None:
    clock = Clock()
    steady, recovered = _agent("steady"), _agent("recovered")
    _teach(steady, 0.1, True, 5, clock.now)
    _teach(recovered, 0.1, False, 30, clock.now)
    learner = Learner(LearnerKnobs(seed=3, explore=0.0), clock)
    before = _picks([steady, recovered], learner, 200)
    clock.now += 600  # ten half-lives: both records fade to the prior
    after = _picks([steady, recovered], learner, 200)
    assert before["recovered"] <= 5, before
    assert after["recovered"] >= 40, after


def test_the_learner_never_picks_a_full_drained_or_unusable_agent_and_says_why() -> None:
    clock = Clock()
    full, drained, broken, free = (
        _agent("full", active=4),
        _agent("drained", drained=True),
        _agent("broken", usable=False),
        _agent("free"),
    )
    for candidate in (full, drained, broken):
        _teach(candidate, 0.01, True, 50, clock.now)
    _teach(free, 5.0, True, 5, clock.now)
    requirement = Requirement("test.echo", matcher=Learner(LearnerKnobs(seed=4), clock))
    chosen = choose([full, drained, broken, free], requirement)
    assert chosen is free
    choice = requirement.choice
    assert choice is not None
    assert choice.strategy == "learned"
    assert choice.score > 0
    notes = {a.agent: a.note for a in choice.alternatives}
    assert notes == {
        "full": "full",
        "drained": "drained by an operator",
        "broken": "unavailable (circuit open, disconnected or draining)",
    }
    assert choose([full, drained, broken], requirement) is None


def test_a_step_that_failed_on_an_agent_goes_elsewhere_and_the_baselines_explain_too() -> None:
    first, second = _agent("first"), _agent("second")
    second.stats.last_assigned = 5.0
    for matcher in (Learner(LearnerKnobs(seed=5)), Recent(), RoundRobin()):
        requirement = Requirement("test.echo", avoid=frozenset({"first"}), matcher=matcher)
        assert choose([first, second], requirement) is second
        choice = requirement.choice
        assert choice is not None
        assert choice.strategy == matcher.strategy
        assert [(a.agent, a.note) for a in choice.alternatives] == [("first", "failed this step")]
    plain = Requirement("test.echo", matcher=RoundRobin())
    assert choose([first, second], plain) is first  # assigned least recently


async def test_the_running_event_says_why_the_agent_got_the_step(
    orchestrator: Orchestrator, certs: Path
) -> None:
    address = [f"localhost:{orchestrator.port}"]
    one = AgentSettings(certs_dir=certs, name="echo-1", orchestrators=address)
    two = AgentSettings(certs_dir=certs, name="echo-2", orchestrators=address)
    plan = Plan(steps=(StepSpec(id="echo", capability="test.echo", input={"value": 1}),))
    async with (
        AgentServer(FaultyAgent(), one),
        AgentServer(FaultyAgent(), two),
        client(orchestrator, certs) as alice,
    ):
        await wait_for_agents(alice, "echo-1", "echo-2")
        task_id = await alice.submit(plan=plan)
        events = [event async for event in alice.watch(task_id)]
        task = await alice.get(task_id)
    (running,) = [
        e for e in events if e.kind is EventKind.STEP_STATE and e.state == StepState.RUNNING.value
    ]
    assert task.state is TaskState.SUCCEEDED
    assert running.choice is not None
    assert running.choice.strategy == "learned"
    assert running.choice.score > 0
    (other,) = running.choice.alternatives
    assert {other.agent, running.agent} == {"echo-1", "echo-2"}
    assert other.score >= running.choice.score or "exploring" in running.choice.reason
