"""A circuit opens on an agent that keeps failing and closes again after a good probe.

The sick agent fails every attempt with an internal error (an agent fault, retryable)
while its control file exists. Its circuit opens after ``circuit_fail_max`` failures:
ListAgents and the metrics say so, an error-level alert is logged, and matching sends its
work elsewhere. After ``circuit_reset_seconds`` one probe may go through; it succeeds
once the agent is healthy again, and the circuit closes. A probe that ends without an
outcome (its task is cancelled) does not keep the circuit waiting for that outcome forever.
"""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
from structlog.testing import capture_logs

from agentmesh.client import Client
from agentmesh.config import Settings
from agentmesh.errors import Unavailable
from agentmesh.models import (
    Plan,
    RetryPolicy,
    StepSpec,
    StepState,
    TaskEvent,
    TaskRecord,
    TaskState,
)
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


async def _circuit(alice: Client, name: str) -> str:
    status = {a.card.name: a for a in await alice.list_agents()}[name]
    return status.circuit


async def _circuit_becomes(alice: Client, name: str, state: str, within: float = 15) -> None:
    async def probe() -> str:
        return await _circuit(alice, name)

    await eventually(probe, lambda value: value == state, within=within)


def _attempts(events: list[TaskEvent]) -> list[TaskEvent]:
    """Every attempt's RUNNING event, in order: who ran what."""
    return [e for e in step_events(events) if e.state == StepState.RUNNING]


def _gauge(agent: str) -> float | None:
    return metrics.REGISTRY.get_sample_value("agentmesh_circuit_open", {"agent": agent})


async def _open_circuit(alice: Client, name: str) -> list[TaskEvent]:
    """Run a step pinned to the (sick) agent ``name`` until its circuit opens; its events."""
    failing = await alice.submit(plan=Plan(steps=(_echo("sick", pin=name),)))
    failed = await watch_all(alice, failing)
    assert final_state(failed) == TaskState.FAILED
    assert [(a.agent, a.attempt) for a in _attempts(failed)] == [
        (name, n) for n in range(1, FAIL_MAX + 1)
    ]
    return failed


async def _state_becomes(alice: Client, task_id: str, state: TaskState) -> TaskRecord:
    async def task() -> TaskRecord:
        return await alice.get(task_id)

    return await eventually(task, lambda t: t.state == state, within=20)


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
            failed = await _open_circuit(alice, "flaky")
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
            # Still open (no probe was due, none went out): the spread ran while it was open.
            assert await _circuit(alice, "flaky") == "open"

            # After the reset time one probe may go through; the agent has recovered.
            sick.unlink()
            await _circuit_becomes(alice, "flaky", "half_open")
            probe = await alice.submit(plan=Plan(steps=(_echo("probe", pin="flaky"),)))
            probed = await watch_all(alice, probe)
            assert final_state(probed) == TaskState.SUCCEEDED
            assert [a.agent for a in _attempts(probed)] == ["flaky"]
            await _circuit_becomes(alice, "flaky", "closed")
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


async def test_a_probe_cancelled_before_its_outcome_does_not_keep_the_agent_from_work(
    settings: Settings, certs: Path, agents: AgentProcesses, tmp_path: Path
) -> None:
    sick = tmp_path / "sick"
    sick.touch()
    async with Orchestrator(settings) as orchestrator, client(orchestrator, certs) as alice:
        address = [f"localhost:{orchestrator.port}"]
        agents.start(FAULTY, "flaky", address, **Faults(sick_file=str(sick)).env())
        await wait_for_agents(alice, "flaky")
        await _open_circuit(alice, "flaky")
        await _circuit_becomes(alice, "flaky", "half_open")

        # The probe hangs on the agent, and its task is cancelled while it runs: no outcome.
        hang = StepSpec(id="hang", capability="test.hang", pin_agent="flaky")
        hung = await alice.submit(plan=Plan(steps=(hang,)))
        await eventually(
            lambda: alice.get(hung),
            lambda t: t.steps["hang"].state == StepState.RUNNING,
            within=20,
        )
        cancelled = await alice.cancel(hung, reason="probe cancelled")
        assert cancelled.state == TaskState.CANCELLED

        # The agent has recovered: the next step pinned to it is the next probe, and runs.
        sick.unlink()
        again = await alice.submit(plan=Plan(steps=(_echo("again", pin="flaky", attempts=1),)))
        done = await _state_becomes(alice, again, TaskState.SUCCEEDED)
        assert done.steps["again"].agent == "flaky"
        await _circuit_becomes(alice, "flaky", "closed")


async def test_a_planning_agent_that_keeps_failing_opens_its_circuit_and_a_good_plan_closes_it(
    settings: Settings, certs: Path, agents: AgentProcesses
) -> None:
    async with Orchestrator(settings) as orchestrator, client(orchestrator, certs) as alice:
        agents.start("tests.support.planner", "echo-1", [f"localhost:{orchestrator.port}"])
        await wait_for_agents(alice, "echo-1")
        for _ in range(FAIL_MAX):
            with pytest.raises(Unavailable) as error:
                await alice.submit(goal="crash zebra marmalade")
            assert error.value.code is grpc.StatusCode.UNAVAILABLE
            assert "planning agent echo-1 failed: error" in error.value.message
        assert await _circuit(alice, "echo-1") == "open"

        # The next plan asked for after the reset time is the probe; it succeeds.
        await _circuit_becomes(alice, "echo-1", "half_open")
        planned = await alice.submit(goal="zebra quantum marmalade")
        await _circuit_becomes(alice, "echo-1", "closed")
        done = await _state_becomes(alice, planned, TaskState.SUCCEEDED)
        assert list(done.steps) == ["w0", "w1", "w2"]
