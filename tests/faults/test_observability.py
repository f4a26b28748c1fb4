"""What operators see: agent interactions as JSON log lines with their ids, and Prometheus
metrics over HTTP.

Two agents share six parallel steps; one of them answers every assignment with output
that breaks its declared schema (unnoticed by the agent itself), so the run has failures,
retries, failovers and an opened circuit.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import structlog
from prometheus_client.parser import text_string_to_metric_families

from agentmesh.config import Settings
from agentmesh.logs import configure_logging
from agentmesh.models import Plan, RetryPolicy, StepSpec, StepState, TaskState
from agentmesh.orchestrator import Orchestrator
from tests.support.events import final_state, step_events, watch_all
from tests.support.faulty import Faults
from tests.support.mesh import client, wait_for_agents
from tests.support.processes import AgentProcesses

FAULTY = "tests.support.faulty"
PLAN = Plan(
    steps=tuple(
        StepSpec(
            id=f"s{i}",
            capability="test.echo",
            input={"value": i, "delay": 0.2},
            retry=RetryPolicy(max_attempts=3, initial_backoff_seconds=0.01),
        )
        for i in range(6)
    )
)


@contextlib.contextmanager
def _json_log(level: str) -> Iterator[io.StringIO]:
    """The process's logs as JSON lines into a buffer, as ``agentmesh serve`` writes them."""
    saved = structlog.get_config()
    root = logging.getLogger()
    handlers, old_level = root.handlers[:], root.level
    buffer = io.StringIO()
    configure_logging(level, json=True, stream=buffer)
    try:
        yield buffer
    finally:
        structlog.configure(**saved)
        root.handlers[:], root.level = handlers, old_level


@pytest.fixture
def json_log() -> Iterator[io.StringIO]:
    """Logs at debug level, where every attempt is logged."""
    with _json_log("debug") as buffer:
        yield buffer


@pytest.fixture
def info_log() -> Iterator[io.StringIO]:
    """Logs at info level, as ``agentmesh serve`` runs by default."""
    with _json_log("info") as buffer:
        yield buffer


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """Metrics on a free port; a circuit that opens after two failures."""
    return settings.model_copy(update={"metrics_listen": "127.0.0.1:0", "circuit_fail_max": 2})


async def _scrape(port: int) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    async with httpx.AsyncClient() as http:
        response = await http.get(f"http://127.0.0.1:{port}/metrics", timeout=5)
    response.raise_for_status()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def _value(
    scrape: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    return scrape.get((name, frozenset(labels.items())), 0.0)


async def test_agent_interactions_are_logged_as_json_with_their_ids_and_metrics_are_served(
    json_log: io.StringIO, settings: Settings, certs: Path, agents: AgentProcesses
) -> None:
    async with Orchestrator(settings) as orchestrator, client(orchestrator, certs) as alice:
        address = [f"localhost:{orchestrator.port}"]
        agents.start(FAULTY, "flaky", address, **Faults(garbage=1.0).env())
        agents.start(FAULTY, "echo-1", address)
        await wait_for_agents(alice, "flaky", "echo-1")
        before = await _scrape(orchestrator.metrics_port)
        task_id = await alice.submit(plan=PLAN)
        events = await watch_all(alice, task_id)
        after = await _scrape(orchestrator.metrics_port)

    assert final_state(events) == TaskState.SUCCEEDED
    lines = [json.loads(line) for line in json_log.getvalue().splitlines() if line.strip()]
    assert all({"event", "level", "timestamp"} <= set(line) for line in lines)
    ours = [line for line in lines if line.get("task_id") == task_id]

    # Every attempt the events show was logged when assigned, then with its outcome.
    attempts = {
        (e.step_id, e.attempt, e.agent) for e in step_events(events) if e.state == StepState.RUNNING
    }
    failed = {
        (e.step_id, e.attempt, e.agent) for e in step_events(events) if e.state == StepState.PENDING
    }
    assert failed, "no attempt failed"
    assert {a[2] for a in failed} == {"flaky"}

    def logged(event: str) -> set[tuple[Any, Any, Any]]:
        return {
            (line["step"], line["attempt"], line["agent"])
            for line in ours
            if line["event"] == event
        }

    assert logged("step.assigned") == attempts
    assert logged("step.attempt_failed") == failed
    assert logged("step.attempt_succeeded") == attempts - failed
    assert all(
        line["level"] == "warning" for line in ours if line["event"] == "step.attempt_failed"
    )
    opened = [line for line in lines if line["event"] == "agent.circuit_opened"]
    assert [(line["agent"], line["level"]) for line in opened] == [("flaky", "error")]

    # The metrics moved with the run.
    def grew(name: str, **labels: str) -> float:
        return _value(after, name, **labels) - _value(before, name, **labels)

    assert grew("agentmesh_tasks_total", state="succeeded") == 1
    assert grew("agentmesh_tasks_submitted_total") == 1
    assert grew("agentmesh_steps_total", state="succeeded") == len(PLAN.steps)
    assert grew("agentmesh_attempts_total", agent="flaky", outcome="invalid_output") == len(failed)
    assert grew("agentmesh_attempts_total", agent="echo-1", outcome="ok") == len(PLAN.steps)
    assert grew("agentmesh_retries_total") == len(failed)
    assert grew("agentmesh_failovers_total") == len(failed)
    assert grew("agentmesh_attempt_seconds_count", capability="test.echo") == len(attempts)
    assert _value(after, "agentmesh_circuit_open", agent="flaky") == 1
    assert _value(after, "agentmesh_circuit_open", agent="echo-1") == 0
    assert _value(after, "agentmesh_agents") == 2


async def test_at_info_level_a_task_logs_its_own_events_and_none_per_step(
    info_log: io.StringIO, settings: Settings, certs: Path, agents: AgentProcesses
) -> None:
    # Per-attempt lines cost the orchestrator a JSON line per step: they are debug level.
    async with Orchestrator(settings) as orchestrator, client(orchestrator, certs) as alice:
        agents.start(FAULTY, "echo-1", [f"localhost:{orchestrator.port}"])
        await wait_for_agents(alice, "echo-1")
        task_id = await alice.submit(plan=PLAN)
        events = await watch_all(alice, task_id)

    assert final_state(events) == TaskState.SUCCEEDED
    lines = [json.loads(line) for line in info_log.getvalue().splitlines() if line.strip()]
    ours = [line["event"] for line in lines if line.get("task_id") == task_id]
    assert "task.submitted" in ours
    assert ours.count("task.state") >= 2  # running, succeeded
    assert not [event for event in ours if event.startswith("step.")], ours
