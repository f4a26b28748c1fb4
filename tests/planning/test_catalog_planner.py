"""Planning from the catalog: given plans, named workflows, goals; and chains of planners."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pytest

from agentmesh.config import Settings
from agentmesh.errors import ValidationError
from agentmesh.models import Capability, Plan, TaskRequest
from agentmesh.orchestrator.planning import (
    Catalog,
    CatalogPlanner,
    ChainPlanner,
    Planner,
    default_planner,
)
from tests.planning.support import make_plan

BRIEF_INPUT = {"text": "A long report.", "title": "Q3"}


@pytest.fixture
def planner() -> CatalogPlanner:
    return CatalogPlanner(Catalog.builtin())


async def test_a_given_plan_is_validated_and_returned_as_it_is(
    planner: CatalogPlanner, demo_capabilities: dict[str, Capability]
) -> None:
    plan = make_plan({"id": "a", "capability": "text.analyze", "input": {"text": "hi"}})
    assert await planner.plan(TaskRequest(plan=plan), demo_capabilities) is plan


async def test_a_given_invalid_plan_is_rejected_with_its_field(
    planner: CatalogPlanner, demo_capabilities: dict[str, Capability]
) -> None:
    plan = make_plan({"id": "a", "capability": "text.analyze", "input": {"text": 5}})
    with pytest.raises(ValidationError) as caught:
        await planner.plan(TaskRequest(plan=plan), demo_capabilities)
    assert caught.value.field == "plan.steps[0].input.text"


async def test_a_named_workflow_becomes_its_plan(
    planner: CatalogPlanner, demo_capabilities: dict[str, Capability]
) -> None:
    request = TaskRequest(workflow="publish-brief", input=BRIEF_INPUT)
    plan = await planner.plan(request, demo_capabilities)
    assert plan == Catalog.builtin().get("publish-brief").to_plan()


async def test_an_unknown_workflow_is_rejected_naming_the_known_ones(
    planner: CatalogPlanner, demo_capabilities: dict[str, Capability]
) -> None:
    with pytest.raises(ValidationError) as caught:
        await planner.plan(TaskRequest(workflow="nope"), demo_capabilities)
    assert caught.value.field == "workflow"
    assert caught.value.message == (
        "no workflow 'nope'; known: document-brief, publish-brief, table-insight"
    )


async def test_the_task_input_must_fit_the_workflows_input_schema(
    planner: CatalogPlanner, demo_capabilities: dict[str, Capability]
) -> None:
    request = TaskRequest(workflow="document-brief", input={"text": "", "title": "T"})
    with pytest.raises(ValidationError) as caught:
        await planner.plan(request, demo_capabilities)
    assert caught.value.field == "input.text"


async def test_a_workflow_whose_capabilities_nobody_offers_is_rejected(
    planner: CatalogPlanner,
) -> None:
    request = TaskRequest(workflow="document-brief", input=BRIEF_INPUT)
    with pytest.raises(ValidationError) as caught:
        await planner.plan(request, {})
    assert caught.value.field == "plan.steps[0].capability"


@pytest.mark.parametrize(
    ("goal", "workflow"),
    [
        ("Summarize this document into a brief", "document-brief"),
        ("write a short summary of this text", "document-brief"),
        ("analyze the sentiment of each section of this text", "document-brief"),
        ("Summarize the report and publish it online", "publish-brief"),
        ("publish a brief of this document", "publish-brief"),
    ],
)
async def test_a_goal_picks_the_best_fitting_workflow(
    planner: CatalogPlanner, demo_capabilities: dict[str, Capability], goal: str, workflow: str
) -> None:
    plan = await planner.plan(TaskRequest(goal=goal, input=BRIEF_INPUT), demo_capabilities)
    assert plan == Catalog.builtin().get(workflow).to_plan()


@pytest.mark.parametrize(
    "goal", ["Book a flight to Paris", "what is the weather tomorrow?", "sort these numbers"]
)
async def test_a_goal_no_workflow_fits_is_refused(
    planner: CatalogPlanner, demo_capabilities: dict[str, Capability], goal: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        await planner.plan(TaskRequest(goal=goal, input=BRIEF_INPUT), demo_capabilities)
    assert caught.value.field == "goal"
    assert "no workflow fits the goal (similarity below 0.2)" in caught.value.message


def test_the_ranking_explains_itself_with_shared_terms(planner: CatalogPlanner) -> None:
    best, other, *_ = planner.rank("Publish the summary online")
    assert best.key == "publish-brief"
    assert best.terms[0] == "publish"
    assert set(best.terms) == {"publish", "summar", "online"}
    assert 0 < other.score < best.score <= 1


def test_the_threshold_is_configurable() -> None:
    strict = CatalogPlanner(Catalog.builtin(), min_score=0.99)
    with pytest.raises(ValidationError, match=r"closest: document-brief \(0\.\d\d\)"):
        strict.select("summarize a document")


def test_an_empty_catalog_fits_no_goal() -> None:
    with pytest.raises(ValidationError, match="no workflow fits the goal") as caught:
        CatalogPlanner(Catalog()).select("summarize a document")
    assert caught.value.field == "goal"


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        (TaskRequest(), "a task needs a plan, a workflow or a goal"),
        (TaskRequest(goal="   "), "a task needs a plan, a workflow or a goal"),
        (TaskRequest(workflow="a", goal="b"), "give only one of workflow and goal"),
        (
            TaskRequest(plan=make_plan({"id": "a"}), workflow="w"),
            "give only one of plan and workflow",
        ),
    ],
)
async def test_a_request_names_exactly_one_of_plan_workflow_and_goal(
    planner: CatalogPlanner, request_: TaskRequest, message: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        await planner.plan(request_, {})
    assert (caught.value.field, caught.value.message) == ("spec", message)


def test_planners_satisfy_the_planner_protocol(planner: CatalogPlanner) -> None:
    assert isinstance(planner, Planner)
    assert isinstance(ChainPlanner([planner]), Planner)


class Scripted:
    """A planner that records its calls and answers a plan or raises an error."""

    def __init__(self, outcome: Plan | Exception) -> None:
        self.outcome = outcome
        self.calls: list[TaskRequest] = []

    async def plan(self, request: TaskRequest, capabilities: Mapping[str, Capability]) -> Plan:
        self.calls.append(request)
        if isinstance(self.outcome, Exception):
            raise self.outcome
        return self.outcome


async def test_a_chain_passes_a_goal_the_catalog_declines_to_the_next_planner(
    planner: CatalogPlanner, demo_capabilities: dict[str, Capability]
) -> None:
    fallback_plan = make_plan({"id": "x", "capability": "text.analyze"})
    fallback = Scripted(fallback_plan)
    chain = ChainPlanner([planner, fallback])
    plan = await chain.plan(TaskRequest(goal="Book a flight to Paris"), demo_capabilities)
    assert plan is fallback_plan
    assert len(fallback.calls) == 1


async def test_a_chain_stops_at_the_first_planner_that_plans(
    planner: CatalogPlanner, demo_capabilities: dict[str, Capability]
) -> None:
    fallback = Scripted(make_plan({"id": "x"}))
    chain = ChainPlanner([planner, fallback])
    request = TaskRequest(goal="summarize this document", input=BRIEF_INPUT)
    assert await chain.plan(request, demo_capabilities) == (
        Catalog.builtin().get("document-brief").to_plan()
    )
    assert fallback.calls == []


@pytest.mark.parametrize(
    "request_",
    [
        TaskRequest(workflow="nope"),
        TaskRequest(goal="summarize this document", input={"title": "no text"}),
    ],
)
async def test_a_chain_does_not_pass_on_errors_other_than_a_declined_goal(
    planner: CatalogPlanner, demo_capabilities: dict[str, Capability], request_: TaskRequest
) -> None:
    fallback = Scripted(make_plan({"id": "x"}))
    with pytest.raises(ValidationError) as caught:
        await ChainPlanner([planner, fallback]).plan(request_, demo_capabilities)
    assert caught.value.field != "goal"
    assert fallback.calls == []


async def test_a_chain_where_every_planner_declines_reports_every_reason(
    planner: CatalogPlanner, demo_capabilities: dict[str, Capability]
) -> None:
    fallback = Scripted(ValidationError("the model is out of ideas", field="goal"))
    with pytest.raises(ValidationError) as caught:
        await ChainPlanner([planner, fallback]).plan(
            TaskRequest(goal="Book a flight to Paris"), demo_capabilities
        )
    assert caught.value.field == "goal"
    assert "no workflow fits the goal" in caught.value.message
    assert caught.value.message.endswith("; the model is out of ideas")


def test_a_chain_needs_a_planner() -> None:
    with pytest.raises(ValueError, match="at least one planner"):
        ChainPlanner([])


async def test_the_default_planner_serves_builtin_and_configured_workflows(
    tmp_path: Path, demo_capabilities: dict[str, Capability]
) -> None:
    (tmp_path / "mine.yaml").write_text(
        "name: mine\nsteps: [{id: a, capability: text.analyze, input: {text: hi}}]\n"
    )
    (tmp_path / "brief.yaml").write_text(
        "name: document-brief\nsteps: [{id: only, capability: text.analyze, input: {text: x}}]\n"
    )
    planner = default_planner(Settings(workflows_dir=tmp_path))
    assert isinstance(planner, CatalogPlanner)
    mine = await planner.plan(TaskRequest(workflow="mine"), demo_capabilities)
    assert [s.id for s in mine.steps] == ["a"]
    # A configured workflow replaces the built-in one of the same name.
    brief = await planner.plan(TaskRequest(workflow="document-brief"), demo_capabilities)
    assert [s.id for s in brief.steps] == ["only"]
    publish = await planner.plan(
        TaskRequest(workflow="publish-brief", input=BRIEF_INPUT), demo_capabilities
    )
    assert publish == Catalog.builtin().get("publish-brief").to_plan()


async def test_without_configuration_the_default_planner_serves_the_builtin_workflows(
    demo_capabilities: dict[str, Capability],
) -> None:
    planner = default_planner(Settings())
    with pytest.raises(ValidationError) as caught:
        await planner.plan(TaskRequest(workflow="mine"), demo_capabilities)
    assert caught.value.message.endswith("known: document-brief, publish-brief, table-insight")
