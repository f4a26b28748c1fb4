"""A circuit opens on an agent that keeps failing and closes again after a good probe.

The sick agent fails every attempt with an internal error (an agent fault, retryable)
while its control file exists. Its circuit opens after ``circuit_fail_max`` failures:
ListAgents and the metrics say so, an error-level alert is logged, and matching sends its
work elsewhere. After ``circuit_reset_seconds`` one probe may go through; it succeeds
once the agent is healthy again, and the circuit closes.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from agentmesh.client import Client
from agentmesh.config import Settings
from agentmesh.models import Plan, RetryPolicy, StepSpec, StepState, TaskEvent, TaskState
from agentmesh.orchestrator import Orchestrator, metrics
from tests.support.events import final_state, step_events, watch_all
from tests.support.faulty import Faults
from tests.support.mesh import client, wait_for_agents
from tests.support.processes import AgentProcesses
from tests.support.waiting import eventually

FAULTY = "tests.support.faulty"
FAIL_MAX = 3
RESET_SECONDS = 2.0


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """A circuit that opens after three failures and lets a probe through after two seconds."""
    return settings.model_copy(
        update={"circuit_fail_max": FAIL_MAX, "circuit_reset_seconds": RESET_SECONDS}
    )


def _echo(step_id: str, *, pin: str = "", attempts: int = FAIL_MAX) -> StepSpec:
    return StepSpec(
        id=step_id,
        capability="test.echo",
        input={"value": step_id},
        pin_agent=pin,
        retry=RetryPolicy(max_attempts=attempts, initial_backoff_seconds=0.01),
    )


async def _circuit(alice: Client, name: str) -> int:
    status = {a.card.name: a for a in await alice.list_agents()}[name]
    return status.circuit


async def _circuit_becomes(alice: Client, name: str, state: int, within: float = 10) -> None:
    async def probe() -> int:
        return await _circuit(alice, name)

    await eventually(probe, lambda value: value == state, within=within)


def _attempts(events: list[TaskEvent]) -> list[TaskEvent]:
    """Every attempt's RUNNING event, in order: who ran what."""
    return [e for e in step_events(events) if e.state == StepState.RUNNING]


def _gauge(agent: str) -> float | None:
    return metrics.REGISTRY.get_sample_value("agentmesh_circuit_open", {"agent": agent})


async def test_a_failing_agent_opens_its_circuit_loses_its_work_and_closes_after_a_good_probe(
    settings: Settings, certs: Path, agents: AgentProcesses, tmp_path: Path
) -> None:
    sick = tmp_path / "sick"
    sick.touch()
    with capture_logs() as logs:
        async with Orchestrator(settings) as orchestrator, client(orchestrator, certs) as alice:
            address = [f"localhost:{orchestrator.port}"]
            agents.start(FAULTY, "flaky", address, **Faults(sick_file=str(sick)).env())
            agents.start(FAULTY, "echo-1", address)
            await wait_for_agents(alice, "flaky", "echo-1")
            assert await _circuit(alice, "flaky") == "closed"

            # Every attempt of a step pinned to the sick agent fails: the circuit opens.
            failing = await alice.submit(plan=Plan(steps=(_echo("sick", pin="flaky"),)))
            failed = await watch_all(alice, failing)
            opened = time.monotonic()
            assert final_state(failed) == TaskState.FAILED
            assert [(a.agent, a.attempt) for a in _attempts(failed)] == [
                ("flaky", n) for n in range(1, FAIL_MAX + 1)
            ]
            assert await _circuit(alice, "flaky") == "open"
            assert _gauge("flaky") == 1
            # The task's watchers are told too: the last failure names the opened circuit.
            reasons = [e.reason for e in step_events(failed)]
            assert any("circuit of flaky is open" in r for r in reasons), reasons

            # While it is open, matching sends everything to the healthy agent.
            spread = await alice.submit(
                plan=Plan(steps=tuple(_echo(f"s{i}", attempts=1) for i in range(6)))
            )
            spread_events = await watch_all(alice, spread)
            assert final_state(spread_events) == TaskState.SUCCEEDED
            assert {a.agent for a in _attempts(spread_events)} == {"echo-1"}
            assert time.monotonic() - opened < RESET_SECONDS, "too slow to tell open from probing"
            assert await _circuit(alice, "flaky") == "open"

            # After the reset time one probe may go through; the agent has recovered.
            sick.unlink()
            await _circuit_becomes(alice, "flaky", "half_open")
            assert time.monotonic() - opened >= RESET_SECONDS * 0.9
            probe = await alice.submit(plan=Plan(steps=(_echo("probe", pin="flaky"),)))
            probed = await watch_all(alice, probe)
            assert final_state(probed) == TaskState.SUCCEEDED
            assert [a.agent for a in _attempts(probed)] == ["flaky"]
            await _circuit_becomes(alice, "flaky", "closed", within=2)
            assert _gauge("flaky") == 0

    changes = [
        (e["event"], e["log_level"])
        for e in logs
        if e["event"].startswith("agent.circuit_") and e.get("agent") == "flaky"
    ]
    assert changes == [
        ("agent.circuit_opened", "error"),
        ("agent.circuit_half_open", "info"),
        ("agent.circuit_closed", "info"),
    ]
