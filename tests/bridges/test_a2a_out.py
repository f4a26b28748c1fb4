"""A2A out: the skills of an external A2A agent (a2a-sdk, HTTPS) run mesh steps."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from agentmesh.agent import AgentServer, AgentSettings
from agentmesh.bridges.a2a import A2A_FAILED, A2ABridge, skill_capability
from agentmesh.errors import ConfigError
from agentmesh.models import Plan, TaskState
from agentmesh.orchestrator import Orchestrator
from agentmesh.security import CertFiles, IdentityKind
from tests.support.a2a_server import ReverserExecutor, a2a_server, reverser_card
from tests.support.agents import FaultyAgent
from tests.support.bridges import bridge_process
from tests.support.mesh import client, wait_for_agents
from tests.support.waiting import eventually

REVERSE = "a2a.reverser.reverse"


@pytest.fixture
async def remote(certs: Path) -> AsyncIterator[tuple[str, ReverserExecutor]]:
    async with a2a_server(CertFiles.of(certs, IdentityKind.AGENT, "slow")) as served:
        yield served


@pytest.fixture
async def bridge(
    orchestrator: Orchestrator, certs: Path, remote: tuple[str, ReverserExecutor]
) -> AsyncIterator[A2ABridge]:
    verify = ssl.create_default_context(cafile=certs / "ca.pem")
    settings = AgentSettings(
        certs_dir=certs, name="echo-2", orchestrators=[f"localhost:{orchestrator.port}"]
    )
    async with A2ABridge([remote[0]], name="echo-2", verify=verify) as opened:  # noqa: SIM117
        # Nested: the agent is built from the cards the bridge has just read.
        async with AgentServer(opened.agent(), settings):
            yield opened


@pytest.mark.slow
async def test_a_task_combines_a_remote_a2a_skill_run_through_the_bridge_command_with_a_python_step(
    orchestrator: Orchestrator, certs: Path, remote: tuple[str, ReverserExecutor], tmp_path: Path
) -> None:
    ca = str(certs / "ca.pem")
    arguments = ("a2a-bridge", remote[0], "--name", "echo-2", "--ca-file", ca)
    process = bridge_process(orchestrator, certs, tmp_path, *arguments)
    python = AgentSettings(
        certs_dir=certs, name="echo-1", orchestrators=[f"localhost:{orchestrator.port}"]
    )
    plan = Plan.model_validate(
        {
            "steps": [
                {"id": "greet", "capability": "test.echo", "input": {"value": "${input.who}"}},
                {
                    "id": "flip",
                    "capability": REVERSE,
                    "input": {"text": "${input.who}", "tone": "calm"},
                },
            ],
            "aggregate": {"strategy": "collect"},
        }
    )
    try:
        async with AgentServer(FaultyAgent(), python), client(orchestrator, certs) as alice:
            await wait_for_agents(alice, "echo-1", "echo-2", within=60)
            task_id = await alice.submit(plan=plan, input={"who": "alice"})
            events = [e async for e in alice.watch(task_id)]
            task = await alice.get(task_id)
    finally:
        process.terminate()
        process.wait(30)

    assert task.state is TaskState.SUCCEEDED, (task.error, (tmp_path / "bridge.log").read_text())
    flip = task.steps["flip"]
    assert flip.agent == "echo-2"
    assert flip.output["text"] == "ecila"
    assert flip.output["data"] == {"length": 5, "extra": [{"tone": "calm"}]}
    assert task.result["greet"]["value"] == "alice"
    assert task.result["flip"]["text"] == "ecila"
    # The remote agent's status updates arrived as the step's progress.
    assert "reverse: working on 'alice'" in [e.message for e in events if e.step_id == "flip"]
    assert process.returncode == 0


async def test_a_remote_failure_fails_the_step_retryably_with_the_agents_reason(
    orchestrator: Orchestrator, certs: Path, bridge: A2ABridge
) -> None:
    plan = Plan.model_validate(
        {
            "steps": [
                {
                    "id": "no",
                    "capability": "a2a.reverser.refuse",
                    "input": {"text": "please"},
                    "retry": {"max_attempts": 2, "initial_backoff_seconds": 0},
                }
            ]
        }
    )
    async with client(orchestrator, certs) as alice:
        await wait_for_agents(alice, "echo-2", within=60)
        task_id = await alice.submit(plan=plan)
        _ = [e async for e in alice.watch(task_id)]
        task = await alice.get(task_id)

    assert task.state is TaskState.FAILED
    step = task.steps["no"]
    assert A2A_FAILED in step.error
    assert "this agent refuses on principle" in step.error
    assert step.attempts == 2  # a remote failure may be passing: the step's policy retries


async def test_cancelling_the_mesh_task_cancels_the_remote_a2a_task(
    orchestrator: Orchestrator,
    certs: Path,
    bridge: A2ABridge,
    remote: tuple[str, ReverserExecutor],
) -> None:
    executor = remote[1]
    plan = Plan.model_validate(
        {"steps": [{"id": "w", "capability": "a2a.reverser.wait", "input": {"text": "x"}}]}
    )
    async with client(orchestrator, certs) as alice:
        await wait_for_agents(alice, "echo-2", within=60)
        task_id = await alice.submit(plan=plan)
        await asyncio.wait_for(executor.started.wait(), 60)
        cancelled = await alice.cancel(task_id, reason="changed my mind")
        remote_cancels = await eventually(
            lambda: _value(executor.cancelled), lambda ids: len(ids) == 1, within=60
        )

    assert cancelled.state is TaskState.CANCELLED
    assert len(remote_cancels) == 1


async def test_an_unreachable_agent_card_stops_the_bridge_with_the_url(certs: Path) -> None:
    verify = ssl.create_default_context(cafile=certs / "ca.pem")
    url = "https://localhost:1"

    with pytest.raises(ConfigError, match="cannot read the Agent Card of https://localhost:1"):
        async with A2ABridge([url], verify=verify):
            pass


def test_skills_become_dotted_lowercase_capabilities() -> None:
    card = reverser_card("https://x/")
    card.name = "Text Tools 2!"
    skill = card.skills[0]
    skill.id = "Reverse-Text"

    capability = skill_capability(card, skill)

    assert capability.name == "a2a.text_tools_2.reverse_text"
    assert capability.version == "2.0.0"
    assert "a2a" in capability.tags


async def _value(items: list[str]) -> list[str]:
    return list(items)
