"""The LLM planner against a real local server speaking OpenAI chat completions."""

from __future__ import annotations

import json
import socket
from types import SimpleNamespace
from typing import Any

import pytest

from agentmesh.errors import AgentUnavailable, FailedPrecondition, ValidationError
from agentmesh.models import Capability, TaskRequest
from agentmesh.orchestrator.planning import (
    Catalog,
    CatalogPlanner,
    ChainPlanner,
    LLMPlanner,
    default_planner,
    system_prompt,
)
from tests.planning.support import make_plan
from tests.support.chat import ChatServer

GOAL = "Count the words of the text"
REQUEST = TaskRequest(goal=GOAL, input={"text": "Hello there. General Kenobi."})

VALID = {
    "steps": [
        {"id": "split", "capability": "text.split", "input": {"text": "${input.text}"}},
        {
            "id": "analyze",
            "capability": "text.analyze",
            "for_each": "${steps.split.output.sections}",
            "input": {"text": "${item}"},
        },
    ],
    "aggregate": {"strategy": "concat", "field": "keywords", "steps": ["analyze"]},
}
# Names a capability nobody offers.
INVALID = {"steps": [{"id": "count", "capability": "text.count", "input": {"text": "x"}}]}


def llm(server: ChatServer, **kwargs: Any) -> LLMPlanner:
    return LLMPlanner(server.base_url, "test-model", "sk-test", **kwargs)


async def test_a_valid_answer_becomes_the_plan(
    chat_server: ChatServer, demo_capabilities: dict[str, Capability]
) -> None:
    chat_server.answer(VALID)
    async with llm(chat_server) as planner:
        plan = await planner.plan(REQUEST, demo_capabilities)
    assert [s.id for s in plan.steps] == ["split", "analyze"]
    assert plan.steps[1].for_each == "${steps.split.output.sections}"
    assert plan.aggregate == VALID["aggregate"]
    assert len(chat_server.requests) == 1


async def test_the_request_speaks_the_openai_chat_completions_protocol(
    chat_server: ChatServer, demo_capabilities: dict[str, Capability]
) -> None:
    chat_server.answer(VALID)
    async with llm(chat_server, temperature=0.3) as planner:
        await planner.plan(REQUEST, demo_capabilities)
    (request,) = chat_server.requests
    assert (request["method"], request["path"]) == ("POST", "/v1/chat/completions")
    assert request["headers"]["authorization"] == "Bearer sk-test"
    body = request["json"]
    assert body["model"] == "test-model"
    assert body["temperature"] == 0.3
    assert body["response_format"] == {"type": "json_object"}
    system, user = body["messages"]
    assert (system["role"], user["role"]) == ("system", "user")
    assert system["content"] == system_prompt(demo_capabilities)
    assert GOAL in user["content"]
    assert '"text": "Hello there. General Kenobi."' in user["content"]


def test_the_system_prompt_lists_capabilities_with_schemas_and_the_reference_syntax(
    demo_capabilities: dict[str, Capability],
) -> None:
    prompt = system_prompt(demo_capabilities)
    listed = json.loads(prompt.split("Capabilities:\n", 1)[1])
    assert {c["name"]: c["input_schema"] for c in listed} == {
        name: c.input_schema for name, c in demo_capabilities.items()
    }
    assert listed[0]["output_schema"] == demo_capabilities["text.analyze"].output_schema
    for syntax in ("${input.KEY}", "${steps.ID.output.FIELD}", "${item}", "${index}", "for_each"):
        assert syntax in prompt


async def test_long_task_inputs_are_shortened_in_the_prompt(
    chat_server: ChatServer, demo_capabilities: dict[str, Capability]
) -> None:
    chat_server.answer(VALID)
    request = TaskRequest(
        goal=GOAL,
        input={"text": "x" * 10_000, "items": list(range(50)), "deep": [[[[[[[["bottom"]]]]]]]]},
    )
    async with llm(chat_server) as planner:
        await planner.plan(request, demo_capabilities)
    user = chat_server.messages(0)[1]["content"]
    assert "x" * 200 + "..." in user
    assert "x" * 201 not in user
    assert '"... 40 more"' in user
    assert "bottom" not in user


async def test_an_invalid_plan_gets_one_repair_round_with_the_validation_error(
    chat_server: ChatServer, demo_capabilities: dict[str, Capability]
) -> None:
    chat_server.answer(INVALID)
    chat_server.answer(VALID)
    async with llm(chat_server) as planner:
        plan = await planner.plan(REQUEST, demo_capabilities)
    assert [s.id for s in plan.steps] == ["split", "analyze"]
    assert len(chat_server.requests) == 2
    first, repair = chat_server.messages(0), chat_server.messages(1)
    assert repair[:2] == first
    assert repair[2] == {"role": "assistant", "content": json.dumps(INVALID)}
    assert repair[3]["role"] == "user"
    assert (
        "plan.steps[0].capability: unknown capability 'text.count': no agent offers it"
        in repair[3]["content"]
    )


async def test_a_plan_still_invalid_after_the_repair_is_rejected_with_the_reason(
    chat_server: ChatServer, demo_capabilities: dict[str, Capability]
) -> None:
    chat_server.answer(INVALID)
    chat_server.answer({"steps": [{"id": "a", "capability": "text.split", "needs": ["b"]}]})
    with pytest.raises(ValidationError) as caught:
        async with llm(chat_server) as planner:
            await planner.plan(REQUEST, demo_capabilities)
    assert caught.value.field == "goal"
    assert caught.value.message == (
        "the model gave no valid plan after one repair:"
        " plan.steps[0].needs[0]: no step 'b' in the plan"
    )
    assert len(chat_server.requests) == 2


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        ("Sure! Here is your plan.", "plan: the answer is not JSON"),
        ("[1, 2]", "plan: the answer is not a JSON object"),
        ('{"steps": [{"id": "a"}]}', "plan.steps[0].capability: a step needs a capability"),
        ('{"steps": [], "extra": 1}', "plan.extra: Extra inputs are not permitted"),
        ('{"steps": []}', "plan.steps: a plan needs at least one step"),
    ],
)
async def test_answers_that_are_no_plan_are_repaired_too(
    chat_server: ChatServer, demo_capabilities: dict[str, Capability], answer: str, reason: str
) -> None:
    chat_server.answer(answer)
    chat_server.answer(VALID)
    async with llm(chat_server) as planner:
        await planner.plan(REQUEST, demo_capabilities)
    assert reason in chat_server.messages(1)[3]["content"]


async def test_a_plan_in_a_code_fence_or_under_a_plan_key_is_accepted(
    chat_server: ChatServer, demo_capabilities: dict[str, Capability]
) -> None:
    chat_server.answer("```json\n" + json.dumps(VALID) + "\n```")
    chat_server.answer({"plan": VALID})
    async with llm(chat_server) as planner:
        first = await planner.plan(REQUEST, demo_capabilities)
        second = await planner.plan(REQUEST, demo_capabilities)
    assert first == second
    assert len(chat_server.requests) == 2


async def test_an_unreachable_endpoint_is_unavailable(
    demo_capabilities: dict[str, Capability],
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(
        AgentUnavailable, match=f"127.0.0.1:{port}/v1/chat/completions is unreachable"
    ):
        async with LLMPlanner(f"http://127.0.0.1:{port}/v1", "test-model") as planner:
            await planner.plan(REQUEST, demo_capabilities)


async def test_an_endpoint_that_does_not_answer_in_time_is_unavailable(
    chat_server: ChatServer, demo_capabilities: dict[str, Capability]
) -> None:
    chat_server.delay = 5.0
    chat_server.answer(VALID)
    with pytest.raises(AgentUnavailable, match=r"did not answer within 0\.2s"):
        async with llm(chat_server, timeout=0.2) as planner:
            await planner.plan(REQUEST, demo_capabilities)


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (500, AgentUnavailable),
        (503, AgentUnavailable),
        (429, AgentUnavailable),
        (401, FailedPrecondition),
        (404, FailedPrecondition),
    ],
)
async def test_http_errors_map_to_mesh_errors(
    chat_server: ChatServer,
    demo_capabilities: dict[str, Capability],
    status: int,
    error: type[Exception],
) -> None:
    chat_server.reply(status, {"error": {"message": "scripted failure"}})
    with pytest.raises(error, match=f"{status}.*scripted failure"):
        async with llm(chat_server) as planner:
            await planner.plan(REQUEST, demo_capabilities)


@pytest.mark.parametrize("body", ["not json", {"choices": []}, {"object": "list"}])
async def test_a_response_that_is_no_chat_completion_is_unavailable(
    chat_server: ChatServer, demo_capabilities: dict[str, Capability], body: Any
) -> None:
    chat_server.reply(200, body)
    with pytest.raises(AgentUnavailable, match="answered no chat completion"):
        async with llm(chat_server) as planner:
            await planner.plan(REQUEST, demo_capabilities)


async def test_an_empty_content_counts_as_an_invalid_plan(
    chat_server: ChatServer, demo_capabilities: dict[str, Capability]
) -> None:
    chat_server.reply(200, {"choices": [{"message": {"role": "assistant", "content": None}}]})
    chat_server.answer(VALID)
    async with llm(chat_server) as planner:
        await planner.plan(REQUEST, demo_capabilities)
    assert "the answer is not JSON" in chat_server.messages(1)[3]["content"]


async def test_it_keeps_one_connection_for_all_requests_from_entry_to_exit(
    chat_server: ChatServer, demo_capabilities: dict[str, Capability]
) -> None:
    chat_server.answer(VALID)
    chat_server.answer(VALID)
    async with llm(chat_server) as planner:
        await planner.plan(REQUEST, demo_capabilities)
        await planner.plan(REQUEST, demo_capabilities)
    assert [r["connection"] for r in chat_server.requests] == [1, 1]
    # Outside the block there is no pool, and no plan() opens one of its own.
    with pytest.raises(RuntimeError, match="outside 'async with'"):
        await planner.plan(REQUEST, demo_capabilities)
    assert chat_server.connections == 1


async def test_no_api_key_sends_no_authorization(
    chat_server: ChatServer, demo_capabilities: dict[str, Capability]
) -> None:
    chat_server.answer(VALID)
    async with LLMPlanner(chat_server.base_url + "/", "m") as planner:
        await planner.plan(REQUEST, demo_capabilities)
    assert "authorization" not in chat_server.requests[0]["headers"]
    assert chat_server.requests[0]["path"] == "/v1/chat/completions"


async def test_a_given_plan_is_only_validated_and_a_workflow_is_not_its_business(
    chat_server: ChatServer, demo_capabilities: dict[str, Capability]
) -> None:
    plan = make_plan({"id": "a", "capability": "text.analyze", "input": {"text": "x"}})
    async with llm(chat_server) as planner:
        assert await planner.plan(TaskRequest(plan=plan), demo_capabilities) is plan
    with pytest.raises(ValidationError) as caught:
        async with llm(chat_server) as planner:
            await planner.plan(TaskRequest(workflow="document-brief"), demo_capabilities)
    assert caught.value.field == "workflow"
    assert chat_server.requests == []


async def test_without_capabilities_there_is_nothing_to_plan_with(chat_server: ChatServer) -> None:
    with pytest.raises(ValidationError, match="no capabilities") as caught:
        async with llm(chat_server) as planner:
            await planner.plan(REQUEST, {})
    assert caught.value.field == "goal"
    assert chat_server.requests == []


async def test_the_catalog_goes_first_and_the_model_gets_the_goals_it_declines(
    chat_server: ChatServer, demo_capabilities: dict[str, Capability]
) -> None:
    chain = ChainPlanner([CatalogPlanner(Catalog.builtin()), llm(chat_server)])
    brief = TaskRequest(goal="summarize this document", input={"text": "t", "title": "T"})
    async with chain:  # enters the LLM planner
        assert await chain.plan(brief, demo_capabilities) == (
            Catalog.builtin().get("document-brief").to_plan()
        )
        assert chat_server.requests == []
        chat_server.answer(VALID)
        plan = await chain.plan(
            TaskRequest(goal="Find cheap flights to Paris", input={}), demo_capabilities
        )
    assert [s.id for s in plan.steps] == ["split", "analyze"]
    assert len(chat_server.requests) == 1


async def test_the_default_planner_asks_the_configured_model_for_goals_no_workflow_fits(
    chat_server: ChatServer, demo_capabilities: dict[str, Capability]
) -> None:
    settings = SimpleNamespace(
        workflows_dir=None,
        llm_base_url=chat_server.base_url,
        llm_model="local-model",
        llm_api_key="",
        llm_timeout_seconds=5.0,
        llm_stream=False,
    )
    planner = default_planner(settings)  # type: ignore[arg-type]
    assert isinstance(planner, ChainPlanner)
    chat_server.answer(VALID)
    async with planner:
        plan = await planner.plan(TaskRequest(goal="Find cheap flights"), demo_capabilities)
    assert [s.id for s in plan.steps] == ["split", "analyze"]
    assert chat_server.requests[0]["json"]["model"] == "local-model"
