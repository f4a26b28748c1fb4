"""Shutting down: drain hands back unfinished work, SIGTERM drains and exits 0."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from agentmesh._proto.agentmesh.v1 import agent_pb2
from agentmesh.agent import AgentSettings
from agentmesh.agent.server import serve_until_signalled
from agentmesh.security import IdentityKind
from tests.agent.agent_support import PATIENCE, Recorder, kind_of, output_of
from tests.agent.conftest import Connect, OpenSession, StartAgent, certificate
from tests.support.network import free_port


async def test_drain_finishes_what_it_can_and_hands_back_the_rest(
    recorder: Recorder, start_agent: StartAgent, open_session: OpenSession
) -> None:
    async with (
        start_agent(recorder, drain_timeout_seconds=1.0) as server,
        open_session(server) as session,
    ):
        stuck = await session.assign("test.block")
        quick = await session.assign("test.echo", {"text": "made it", "delay": 0.3})
        assert kind_of(await session.next_for(stuck)) == "accepted"
        assert kind_of(await session.next_for(quick)) == "accepted"

        async with asyncio.timeout(PATIENCE), asyncio.TaskGroup() as group:
            group.create_task(server.drain())
            assert kind_of(await session.next_for("")) == "draining"
            late = await session.assign("test.echo", {"text": "too late"})
            late_failure = (await session.next_for(late)).failure
            async with open_session(server) as newcomer:
                assert kind_of(await newcomer.next_for("")) == "draining"
            quick_outcome = await session.outcome(quick)
            stuck_failure = (await session.outcome(stuck)).failure
            assert await session.ended()
            await server.wait_closed()

    assert (late_failure.code, late_failure.retryable) == ("draining", True)
    assert recorder.runs["too late"] == 0
    assert output_of(quick_outcome) == {"text": "made it"}
    assert (stuck_failure.code, stuck_failure.retryable) == ("draining", True)
    assert recorder.cancelled == [stuck]


async def test_a_handler_that_ignores_cancellation_is_handed_back_anyway(
    recorder: Recorder, start_agent: StartAgent, open_session: OpenSession
) -> None:
    async with (
        start_agent(recorder, drain_timeout_seconds=0.2) as server,
        open_session(server) as session,
    ):
        aid = await session.assign("test.stubborn", {"seconds": 30})
        assert kind_of(await session.next_for(aid)) == "accepted"
        async with asyncio.timeout(PATIENCE):
            await server.drain()
        failure = (await session.outcome(aid)).failure

    assert (failure.code, failure.retryable) == ("draining", True)
    assert recorder.cancelled == [aid]


@pytest.fixture
def sigterm_guard() -> Iterator[None]:
    """Keeps a stray SIGTERM from killing the test run if a handler failed to install."""
    previous = signal.signal(signal.SIGTERM, lambda *_: None)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@pytest.mark.usefixtures("sigterm_guard")
async def test_sigterm_drains_the_agent_and_returns(
    recorder: Recorder, mesh_certs: Path, open_session: OpenSession, connect: Connect
) -> None:
    certificate(mesh_certs, IdentityKind.AGENT, "recorder")
    endpoint = f"127.0.0.1:{free_port()}"
    settings = AgentSettings(
        certs_dir=mesh_certs,
        orchestrators=["localhost:1"],
        listen=endpoint,
        drain_timeout_seconds=0.5,
    )
    async with asyncio.timeout(PATIENCE), asyncio.TaskGroup() as group:
        serving = group.create_task(serve_until_signalled(recorder, settings))
        async with connect(endpoint) as stub:
            await stub.Describe(agent_pb2.DescribeRequest(), wait_for_ready=True)
        async with open_session(endpoint) as session:
            aid = await session.assign("test.block")
            assert kind_of(await session.next_for(aid)) == "accepted"
            os.kill(os.getpid(), signal.SIGTERM)
            assert kind_of(await session.next_for("")) == "draining"
            failure = (await session.outcome(aid)).failure
        await serving

    assert (failure.code, failure.retryable) == ("draining", True)


@pytest.fixture
async def splitter_process(
    mesh_certs: Path, tmp_path: Path
) -> AsyncIterator[tuple[asyncio.subprocess.Process, str]]:
    """``python -m agentmesh.examples.splitter`` on a free port, slow enough to catch working."""
    certificate(mesh_certs, IdentityKind.AGENT, "splitter")
    endpoint = f"127.0.0.1:{free_port()}"
    env = {
        **os.environ,
        "AGENTMESH_AGENT_CERTS_DIR": str(mesh_certs),
        "AGENTMESH_AGENT_LISTEN": endpoint,
        "AGENTMESH_AGENT_ORCHESTRATORS": "localhost:1",
        "AGENTMESH_AGENT_DRAIN_TIMEOUT_SECONDS": "1",
        "AGENTMESH_DEMO_LATENCY": "60",
    }
    env.pop("AGENTMESH_AGENT_NAME", None)
    with (tmp_path / "splitter.log").open("wb") as log:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "agentmesh.examples.splitter", env=env, stdout=log, stderr=log
        )
    try:
        yield process, endpoint
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        sys.stdout.write((tmp_path / "splitter.log").read_text(errors="replace"))


async def test_sigterm_makes_an_agent_process_drain_and_exit_0(
    splitter_process: tuple[asyncio.subprocess.Process, str],
    connect: Connect,
    open_session: OpenSession,
) -> None:
    process, endpoint = splitter_process
    drain_timeout = 1.0
    async with connect(endpoint) as stub:
        card = await stub.Describe(
            agent_pb2.DescribeRequest(), wait_for_ready=True, timeout=PATIENCE
        )
    assert card.name == "splitter"

    async with open_session(endpoint) as session:
        aid = await session.assign("text.split", {"text": "One.\n\nTwo."})
        assert [kind_of(await session.next_for(aid)) for _ in range(2)] == ["accepted", "progress"]
        process.send_signal(signal.SIGTERM)
        assert kind_of(await session.next_for("")) == "draining"
        failure = (await session.outcome(aid)).failure
        assert await session.ended()

    async with asyncio.timeout(drain_timeout + PATIENCE):
        code = await process.wait()
    assert (failure.code, failure.retryable) == ("draining", True)
    assert code == 0
