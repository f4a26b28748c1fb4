"""Prometheus metrics of the orchestrator, served over HTTP by :func:`serve_metrics`."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

#: Our own registry, so tests and several orchestrators in one process do not collide.
REGISTRY = CollectorRegistry()

TASKS = Counter(
    "agentmesh_tasks_total", "Tasks that reached a final state.", ["state"], registry=REGISTRY
)
TASKS_SUBMITTED = Counter("agentmesh_tasks_submitted_total", "Tasks accepted.", registry=REGISTRY)
STEPS = Counter(
    "agentmesh_steps_total", "Steps that reached a final state.", ["state"], registry=REGISTRY
)
ATTEMPTS = Counter(
    "agentmesh_attempts_total",
    "Step attempts by outcome code.",
    ["agent", "outcome"],
    registry=REGISTRY,
)
RETRIES = Counter("agentmesh_retries_total", "Attempts that were retries.", registry=REGISTRY)
FAILOVERS = Counter(
    "agentmesh_failovers_total", "Retries sent to a different agent.", registry=REGISTRY
)
ATTEMPT_SECONDS = Histogram(
    "agentmesh_attempt_seconds", "Duration of step attempts.", ["capability"], registry=REGISTRY
)
AGENTS = Gauge("agentmesh_agents", "Live agents with an open Session.", registry=REGISTRY)
REGISTRATIONS_WAITING = Gauge(
    "agentmesh_registrations_waiting",
    "RegisterAgent calls waiting for their turn (a few run at once).",
    registry=REGISTRY,
)
CIRCUIT_OPEN = Gauge(
    "agentmesh_circuit_open", "1 while an agent's circuit is open.", ["agent"], registry=REGISTRY
)
SESSION_BATCHES = Counter(
    "agentmesh_session_batches_total",
    "Batches on agents' Session streams, sent (to the agent) or received (from it).",
    ["agent", "direction"],
    registry=REGISTRY,
)
SESSION_BATCHED_MESSAGES = Counter(
    "agentmesh_session_batched_messages_total",
    "Messages that travelled inside those batches.",
    ["agent", "direction"],
    registry=REGISTRY,
)

POOL_IN_USE = Gauge(
    "agentmesh_pool_in_use",
    "Runs of this replica holding a use of the pool.",
    ["pool"],
    registry=REGISTRY,
)
POOL_WAITS = Counter(
    "agentmesh_pool_waits_total",
    "Times a step found the pool at its limit and waited.",
    ["pool"],
    registry=REGISTRY,
)
POOL_TOKENS = Counter(
    "agentmesh_pool_tokens_total",
    "Tokens this replica's runs charged to the pool's tokens_per_minute window.",
    ["pool"],
    registry=REGISTRY,
)
USAGE_TOKENS = Counter(
    "agentmesh_usage_tokens_total",
    "Tokens agents reported using, by kind (input, output).",
    ["kind"],
    registry=REGISTRY,
)
USAGE_COST = Counter(
    "agentmesh_usage_cost_total", "Cost agents reported, summed.", registry=REGISTRY
)
BUDGETS_EXCEEDED = Counter(
    "agentmesh_budgets_exceeded_total",
    "Tasks stopped by their budget, by the limit that stopped them.",
    ["limit"],
    registry=REGISTRY,
)


@contextlib.contextmanager
def serving_metrics(listen: str) -> Iterator[int]:
    """Serve ``/metrics`` on ``host:port`` in a background thread while in the block.

    Yields the bound port (useful with port 0).
    """
    host, _, port = listen.rpartition(":")
    server, thread = start_http_server(int(port), addr=host or "127.0.0.1", registry=REGISTRY)
    try:
        yield int(server.server_port)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
