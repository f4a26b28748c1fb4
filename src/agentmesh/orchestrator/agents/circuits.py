"""One circuit breaker per agent (pybreaker): failures open it, a half-open probe closes it."""

from __future__ import annotations

import contextlib
import time

import pybreaker
import structlog

from agentmesh.orchestrator import metrics

log = structlog.get_logger(__name__)


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
        self._circuit.opened_at = time.monotonic() if state == "open" else None
        metrics.CIRCUIT_OPEN.labels(self._circuit.agent).set(1 if state == "open" else 0)
        if state == "open":
            # An alert: error level, so log-based alerting picks it up.
            log.error("agent.circuit_opened", agent=self._circuit.agent)
        else:
            log.info("agent.circuit_" + state.replace("-", "_"), agent=self._circuit.agent)


class AgentCircuit:
    """Decides whether an agent may get work, from the outcomes of its recent attempts."""

    def __init__(self, agent: str, *, fail_max: int, reset_seconds: float) -> None:
        self.agent = agent
        self.opened_at: float | None = None
        self._reset_seconds = reset_seconds
        self._probing = False
        self._breaker = pybreaker.CircuitBreaker(
            fail_max=fail_max, reset_timeout=reset_seconds, name=agent, listeners=[_Alerts(self)]
        )

    @property
    def state(self) -> str:
        """closed, open or half_open, as shown in ListAgents."""
        if self.opened_at is not None and self._probe_due():
            return "half_open"
        return str(self._breaker.current_state).replace("-", "_")

    def _probe_due(self) -> bool:
        return (
            self.opened_at is not None and time.monotonic() - self.opened_at >= self._reset_seconds
        )

    def allows(self) -> bool:
        """True when the agent may take an assignment now (one probe at a time when half-open)."""
        if self.opened_at is None:
            return self._breaker.current_state != "half-open" or not self._probing
        return self._probe_due() and not self._probing

    def started(self) -> None:
        """An assignment was sent; while half-open it is the probe."""
        if self.opened_at is not None or self._breaker.current_state == "half-open":
            self._probing = True

    def record(self, ok: bool) -> None:
        """Account an attempt's outcome (infrastructure failures only, not bad input)."""
        self._probing = False
        # The breaker counts the outcome as it raises; the exception itself tells us nothing.
        with contextlib.suppress(_AttemptFailed, pybreaker.CircuitBreakerError):
            self._breaker.call(_outcome, ok)
