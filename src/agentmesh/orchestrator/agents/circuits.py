"""One circuit breaker per agent (pybreaker): failures open it, a half-open probe closes it.

The clock is ours, not pybreaker's: this module decides when an open circuit may send a
probe and moves the breaker to half-open itself when it does, so pybreaker only counts
failures and applies the probe's outcome (and tests can drive time with a fake clock).
"""

from __future__ import annotations

import contextlib
import itertools
import time
from collections.abc import Callable

import pybreaker
import structlog

from agentmesh.models import FailureCode
from agentmesh.orchestrator import metrics

log = structlog.get_logger(__name__)

#: Failure codes that count against an agent's circuit; any other failure (bad input, a bad
#: reference) says nothing about the agent's health.
AGENT_FAULTS = frozenset(
    {FailureCode.AGENT_LOST, FailureCode.TIMEOUT, FailureCode.ERROR, FailureCode.INVALID_OUTPUT}
)


class _AttemptFailed(Exception):
    """Stands for a failed attempt inside the breaker's bookkeeping."""


def _outcome(ok: bool) -> None:
    if not ok:
        raise _AttemptFailed


class _Alerts(pybreaker.CircuitBreakerListener):
    def __init__(self, circuit: AgentCircuit) -> None:
        self._circuit = circuit

    def state_change(self, cb: pybreaker.CircuitBreaker, old: object, new: object) -> None:
        state = getattr(new, "name", str(new))
        self._circuit.changed(state)
        metrics.CIRCUIT_OPEN.labels(self._circuit.agent).set(1 if state == "open" else 0)
        if state == "open":
            # An alert: error level, so log-based alerting picks it up.
            log.error("agent.circuit_opened", agent=self._circuit.agent)
        else:
            log.info("agent.circuit_" + state.replace("-", "_"), agent=self._circuit.agent)


class AgentCircuit:
    """Decides whether an agent may get work, from the outcomes of its recent attempts.

    Closed: any assignment. Open: none until ``reset_seconds`` have passed, then one probe.
    Half-open: one probe at a time; its success closes the circuit, its failure opens it
    again, and a probe that ends without an outcome (see :meth:`abandoned`) lets the next
    assignment probe instead.
    """

    def __init__(
        self,
        agent: str,
        *,
        fail_max: int,
        reset_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.agent = agent
        #: When the circuit last opened (by ``clock``); None unless it is open.
        self.opened_at: float | None = None
        self._reset_seconds = reset_seconds
        self._clock = clock
        #: The probe in flight while half-open, by the id :meth:`started` gave it.
        self._probe: int | None = None
        self._probe_ids = itertools.count(1)
        # pybreaker's own reset timer is never consulted: outcomes are not applied while open.
        self._breaker = pybreaker.CircuitBreaker(
            fail_max=fail_max, reset_timeout=reset_seconds, name=agent, listeners=[_Alerts(self)]
        )

    @property
    def state(self) -> str:
        """closed, open or half_open, as shown in ListAgents."""
        if self._probe_due():
            return "half_open"
        return str(self._breaker.current_state).replace("-", "_")

    def _probe_due(self) -> bool:
        return self.opened_at is not None and self._clock() - self.opened_at >= self._reset_seconds

    def changed(self, state: str) -> None:
        """The breaker entered ``state`` (pybreaker's name for it)."""
        self.opened_at = self._clock() if state == "open" else None

    def allows(self) -> bool:
        """True when the agent may take an assignment now (one probe at a time when half-open)."""
        current = self._breaker.current_state
        if current == "closed":
            return True
        if current == "open":
            return self._probe_due()
        return self._probe is None

    def started(self) -> int | None:
        """An assignment was sent. Returns its probe id when it is the half-open probe, to be
        handed to :meth:`abandoned` if it ends without an outcome; None otherwise."""
        if self._breaker.current_state == "open" and self._probe_due():
            self._breaker.half_open()
        if self._breaker.current_state != "half-open" or self._probe is not None:
            return None
        self._probe = next(self._probe_ids)
        return self._probe

    def record(self, ok: bool) -> None:
        """Account an attempt's outcome (infrastructure failures only, not bad input)."""
        self._probe = None
        if self._breaker.current_state == "open":
            # A late outcome of an assignment sent before the circuit opened: only a probe,
            # sent once the reset time has passed, may close it again.
            return
        # The breaker counts the outcome as it raises; the exception itself tells us nothing.
        with contextlib.suppress(_AttemptFailed, pybreaker.CircuitBreakerError):
            self._breaker.call(_outcome, ok)

    def abandoned(self, probe: int | None) -> None:
        """The assignment that :meth:`started` gave ``probe`` ended without an outcome
        (cancelled, the task's deadline, a failure that is not the agent's fault).

        It taught nothing about the agent, so the circuit stays half-open and the next
        assignment may probe; without this, the circuit would wait for that outcome forever.
        A no-op when ``probe`` is None or its outcome was recorded.
        """
        if probe is not None and probe == self._probe:
            self._probe = None
            log.info("agent.circuit_probe_abandoned", agent=self.agent)
