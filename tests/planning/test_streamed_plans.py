"""The LLM planner's streamed plans, against a real local server streaming chat completions."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from agentmesh.errors import AgentUnavailable, FailedPrecondition, ValidationError
from agentmesh.limits import PlanLimits
from agentmesh.models import Capability, Plan, StepSpec, TaskRequest
from agentmesh.orchestrator.planning import (
    Catalog,
    CatalogPlanner,
    ChainPlanner,
    LLMPlanner,
    PlanDraft,
    draft_plan,
)
from agentmesh.orchestrator.planning.stream import StepByStep, json_lines
from tests.planning.support import make_plan
from tests.support.chat import ChatServer

REQUEST = TaskRequest(goal="Count the words of the text", input={"text": "Hello there."})
SPLIT = {"id": "split", "capability": "text.split", "input": {"text": "${input.text}"}}
ANALYZE = {
    "id": "analyze",
    "capability": "text.analyze",
    "for_each": "${steps.split.output.sections}",
    "input": {"text": "${item}"},
}
AGGREGATE = {"aggregate": {"strategy": "concat", "field": "keywords", "steps": ["analyze"]}}


def streaming(server: ChatServer) -> LLMPlanner:
    return LLMPlanner(server.base_url, "test-model", "sk-test", stream=True, timeout=10)


async def _rest(draft: PlanDraft) -> list[StepSpec | Plan]:
    assert draft.rest is not None
    return [piece async for piece in draft.rest]


async def test_the_first_step_is_handed_over_before_the_model_has_written_the_rest(
    chat_server: ChatServer, demo_capabilities: dict[str, Capability]
) -> None:
    gate = asyncio.Event()
    reply = chat_server.stream(
        [json.dumps(SPLIT), json.dumps(ANALYZE), json.dumps(AGGREGATE)], gate=gate
    )
    async with streaming(chat_server) as planner:
        draft = await planner.draft(REQUEST, demo_capabilities)
        assert [s.id for s in draft.plan.steps] == ["split"]
        assert not draft.complete
        assert not reply.final_sent
        gate.set()
        rest = await _rest(draft)
    assert [type(p).__name__ for p in rest] == ["StepSpec", "Plan"]
    final = rest[-1]
    assert isinstance(final, Plan)
    assert [s.id for s in final.steps] == ["split", "analyze"]
    assert final.aggregate == AGGREGATE["aggregate"]
    body = chat_server.requests[0]["json"]
    assert body["stream"] is True
    assert "response_format" not in body
    assert chat_server.requests[0]["headers"]["authorization"] == "Bearer sk-test"


async def test_a_later_step_that_breaks_the_plan_ends_the_stream_naming_it(
    chat_server: ChatServer, demo_capabilities: dict[str, Capability]
) -> None:
    # "analyze" references a step that comes after it: invalid where it stands.
    early = {**ANALYZE, "for_each": "${steps.later.output.sections}"}
    chat_server.stream([json.dumps(SPLIT), json.dumps(early), json.dumps(SPLIT)])
    async with streaming(chat_server) as planner:
        draft = await planner.draft(REQUEST, demo_capabilities)
        with pytest.raises(ValidationError) as broken:
            await _rest(draft)
    assert broken.value.field == "goal"
    assert "plan.steps[1]" in broken.value.message
    assert "no step 'later'" in broken.value.message


async def test_an_invalid_first_step_declines_the_goal_so_the_chain_can_go_on(
    chat_server: ChatServer, demo_capabilities: dict[str, Capability]
) -> None:
    chat_server.stream([json.dumps({"id": "x", "capability": "text.count", "input": {}})])
    chain = ChainPlanner([streaming(chat_server)])
    async with chain:
        with pytest.raises(ValidationError) as declined:
            await chain.draft(REQUEST, demo_capabilities)
    assert declined.value.field == "goal"
    assert "text.count" in declined.value.message


async def test_a_server_that_does_not_stream_is_read_as_one_plan(
    chat_server: ChatServer, demo_capabilities: dict[str, Capability]
) -> None:
    chat_server.answer({"steps": [SPLIT, ANALYZE], **AGGREGATE})
    async with streaming(chat_server) as planner:
        draft = await planner.draft(REQUEST, demo_capabilities)
        rest = await _rest(draft)
    assert [s.id for s in draft.plan.steps] == ["split"]
    final = rest[-1]
    assert isinstance(final, Plan)
    assert [s.id for s in final.steps] == ["split", "analyze"]


@pytest.mark.parametrize(
    ("status", "error"),
    [(503, AgentUnavailable), (429, AgentUnavailable), (401, FailedPrecondition)],
)
async def test_a_refusing_endpoint_fails_the_draft_as_a_one_shot_plan_does(
    chat_server: ChatServer,
    demo_capabilities: dict[str, Capability],
    status: int,
    error: type[Exception],
) -> None:
    chat_server.reply(status, {"error": "nope"})
    async with streaming(chat_server) as planner:
        with pytest.raises(error):
            await planner.draft(REQUEST, demo_capabilities)


async def test_a_garbled_chunk_is_unavailable_not_a_crash(
    chat_server: ChatServer, demo_capabilities: dict[str, Capability]
) -> None:
    chat_server.reply(200, "not a completion")
    async with streaming(chat_server) as planner:
        with pytest.raises(AgentUnavailable):
            await planner.draft(REQUEST, demo_capabilities)


async def test_without_stream_or_with_a_given_plan_the_draft_is_complete(
    chat_server: ChatServer, demo_capabilities: dict[str, Capability]
) -> None:
    chat_server.answer({"steps": [SPLIT]})
    async with LLMPlanner(chat_server.base_url, "m") as one_shot:
        draft = await one_shot.draft(REQUEST, demo_capabilities)
    assert draft.complete
    assert [s.id for s in draft.plan.steps] == ["split"]
    given = TaskRequest(plan=make_plan(SPLIT))
    async with streaming(chat_server) as planner:
        assert (await planner.draft(given, demo_capabilities)).complete
    catalog = await draft_plan(CatalogPlanner(Catalog()), given, demo_capabilities)
    assert catalog.complete
    await catalog.close()  # nothing to close: harmless


async def _chunks(*parts: str) -> AsyncIterator[str]:
    for part in parts:
        yield part


async def _objects(*parts: str) -> list[dict[str, Any]]:
    return [o async for o in json_lines(_chunks(*parts))]


async def test_json_lines_are_read_whatever_the_chunks_cut() -> None:
    assert await _objects('{"a"', ": 1}\n\n```json\n", '{"b": 2}', "\n```") == [
        {"a": 1},
        {"b": 2},
    ]
    assert await _objects('{"c": 3}') == [{"c": 3}]  # the last line without a newline
    pretty = json.dumps({"steps": [SPLIT]}, indent=2)
    assert await _objects(pretty) == [{"steps": [SPLIT]}]
    with pytest.raises(ValidationError, match="one JSON object"):
        await _objects("[1, 2]\n")
    with pytest.raises(ValidationError, match="not JSON lines"):
        await _objects("{ half\n")
    with pytest.raises(ValidationError, match="not a JSON object"):
        await _objects("[\n1\n]")


def test_each_step_is_checked_with_the_steps_before_it(
    demo_capabilities: dict[str, Capability],
) -> None:
    steps = StepByStep(demo_capabilities, PlanLimits(max_steps=2))
    assert steps.add(SPLIT).id == "split"
    with pytest.raises(ValidationError) as duplicate:
        steps.add(SPLIT)
    assert duplicate.value.field == "plan.steps[1].id"
    with pytest.raises(ValidationError) as shapeless:
        steps.add("split")
    assert shapeless.value.field == "plan.steps[1]"
    with pytest.raises(ValidationError) as typed:
        steps.add({"id": "n", "capability": 3})
    assert (typed.value.field or "").startswith("plan.steps[1]")
    steps.add(ANALYZE)
    with pytest.raises(ValidationError, match="exceed the limit"):
        steps.add({**SPLIT, "id": "third"})
    with pytest.raises(ValidationError) as aggregate:
        steps.finish([1])
    assert aggregate.value.field == "plan.aggregate"
    assert steps.finish(None).aggregate == {}
