"""An agent's circuit, transition by transition, on a clock the test moves (no sockets)."""

from __future__ import annotations

from dataclasses import dataclass

from structlog.testing import capture_logs

from agentmesh.orchestrator.agents.circuits import AgentCircuit

FAIL_MAX = 3
RESET = 10.0


@dataclass
class FakeClock:
    """A monotonic clock that moves only when the test says so."""

    now: float = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def _circuit(clock: FakeClock) -> AgentCircuit:
    return AgentCircuit("agent-a", fail_max=FAIL_MAX, reset_seconds=RESET, clock=clock)


def _opened(clock: FakeClock) -> AgentCircuit:
    circuit = _circuit(clock)
    for _ in range(FAIL_MAX):
        circuit.started()
        circuit.record(False)
    assert circuit.state == "open"
    return circuit


def _half_open(clock: FakeClock) -> AgentCircuit:
    circuit = _opened(clock)
    clock.advance(RESET)
    assert circuit.state == "half_open"
    return circuit


def test_a_closed_circuit_allows_any_number_of_assignments() -> None:
    circuit = _circuit(FakeClock())
    for _ in range(10):
        assert circuit.allows()
        assert circuit.started() is None
    assert circuit.state == "closed"


def test_consecutive_agent_failures_open_the_circuit_and_a_success_resets_the_count() -> None:
    circuit = _circuit(FakeClock())
    for _ in range(FAIL_MAX - 1):
        circuit.record(False)
    circuit.record(True)
    for _ in range(FAIL_MAX - 1):
        circuit.record(False)
    assert circuit.state == "closed"
    assert circuit.allows()
    circuit.record(False)
    assert circuit.state == "open"
    assert not circuit.allows()


def test_an_open_circuit_allows_nothing_until_the_reset_time_has_passed() -> None:
    clock = FakeClock()
    circuit = _opened(clock)
    clock.advance(RESET - 0.01)
    assert circuit.state == "open"
    assert not circuit.allows()
    clock.advance(0.01)
    assert circuit.state == "half_open"
    assert circuit.allows()


def test_a_half_open_circuit_sends_one_probe_at_a_time() -> None:
    circuit = _half_open(FakeClock())
    probe = circuit.started()
    assert probe is not None
    assert circuit.state == "half_open"
    assert not circuit.allows()


def test_a_good_probe_closes_the_circuit() -> None:
    circuit = _half_open(FakeClock())
    circuit.started()
    circuit.record(True)
    assert circuit.state == "closed"
    assert circuit.allows()


def test_a_failed_probe_opens_the_circuit_for_another_reset_time() -> None:
    clock = FakeClock()
    circuit = _half_open(clock)
    circuit.started()
    clock.advance(RESET / 2)
    circuit.record(False)
    assert circuit.state == "open"
    clock.advance(RESET - 0.01)
    assert not circuit.allows()
    clock.advance(0.01)
    assert circuit.allows()


def test_a_probe_cancelled_without_an_outcome_lets_the_next_assignment_probe() -> None:
    circuit = _half_open(FakeClock())
    probe = circuit.started()
    assert not circuit.allows()
    circuit.abandoned(probe)
    assert circuit.state == "half_open"
    assert circuit.allows()
    second = circuit.started()
    assert second is not None
    assert second != probe
    assert not circuit.allows()
    circuit.record(True)
    assert circuit.state == "closed"


def test_abandoning_a_probe_whose_outcome_was_recorded_changes_nothing() -> None:
    clock = FakeClock()
    circuit = _half_open(clock)
    probe = circuit.started()
    circuit.record(False)
    circuit.abandoned(probe)
    assert circuit.state == "open"
    assert not circuit.allows()


def test_abandoning_an_old_probe_does_not_release_the_probe_in_flight() -> None:
    clock = FakeClock()
    circuit = _half_open(clock)
    first = circuit.started()
    circuit.record(False)  # the first probe failed: open again
    clock.advance(RESET)
    second = circuit.started()
    assert second is not None
    circuit.abandoned(first)  # the first probe's slot is only released now
    assert not circuit.allows()
    circuit.abandoned(None)  # an assignment that was not a probe
    assert not circuit.allows()


def test_a_late_success_of_an_assignment_sent_before_the_circuit_opened_does_not_close_it() -> None:
    clock = FakeClock()
    circuit = _opened(clock)
    circuit.record(True)
    assert circuit.state == "open"
    clock.advance(RESET)
    circuit.record(True)  # not a probe: no probe was sent
    assert circuit.state == "half_open"
    assert circuit.allows()


def test_each_transition_is_logged_and_opening_is_an_alert() -> None:
    clock = FakeClock()
    with capture_logs() as logs:
        circuit = _half_open(clock)
        circuit.abandoned(circuit.started())
        circuit.started()
        circuit.record(True)
    assert [(e["event"], e["log_level"]) for e in logs] == [
        ("agent.circuit_opened", "error"),
        ("agent.circuit_half_open", "info"),
        ("agent.circuit_probe_abandoned", "info"),
        ("agent.circuit_closed", "info"),
    ]
