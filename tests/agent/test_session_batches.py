"""Batches on the Session, seen from the agent SDK: a real orchestrator-side client over mTLS.

The SDK says in its card that it reads batches, reads a batch's messages in order as if
each had come alone, and batches its own replies only for an orchestrator whose Ping said
it reads them: to one of today's protos every reply comes alone.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from agentmesh._proto.agentmesh.v1 import agent_pb2
from agentmesh.agent import AgentServer
from tests.agent.agent_support import PATIENCE, Recorder, SessionClient, kind_of, output_of
from tests.agent.conftest import Connect, Log, OpenSession, StartAgent

#: Assignments sent at once: enough for replies to pile up while one is written.
WIDE = 16


@pytest.fixture
async def roomy(start_agent: StartAgent) -> AsyncIterator[AgentServer]:
    """The recorder agent with room for ``WIDE`` runs at once."""
    recorder = Recorder()
    recorder.max_concurrency = WIDE  # type: ignore[misc]
    async with start_agent(recorder) as running:
        yield running


async def _echo_all(session: SessionClient, batched: bool) -> list[str]:
    """Send ``WIDE`` echo assignments (in one batch or one by one); wait for every outcome."""
    messages = [session.assignment("test.echo", {"text": f"t{i}"}) for i in range(WIDE)]
    if batched:
        await session.send_batch(*messages)
    else:
        for message in messages:
            await session.call.write(message)
    ids = [message.assignment.assignment_id for message in messages]
    for i, aid in enumerate(ids):
        replies = await session.replies(aid)
        assert [kind_of(m) for m in replies] == ["accepted", "progress", "progress", "result"]
        assert output_of(replies[-1]) == {"text": f"t{i}"}
    return ids


async def test_the_card_says_the_sdk_reads_batches(server: AgentServer, connect: Connect) -> None:
    async with connect(server) as stub:
        described = await stub.Describe(agent_pb2.DescribeRequest(), timeout=PATIENCE)

    assert described.reads_batches
    assert server.card.reads_batches


async def test_an_orchestrator_that_never_said_it_reads_batches_gets_every_reply_alone(
    roomy: AgentServer, open_session: OpenSession
) -> None:
    async with open_session(roomy) as session:
        await session.ping(1)
        await _echo_all(session, batched=False)

    assert len(session.received) == 1 + 4 * WIDE
    assert "batch" not in [kind_of(m) for m in session.received]


async def test_a_batch_of_assignments_runs_each_and_the_replies_come_back_batched(
    roomy: AgentServer, open_session: OpenSession
) -> None:
    async with open_session(roomy) as session:
        await session.ping(1, reads_batches=True)
        await _echo_all(session, batched=True)

    kinds = [kind_of(m) for m in session.received]
    assert "batch" in kinds
    carried = sum(len(m.batch.messages) for m in session.received if kind_of(m) == "batch")
    assert (
        carried + kinds.count("accepted") + kinds.count("progress") + kinds.count("result")
        == 4 * WIDE
    )


async def test_a_cancel_batched_after_its_assignment_stops_the_run(
    session: SessionClient,
) -> None:
    block = session.assignment("test.block")
    aid = block.assignment.assignment_id
    cancel = session.cancel_message(aid, "task stopped")

    await session.send_batch(block, cancel)
    replies = await session.replies(aid)

    assert [kind_of(m) for m in replies] == ["accepted", "failure"]
    assert (replies[-1].failure.code, replies[-1].failure.message) == ("cancelled", "task stopped")
    # Stopped before or after the handler began, it runs no more.
    assert (await session.ping(1)).active == 0


async def test_a_batch_inside_a_batch_is_refused_naming_the_field_and_the_rest_still_runs(
    session: SessionClient, recorder: Recorder, captured: Log
) -> None:
    first = session.assignment("test.echo", {"text": "outer"})
    nested = session.assignment("test.echo", {"text": "nested"})
    inner = session.batch_message(nested)

    await session.send_batch(first, inner)
    assert output_of(await session.outcome(first.assignment.assignment_id)) == {"text": "outer"}

    assert (await session.ping(1)).active == 0
    assert recorder.runs == {"outer": 1}
    refusals = [e for e in captured if e["event"] == "session.invalid_batch"]
    assert [e["reason"] for e in refusals] == ["batch.messages[1]: a batch may not hold a batch"]


async def test_a_quick_runs_accepted_waits_for_its_outcome_and_shares_its_message(
    server: AgentServer, open_session: OpenSession
) -> None:
    # Nothing waits for Accepted: held a few loop turns, it goes out with the outcome of a
    # run that ends at once, one message instead of two.
    async with open_session(server) as session:
        await session.ping(1, reads_batches=True)
        message = session.assignment("test.fail", {"mode": "step"})
        await session.call.write(message)
        aid = message.assignment.assignment_id
        replies = await session.replies(aid)

    assert [kind_of(m) for m in replies] == ["accepted", "failure"]
    (together,) = [m for m in session.received if kind_of(m) == "batch"]
    assert [kind_of(m) for m in together.batch.messages] == ["accepted", "failure"]
