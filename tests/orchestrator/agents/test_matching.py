"""Which agent gets a step, decided on plain values (no sockets, no processes)."""

from __future__ import annotations

from collections.abc import Iterator

from agentmesh.models import AgentCard, Capability
from agentmesh.orchestrator.agents.learning import Learner, LearnerKnobs
from agentmesh.orchestrator.agents.matching import (
    MAX_WEIGHED,
    AgentStats,
    Candidate,
    Requirement,
    choose,
    eligible,
    rejection,
)

ECHO = Requirement("test.echo")


def _agent(
    name: str,
    *,
    active: int = 0,
    max_concurrency: int = 1,
    usable: bool = True,
    version: str = "1.0.0",
    capability: str = "test.echo",
    latency: float | None = None,
    successes: int = 0,
    failures: int = 0,
    last_assigned: float = 0.0,
) -> Candidate:
    card = AgentCard(
        name=name,
        endpoint=f"{name}:1",
        capabilities=(Capability(name=capability, version=version),),
        max_concurrency=max_concurrency,
    )
    stats = AgentStats(
        latency=latency, successes=successes, failures=failures, last_assigned=last_assigned
    )
    return Candidate(card=card, active=active, usable=usable, stats=stats)


def _chosen(candidates: list[Candidate], requirement: Requirement = ECHO) -> str | None:
    found = choose(candidates, requirement)
    return None if found is None else found.card.name


def test_a_pinned_step_goes_only_to_its_agent() -> None:
    idle, pinned = _agent("idle"), _agent("pinned", active=1, max_concurrency=2, latency=9.0)
    requirement = Requirement("test.echo", pin="pinned")
    assert _chosen([idle, pinned], requirement) == "pinned"
    assert not eligible(idle, requirement)


def test_a_pinned_step_waits_for_its_agent_rather_than_take_another() -> None:
    full = _agent("pinned", active=1)
    assert _chosen([_agent("idle"), full], Requirement("test.echo", pin="pinned")) is None


def test_an_excluded_agent_never_gets_the_step_even_when_it_is_the_only_one() -> None:
    only = _agent("only")
    requirement = Requirement("test.echo", exclude=frozenset({"only"}))
    assert not eligible(only, requirement)
    assert _chosen([only], requirement) is None


def test_an_avoided_agent_gets_the_step_only_when_no_other_can() -> None:
    # The avoided agent is otherwise the better choice: idle, fast and reliable.
    avoided = _agent("avoided", latency=0.1, successes=10)
    other = _agent("other", active=1, max_concurrency=2, latency=5.0)
    requirement = Requirement("test.echo", avoid=frozenset({"avoided"}))
    assert _chosen([avoided, other], requirement) == "other"
    assert _chosen([avoided, _agent("other", active=1)], requirement) == "avoided"
    assert eligible(avoided, requirement)


def test_a_preferred_agent_wins_whenever_it_has_room() -> None:
    preferred = _agent("preferred", active=2, max_concurrency=3, latency=5.0, failures=3)
    requirement = Requirement("test.echo", prefer="preferred")
    assert _chosen([_agent("idle", latency=0.1), preferred], requirement) == "preferred"
    full = _agent("preferred", active=3, max_concurrency=3)
    assert _chosen([_agent("idle"), full], requirement) == "idle"


def test_a_version_prefix_matches_whole_dotted_parts_only() -> None:
    agent = _agent("a", version="1.2.3")
    for prefix in ("", "1", "1.2", "1.2.3"):
        assert eligible(agent, Requirement("test.echo", version=prefix)), prefix
    for prefix in ("2", "1.3", "1.2.4", "1.2.3.0"):
        assert not eligible(agent, Requirement("test.echo", version=prefix)), prefix
    # "1.2" is not a string prefix match: 1.20 is another minor version.
    assert not eligible(_agent("b", version="1.20.0"), Requirement("test.echo", version="1.2"))


def test_the_agent_with_the_required_version_is_chosen_over_a_better_one_without() -> None:
    old = _agent("old", version="1.9.0", latency=0.1)
    new = _agent("new", version="2.0.1", active=1, max_concurrency=2, latency=3.0)
    assert _chosen([old, new], Requirement("test.echo", version="2")) == "new"


def test_an_agent_without_the_capability_is_never_eligible() -> None:
    other = _agent("other", capability="test.work")
    assert not eligible(other, ECHO)
    assert _chosen([other]) is None


def test_a_full_or_unusable_agent_is_skipped_but_stays_eligible() -> None:
    full = _agent("full", active=2, max_concurrency=2)
    unusable = _agent("unusable", usable=False)
    assert eligible(full, ECHO)
    assert eligible(unusable, ECHO)
    assert _chosen([full, unusable]) is None
    assert _chosen([full, unusable, _agent("spare", active=3, max_concurrency=4)]) == "spare"


def test_load_is_compared_as_a_share_of_each_agents_concurrency() -> None:
    # Both run one step; one of four slots is a lighter load than one of two.
    wide = _agent("wide", active=1, max_concurrency=4)
    assert _chosen([_agent("half", active=1, max_concurrency=2), wide]) == "wide"


def test_a_lighter_load_beats_a_lower_latency() -> None:
    busy_fast = _agent("busy-fast", active=1, max_concurrency=2, latency=0.1)
    idle_slow = _agent("idle-slow", max_concurrency=2, latency=2.0)
    assert _chosen([busy_fast, idle_slow]) == "idle-slow"


def test_among_equally_loaded_agents_the_faster_one_wins() -> None:
    slow, fast = _agent("slow", latency=2.0), _agent("fast", latency=0.5)
    assert _chosen([slow, fast]) == "fast"
    assert _chosen([fast, slow]) == "fast"


def test_a_lower_success_rate_loses_even_to_a_busier_slower_agent() -> None:
    failing = _agent("failing", latency=0.1, successes=1, failures=1)
    reliable = _agent("reliable", active=1, max_concurrency=2, latency=3.0, successes=5)
    assert _chosen([failing, reliable]) == "reliable"


def test_an_agent_without_history_counts_as_reliable() -> None:
    new = _agent("new", latency=0.2)
    proven = _agent("proven", latency=0.5, successes=20)
    assert new.stats.success_rate == 1.0
    assert _chosen([proven, new]) == "new"


def test_success_rates_that_round_alike_leave_the_choice_to_latency() -> None:
    # 99 % and 100 % are the same to one decimal: one unlucky failure is not held against it.
    unlucky = _agent("unlucky", latency=0.2, successes=99, failures=1)
    spotless = _agent("spotless", latency=0.9, successes=100)
    assert _chosen([spotless, unlucky]) == "unlucky"


def test_equal_agents_take_turns_round_robin() -> None:
    names = ("a", "b", "c")
    last: dict[str, float] = dict.fromkeys(names, 0.0)
    picked = []
    for clock in range(1, 7):
        chosen = _chosen([_agent(n, last_assigned=last[n]) for n in names])
        assert chosen is not None
        last[chosen] = float(clock)
        picked.append(chosen)
    assert picked == ["a", "b", "c", "a", "b", "c"]


def test_latency_is_a_moving_average_that_weighs_recent_attempts_more() -> None:
    stats = AgentStats()
    stats.record(1.0, ok=True)
    assert stats.latency == 1.0
    stats.record(2.0, ok=False)
    assert stats.latency is not None
    assert 1.0 < stats.latency < 1.5
    assert (stats.successes, stats.failures, stats.success_rate) == (1, 1, 0.5)


def _schema_agent(name: str, schema: dict[str, object]) -> Candidate:
    card = AgentCard(
        name=name,
        endpoint=f"{name}:1",
        # A fresh dict per agent, as each registration brings its own copy.
        capabilities=(Capability(name="test.echo", input_schema=dict(schema)),),
        max_concurrency=1,
    )
    return Candidate(card=card, active=0, usable=True, stats=AgentStats())


def test_agents_declaring_one_input_schema_share_one_verdict_per_step() -> None:
    # Issue 9: a verdict per agent per waiting step was ten million of them with a thousand
    # agents and ten thousand steps; equal schemas must share one.
    strings = {"type": "object", "properties": {"text": {"type": "string"}}}
    numbers = {"type": "object", "properties": {"text": {"type": "number"}}}
    agents = [_schema_agent(f"s{i}", strings) for i in range(50)]
    agents.append(_schema_agent("numbers", numbers))
    requirement = Requirement("test.echo", payload={"text": 1})
    assert _chosen(agents, requirement) == "numbers"
    assert len(requirement._verdicts) == 2
    assert rejection(agents[0].card, requirement) is not None
    assert rejection(agents[-1].card, requirement) is None


def test_a_declaration_copied_with_another_schema_is_judged_by_the_new_one() -> None:
    strict = Capability(name="test.echo", input_schema={"type": "object", "required": ["a"]})
    strict.input_schema_key()  # cached on the declaration, and carried along by a copy
    loose = strict.model_copy(update={"input_schema": {"type": "object"}})
    card = AgentCard(name="a", endpoint="a:1", capabilities=(loose,))
    assert loose.input_schema_key() != strict.input_schema_key()
    assert rejection(card, Requirement("test.echo", payload={})) is None


class _Directory:
    """A long directory of agents that counts how many matching read."""

    def __init__(self, candidates: list[Candidate]) -> None:
        self.candidates = candidates
        self.read = 0

    def __iter__(self) -> Iterator[Candidate]:
        for candidate in self.candidates:
            self.read += 1
            yield candidate


def test_matching_weighs_a_few_agents_with_room_not_the_whole_directory() -> None:
    # Ten full agents first, then a hundred with room: matching reads past the full ones
    # and stops once it has MAX_WEIGHED agents to choose from, learner or fixed order.
    full = [_agent(f"full-{i}", active=1) for i in range(10)]
    free = [_agent(f"free-{i}") for i in range(100)]
    for matcher in (Learner(LearnerKnobs(seed=7)), None):
        directory = _Directory(full + free)
        requirement = Requirement("test.echo", matcher=matcher)
        chosen = choose(directory, requirement)
        assert chosen is not None
        assert chosen.card.name.startswith("free-")
        assert directory.read == len(full) + MAX_WEIGHED


def test_a_pinned_or_preferred_step_finds_its_agent_at_the_end_of_a_long_directory() -> None:
    agents = [_agent(f"free-{i}") for i in range(100)]
    last = agents[-1].card.name
    learner = Learner(LearnerKnobs(seed=8))
    for requirement in (
        Requirement("test.echo", pin=last, matcher=learner),
        Requirement("test.echo", prefer=last, matcher=learner),
    ):
        chosen = choose(_Directory(agents), requirement)
        assert chosen is not None
        assert chosen.card.name == last


def test_a_step_that_avoids_agents_still_weighs_as_many_others() -> None:
    agents = [_agent(f"free-{i}") for i in range(100)]
    avoided = frozenset(a.card.name for a in agents[:5])
    directory = _Directory(agents)
    requirement = Requirement("test.echo", avoid=avoided, matcher=Learner(LearnerKnobs(seed=9)))
    chosen = choose(directory, requirement)
    assert chosen is not None
    assert chosen.card.name not in avoided
    assert directory.read == len(avoided) + MAX_WEIGHED
