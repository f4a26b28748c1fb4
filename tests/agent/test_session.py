"""The Session protocol, spoken by a real orchestrator-side client over mTLS."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from agentmesh._proto.agentmesh.v1 import agent_pb2
from agentmesh.agent import AgentServer
from tests.agent.agent_support import (
    Recorder,
    SessionClient,
    kind_of,
    output_of,
    timestamp,
)
from tests.agent.conftest import OpenSession
from tests.support.waiting import eventually


async def test_an_assignment_is_accepted_then_reports_progress_then_its_result(
    session: SessionClient, recorder: Recorder
) -> None:
    aid = await session.assign("test.echo", {"text": "hello"}, attempt=3, compensation=True)

    replies = await session.replies(aid)

    assert [kind_of(m) for m in replies] == ["accepted", "progress", "progress", "result"]
    assert [(m.progress.fraction, m.progress.message) for m in replies[1:3]] == [
        (0.25, "started"),
        (0.75, "almost"),
    ]
    assert output_of(replies[-1]) == {"text": "hello"}
    ctx = recorder.contexts[0]
    assert (ctx.assignment_id, ctx.task_id, ctx.attempt, ctx.compensation) == (aid, "t1", 3, True)


async def test_an_unknown_capability_is_refused_for_good(session: SessionClient) -> None:
    aid = await session.assign("test.nope", {"text": "x"})

    failure = (await session.next_for(aid)).failure

    assert (failure.code, failure.retryable) == ("unknown_capability", False)
    assert "test.nope" in failure.message


async def test_invalid_input_is_refused_naming_the_field(session: SessionClient) -> None:
    missing = await session.assign("test.echo", {"delay": 1})
    mistyped = await session.assign("test.echo", {"text": "x", "delay": "soon"})

    first = (await session.next_for(missing)).failure
    second = (await session.next_for(mistyped)).failure

    assert (first.code, first.retryable) == ("invalid_input", False)
    assert first.message.startswith("text:")
    assert second.message.startswith("delay:")


async def test_a_crashing_handler_fails_retryably_with_the_exception(
    session: SessionClient,
) -> None:
    aid = await session.assign("test.fail", {"mode": "crash"})

    failure = (await session.outcome(aid)).failure

    assert (failure.code, failure.retryable) == ("error", True)
    assert failure.message == "RuntimeError: boom"


async def test_a_timeout_raised_by_the_handler_itself_is_an_error_not_a_deadline(
    session: SessionClient,
) -> None:
    aid = await session.assign("test.fail", {"mode": "own_timeout"})

    failure = (await session.outcome(aid)).failure

    assert (failure.code, failure.retryable) == ("error", True)
    assert "upstream took too long" in failure.message


async def test_step_failed_reports_its_own_code_and_retryability(session: SessionClient) -> None:
    aid = await session.assign("test.fail", {"mode": "step"})

    failure = (await session.outcome(aid)).failure

    assert (failure.code, failure.retryable) == ("rejected", False)
    assert failure.message == "the text is unacceptable"


async def test_an_output_that_breaks_the_schema_is_an_invalid_output(
    session: SessionClient,
) -> None:
    aid = await session.assign("test.fail", {"mode": "output"})

    failure = (await session.outcome(aid)).failure

    assert (failure.code, failure.retryable) == ("invalid_output", False)
    assert failure.message.startswith("text:")


async def test_work_beyond_max_concurrency_is_refused_as_busy_until_a_slot_frees(
    session: SessionClient,
) -> None:
    first = await session.assign("test.block")
    second = await session.assign("test.block")
    third = await session.assign("test.block")

    assert kind_of(await session.next_for(first)) == "accepted"
    assert kind_of(await session.next_for(second)) == "accepted"
    busy = (await session.next_for(third)).failure
    assert (busy.code, busy.retryable) == ("busy", True)

    await session.cancel(first)
    assert (await session.next_for(first)).failure.code == "cancelled"
    fourth = await session.assign("test.block")
    assert kind_of(await session.next_for(fourth)) == "accepted"


async def test_cancel_stops_the_handler_and_reports_cancelled(
    session: SessionClient, recorder: Recorder
) -> None:
    aid = await session.assign("test.block")
    assert kind_of(await session.next_for(aid)) == "accepted"

    await session.cancel(aid, "task cancelled by alice")
    failure = (await session.next_for(aid)).failure

    assert (failure.code, failure.retryable) == ("cancelled", False)
    assert failure.message == "task cancelled by alice"
    assert recorder.cancelled == [aid]


async def test_cancelling_an_unknown_assignment_changes_nothing(session: SessionClient) -> None:
    await session.cancel("never-sent")

    pong = await session.ping(1)

    assert (pong.nonce, pong.active) == (1, 0)


async def test_a_passed_deadline_cancels_the_handler_and_reports_a_timeout(
    session: SessionClient, recorder: Recorder
) -> None:
    deadline = datetime.now(UTC) + timedelta(seconds=0.3)
    aid = await session.assign("test.block", deadline=timestamp(deadline))

    replies = await session.replies(aid)

    assert [kind_of(m) for m in replies] == ["accepted", "failure"]
    assert (replies[-1].failure.code, replies[-1].failure.retryable) == ("timeout", True)
    assert recorder.cancelled == [aid]


async def test_ping_is_answered_with_the_nonce_and_the_running_count(
    session: SessionClient,
) -> None:
    assert (await session.ping(7)).active == 0
    for _ in range(2):
        aid = await session.assign("test.block")
        assert kind_of(await session.next_for(aid)) == "accepted"

    pong = await session.ping(2**40)

    assert (pong.nonce, pong.active) == (2**40, 2)


async def test_a_resent_key_with_a_final_outcome_is_answered_from_the_cache(
    session: SessionClient, recorder: Recorder
) -> None:
    first = await session.assign("test.echo", {"text": "once"}, key="k-1")
    assert output_of(await session.outcome(first)) == {"text": "once"}

    again = await session.assign("test.echo", {"text": "once"}, key="k-1")
    replies = await session.replies(again)

    assert [kind_of(m) for m in replies] == ["accepted", "result"]
    assert output_of(replies[-1]) == {"text": "once"}
    assert recorder.runs["once"] == 1


async def test_assignments_without_a_key_run_every_time(
    session: SessionClient, recorder: Recorder
) -> None:
    for _ in range(2):
        await session.outcome(await session.assign("test.echo", {"text": "twice"}))

    assert recorder.runs["twice"] == 2


async def test_a_resent_key_still_running_attaches_to_the_run_on_the_new_session(
    server: AgentServer, open_session: OpenSession, recorder: Recorder
) -> None:
    async with open_session(server) as first, open_session(server) as second:
        original = await first.assign("test.echo", {"text": "slow", "delay": 0.5}, key="k-2")
        assert kind_of(await first.next_for(original)) == "accepted"
        resent = await second.assign("test.echo", {"text": "slow", "delay": 0.5}, key="k-2")

        original_result = output_of(await first.outcome(original))
        resent_replies = await second.replies(resent)

    assert kind_of(resent_replies[0]) == "accepted"
    assert output_of(resent_replies[-1]) == original_result == {"text": "slow"}
    assert recorder.runs["slow"] == 1


async def test_work_outlives_its_session_and_its_outcome_awaits_a_resend(
    server: AgentServer, open_session: OpenSession, recorder: Recorder
) -> None:
    async with open_session(server) as doomed:
        aid = await doomed.assign("test.echo", {"text": "orphan", "delay": 0.3}, key="k-3")
        assert kind_of(await doomed.next_for(aid)) == "accepted"
    # The orchestrator "restarted": a new session re-sends the same attempt, once the run
    # has ended with no session to tell.
    async with open_session(server) as revived:
        await eventually(lambda: revived.ping(1), lambda pong: pong.active == 0)
        resent = await revived.assign("test.echo", {"text": "orphan", "delay": 0.3}, key="k-3")
        replies = await revived.replies(resent)

    assert [kind_of(m) for m in replies] == ["accepted", "result"]
    assert output_of(replies[-1]) == {"text": "orphan"}
    assert recorder.runs["orphan"] == 1


async def test_a_resent_key_whose_run_is_being_cancelled_is_refused_as_busy_not_joined(
    server: AgentServer, open_session: OpenSession, recorder: Recorder
) -> None:
    # An orchestrator that stopped cancelled the run; restarted, it sends the same attempt
    # again while the handler is still unwinding. Joining would report the cancellation,
    # which is final; busy is retried.
    async with open_session(server) as stopped, open_session(server) as restarted:
        aid = await stopped.assign("test.stubborn", {"seconds": 30}, key="k-5")
        assert kind_of(await stopped.next_for(aid)) == "accepted"
        await stopped.cancel(aid)
        await eventually(lambda: asyncio.sleep(0, recorder.cancelled), lambda seen: seen == [aid])

        resent = await restarted.assign("test.stubborn", {"seconds": 30}, key="k-5")
        refusal = await restarted.next_for(resent)

    assert kind_of(refusal) == "failure"
    assert (refusal.failure.code, refusal.failure.retryable) == ("busy", True)


async def test_a_half_closed_session_ends_once_its_assignments_are_answered(
    session: SessionClient,
) -> None:
    aid = await session.assign("test.echo", {"text": "bye", "delay": 0.2})
    await session.call.done_writing()

    assert await session.ended()
    assert output_of(await session.outcome(aid)) == {"text": "bye"}


async def test_an_assignment_without_an_id_is_refused(session: SessionClient) -> None:
    bare = agent_pb2.OrchestratorMessage(assignment=agent_pb2.Assignment(capability="test.echo"))
    await session.call.write(bare)

    failure = (await session.next_for("")).failure

    assert (failure.code, failure.retryable) == ("invalid_input", False)


async def test_an_empty_message_is_ignored(session: SessionClient) -> None:
    await session.call.write(agent_pb2.OrchestratorMessage())

    assert (await session.ping(5)).nonce == 5
