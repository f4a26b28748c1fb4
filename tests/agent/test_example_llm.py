"""The LLM agent against the local chat-completions server: streaming, tools, usage, errors."""

from __future__ import annotations

import pytest

from agentmesh.examples.fake_llm import ChatServer
from agentmesh.examples.llm import LLMAgent, LLMSettings
from tests.agent.agent_support import kind_of, output_of
from tests.agent.conftest import OpenSession, StartAgent


def _agent(server: ChatServer, **settings: object) -> LLMAgent:
    return LLMAgent(
        LLMSettings(base_url=server.base_url, model="m", api_key="k", progress_every=2, **settings)
    )


async def test_a_chat_streams_progress_as_tokens_arrive_and_reports_usage(
    start_agent: StartAgent, open_session: OpenSession
) -> None:
    async with ChatServer() as model:
        model.answer("one two three four five six seven")
        async with (
            start_agent(_agent(model), name="llm") as server,
            open_session(server) as session,
        ):
            aid = await session.assign(
                "llm.chat", {"messages": [{"role": "user", "content": "count to seven"}]}
            )
            replies = await session.replies(aid)

    progress = [m.progress.message for m in replies if kind_of(m) == "progress"]
    assert progress[0] == "2 tokens: one two "
    assert progress[-1] == "6 tokens: one two three four five six "
    out = output_of(replies[-1])
    assert out["content"] == "one two three four five six seven"
    assert out["usage"] == {"input_tokens": 3, "output_tokens": 7}
    # ...and with the Result itself, where the task's budget counts it.
    usage = replies[-1].result.usage
    assert (usage.input_tokens, usage.output_tokens) == (3, 7)
    assert out["finish_reason"] == "stop"
    request = model.requests[0]
    assert request["headers"]["authorization"] == "Bearer k"
    assert request["json"]["model"] == "m"
    assert request["json"]["stream_options"] == {"include_usage": True}


async def test_tool_calls_come_back_with_parsed_arguments(
    start_agent: StartAgent, open_session: OpenSession
) -> None:
    tool = {"function": {"name": "lookup", "parameters": {"type": "object"}}}
    async with ChatServer() as model:
        model.call_tool("lookup", {"city": "Oslo", "days": 3})
        async with (
            start_agent(_agent(model), name="llm") as server,
            open_session(server) as session,
        ):
            aid = await session.assign(
                "llm.chat",
                {
                    "messages": [{"role": "user", "content": "weather?"}],
                    "tools": [tool],
                    "tool_choice": "lookup",
                },
            )
            out = output_of(await session.outcome(aid))

    assert out["tool_calls"] == [
        {"id": "call_0", "name": "lookup", "arguments": {"city": "Oslo", "days": 3}}
    ]
    assert out["finish_reason"] == "tool_calls"
    sent = model.requests[0]["json"]
    assert sent["tool_choice"] == {"type": "function", "function": {"name": "lookup"}}


async def test_write_code_takes_a_code_block_from_a_model_without_tools(
    start_agent: StartAgent, open_session: OpenSession
) -> None:
    async with ChatServer() as model:
        model.answer("Here:\n```python\nprint(42)\n```\n")
        async with (
            start_agent(_agent(model), name="llm") as server,
            open_session(server) as session,
        ):
            aid = await session.assign("llm.write_code", {"task": "print 42"})
            out = output_of(await session.outcome(aid))

    assert out["code"] == "print(42)\n"


@pytest.mark.parametrize(
    ("status", "code", "retryable"),
    [(401, "llm_refused", False), (503, "llm_unavailable", True), (429, "llm_unavailable", True)],
)
async def test_an_endpoint_error_fails_the_assignment_with_its_status(
    start_agent: StartAgent, open_session: OpenSession, status: int, code: str, retryable: bool
) -> None:
    async with ChatServer() as model:
        model.reply(status, {"error": {"message": "nope"}})
        async with (
            start_agent(_agent(model), name="llm") as server,
            open_session(server) as session,
        ):
            aid = await session.assign(
                "llm.chat", {"messages": [{"role": "user", "content": "hi"}]}
            )
            reply = await session.outcome(aid)

    assert kind_of(reply) == "failure"
    assert reply.failure.code == code
    assert reply.failure.retryable is retryable
    assert (
        f"answered {status}" in reply.failure.message or f"with {status}" in reply.failure.message
    )


async def test_without_a_configured_endpoint_the_failure_says_what_to_set(
    start_agent: StartAgent, open_session: OpenSession
) -> None:
    async with (
        start_agent(LLMAgent(LLMSettings(base_url="")), name="llm") as server,
        open_session(server) as session,
    ):
        aid = await session.assign("llm.write_code", {"task": "anything"})
        reply = await session.outcome(aid)

    assert reply.failure.code == "llm_not_configured"
    assert "AGENTMESH_LLM_BASE_URL" in reply.failure.message
    assert not reply.failure.retryable


async def test_a_model_that_writes_no_program_fails_clearly(
    start_agent: StartAgent, open_session: OpenSession
) -> None:
    async with ChatServer() as model:
        model.answer("I would rather not.")
        async with (
            start_agent(_agent(model), name="llm") as server,
            open_session(server) as session,
        ):
            aid = await session.assign("llm.write_code", {"task": "anything"})
            reply = await session.outcome(aid)

    assert reply.failure.code == "llm_bad_output"
    assert "wrote no program" in reply.failure.message
