"""Operators' overrides: drain, resume and weigh an agent, over real mTLS gRPC (and HTTP),
allowed to admins only, kept in the store and applied by every replica."""

from __future__ import annotations

import collections
import contextlib
import math
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from agentmesh.agent import AgentServer, AgentSettings
from agentmesh.client import Client
from agentmesh.config import Settings
from agentmesh.errors import NotFound, PermissionDenied, ValidationError
from agentmesh.models import Plan, StepSpec, StepState, TaskRecord, TaskState
from agentmesh.orchestrator import Orchestrator
from agentmesh.security import IdentityKind
from tests.support.agents import FaultyAgent
from tests.support.mesh import wait_for_agents
from tests.support.waiting import eventually


@contextlib.asynccontextmanager
async def serving(certs: Path, name: str, *orchestrators: Orchestrator) -> AsyncIterator[None]:
    """Agent ``name`` (FaultyAgent) served in this process, registered with each orchestrator."""
    config = AgentSettings(
        certs_dir=certs,
        name=name,
        orchestrators=[f"localhost:{o.port}" for o in orchestrators],
        drain_timeout_seconds=1,
    )
    async with AgentServer(FaultyAgent(), config):
        yield


def admin(orchestrator: Orchestrator, certs: Path) -> Client:
    return Client(f"localhost:{orchestrator.port}", certs, "root", kind=IdentityKind.ADMIN)


def alice(orchestrator: Orchestrator, certs: Path) -> Client:
    return Client(f"localhost:{orchestrator.port}", certs, "alice")


def _gated(gate: Path, journal: Path) -> Plan:
    step = StepSpec(
        id="work",
        capability="test.work",
        input={"journal": str(journal), "entry": "long", "gate": str(gate)},
    )
    return Plan(steps=(step,))


ECHO = Plan(steps=(StepSpec(id="echo", capability="test.echo", input={"value": 1}),))


async def _step(client: Client, task_id: str, step: str, states: set[StepState]) -> TaskRecord:
    return await eventually(
        lambda: client.get(task_id), lambda t: t.steps[step].state in states, within=30
    )


async def test_only_an_admin_may_drain_resume_or_weigh_an_agent(
    orchestrator: Orchestrator, certs: Path
) -> None:
    async with (
        serving(certs, "echo-1", orchestrator),
        alice(orchestrator, certs) as client,
        admin(orchestrator, certs) as root,
    ):
        await wait_for_agents(client, "echo-1")
        for call in (
            client.drain_agent("echo-1"),
            client.resume_agent("echo-1"),
            client.set_agent_weight("echo-1", 0.5),
        ):
            with pytest.raises(PermissionDenied, match="manage agents"):
                await call
        (untouched,) = await client.list_agents()
        with pytest.raises(NotFound) as unknown:
            await root.drain_agent("nobody")
        for bad in (0.0, -1.0, 101.0, math.nan, math.inf):
            with pytest.raises(ValidationError) as refused:
                await root.set_agent_weight("echo-1", bad)
            assert refused.value.field == "weight"
        drained = await root.drain_agent("echo-1")
    assert (untouched.drained, untouched.weight) == (False, 1.0)
    assert unknown.value.field == "name"
    assert drained.drained
    assert drained.weight == 1.0
    assert drained.updated_by == "spiffe://agentmesh.test/admin/root"
    assert drained.updated_at is not None


async def test_a_drained_agent_finishes_its_step_gets_no_new_one_and_resumes(
    orchestrator: Orchestrator, certs: Path, tmp_path: Path
) -> None:
    gate, journal = tmp_path / "gate", tmp_path / "journal.jsonl"
    async with (
        serving(certs, "echo-1", orchestrator),
        alice(orchestrator, certs) as client,
        admin(orchestrator, certs) as root,
    ):
        await wait_for_agents(client, "echo-1")
        running = await client.submit(plan=_gated(gate, journal))
        await _step(client, running, "work", {StepState.RUNNING})
        await root.drain_agent("echo-1")
        (listed,) = await client.list_agents()
        # echo-1 has 3 free slots, but is drained: the new step waits.
        waiting = await client.submit(plan=ECHO)
        await _step(client, waiting, "echo", {StepState.WAITING})
        gate.touch()
        finished = await eventually(lambda: client.get(running), lambda t: t.state.final)
        # A release re-runs matching at once: had the drain been ignored, it would run now.
        still = await client.get(waiting)
        await root.resume_agent("echo-1")
        resumed = await eventually(lambda: client.get(waiting), lambda t: t.state.final)
        (back,) = await client.list_agents()
    assert listed.drained
    assert finished.state is TaskState.SUCCEEDED
    assert finished.steps["work"].agent == "echo-1"
    assert still.steps["echo"].state is StepState.WAITING
    assert resumed.state is TaskState.SUCCEEDED
    assert resumed.steps["echo"].agent == "echo-1"
    assert not back.drained


async def _final(client: Client, task_id: str) -> TaskRecord:
    return await eventually(lambda: client.get(task_id), lambda t: t.state.final, within=30)


async def _share(client: Client, runs: int) -> collections.Counter[str]:
    """Which agent ran each of ``runs`` one-step tasks, submitted one after the other."""
    agents: collections.Counter[str] = collections.Counter()
    for _ in range(runs):
        task = await _final(client, await client.submit(plan=ECHO))
        assert task.state is TaskState.SUCCEEDED
        agents[task.steps["echo"].agent] += 1
    return agents


async def test_a_weight_changes_an_agents_share_of_work(
    orchestrator: Orchestrator, certs: Path
) -> None:
    async with (
        serving(certs, "echo-1", orchestrator),
        serving(certs, "echo-2", orchestrator),
        alice(orchestrator, certs) as client,
        admin(orchestrator, certs) as root,
    ):
        await wait_for_agents(client, "echo-1", "echo-2")
        await root.set_agent_weight("echo-1", 0.01)
        light = await _share(client, 12)
        await root.set_agent_weight("echo-1", 100)
        await root.set_agent_weight("echo-2", 0.01)
        heavy = await _share(client, 12)
        weights = {a.card.name: a.weight for a in await client.list_agents()}
    assert light["echo-1"] <= 3, light
    assert heavy["echo-1"] >= 9, heavy
    assert weights == {"echo-1": 100.0, "echo-2": 0.01}


@pytest.fixture
async def two_replicas(
    settings: Settings, postgres_database: dict[str, str]
) -> AsyncIterator[tuple[Orchestrator, Orchestrator]]:
    """Two in-process replicas on one PostgreSQL schema, reading overrides every 0.2 s."""
    common = {**postgres_database, "overrides_refresh_seconds": 0.2}
    a_settings = settings.model_copy(update={**common, "replica_id": "a"})
    b_settings = settings.model_copy(update={**common, "replica_id": "b"})
    async with Orchestrator(a_settings) as a, Orchestrator(b_settings) as b:
        yield a, b


async def test_an_override_set_through_one_replica_applies_on_the_other(
    two_replicas: tuple[Orchestrator, Orchestrator], certs: Path
) -> None:
    a, b = two_replicas
    async with (
        serving(certs, "echo-1", a, b),
        alice(b, certs) as on_b,
        alice(a, certs) as on_a,
        admin(a, certs) as root,
    ):
        await wait_for_agents(on_a, "echo-1")
        await wait_for_agents(on_b, "echo-1")
        await root.drain_agent("echo-1")
        await root.set_agent_weight("echo-1", 0.5)
        (seen,) = await eventually(
            on_b.list_agents, lambda agents: agents[0].drained and agents[0].weight == 0.5
        )
        waiting = await on_b.submit(plan=ECHO)
        await _step(on_b, waiting, "echo", {StepState.WAITING})
        async with admin(b, certs) as root_b:
            await root_b.resume_agent("echo-1")
        done = await eventually(lambda: on_b.get(waiting), lambda t: t.state.final)
        (on_a_again,) = await eventually(on_a.list_agents, lambda agents: not agents[0].drained)
    assert seen.drained
    assert done.state is TaskState.SUCCEEDED
    assert on_a_again.weight == 0.5
