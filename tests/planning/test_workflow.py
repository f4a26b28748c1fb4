"""Workflow files, the catalog, and the built-in workflows of the demo agents."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import BaseModel

from agentmesh.errors import NotFound, ValidationError
from agentmesh.models import Capability, StepSpec
from agentmesh.orchestrator.planning import (
    Catalog,
    Workflow,
    load_workflow,
    parse_workflow,
    topological_order,
    validate_plan,
)

GOOD = """\
name: echo-twice
description: Echo the input, then echo the echo.
input_schema:
  type: object
  required: [text]
  properties:
    text: {type: string}
steps:
  - id: first
    capability: test.echo
    input: {text: "${input.text}"}
  - id: second
    capability: test.echo
    needs: [first]
    timeout_seconds: 2.5
    retry: {max_attempts: 4, initial_backoff_seconds: 0.1}
    input: {text: "again: ${steps.first.output.text}"}
aggregate: {strategy: pick, step: second, field: text}
"""


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def load_error(folder: Path, name: str, text: str) -> ValidationError:
    with pytest.raises(ValidationError) as caught:
        load_workflow(write(folder, name, text))
    return caught.value


# -- the built-in workflows ----------------------------------------------------------------


def test_the_builtin_catalog_has_the_demo_workflows() -> None:
    assert Catalog.builtin().names == ("document-brief", "publish-brief", "table-insight")


def _example_capabilities() -> dict[str, Capability]:
    """What the data, LLM and code-runner example agents declare."""
    from agentmesh.examples.code_runner import CodeRunner
    from agentmesh.examples.data import DataAgent
    from agentmesh.examples.llm import LLMAgent

    return {
        name: spec.capability
        for agent in (DataAgent, LLMAgent, CodeRunner)
        for name, spec in agent.specs().items()
    }


def test_the_table_insight_workflow_fits_the_example_agents() -> None:
    workflow = Catalog.builtin().get("table-insight")
    validate_plan(workflow.to_plan(), capabilities=_example_capabilities())


@pytest.mark.parametrize("name", ["document-brief", "publish-brief"])
def test_each_builtin_workflow_fits_the_demo_capabilities(
    name: str, demo_capabilities: dict[str, Capability]
) -> None:
    workflow = Catalog.builtin().get(name)
    assert workflow.description
    validate_plan(workflow.to_plan(), capabilities=demo_capabilities)


def test_the_builtin_workflows_fit_the_schemas_the_demo_agents_declare() -> None:
    from agentmesh.examples import schemas

    models: dict[str, type[BaseModel]] = {
        "text.split": schemas.SplitIn,
        "text.analyze": schemas.AnalyzeIn,
        "text.summarize": schemas.SummarizeIn,
        "text.publish": schemas.PublishIn,
        "text.unpublish": schemas.UnpublishIn,
    }
    capabilities = {
        name: Capability(name=name, input_schema=model.model_json_schema())
        for name, model in models.items()
    }
    capabilities.update(_example_capabilities())
    for workflow in Catalog.builtin():
        validate_plan(workflow.to_plan(), capabilities=capabilities)


def test_document_brief_splits_analyzes_each_section_and_summarizes() -> None:
    workflow = Catalog.builtin().get("document-brief")
    plan = workflow.to_plan()
    assert topological_order(plan) == ["split", "analyze", "summarize"]
    split, analyze, summarize = plan.steps
    assert (split.capability, split.input["text"]) == ("text.split", "${input.text}")
    assert analyze.capability == "text.analyze"
    assert analyze.for_each == "${steps.split.output.sections}"
    assert analyze.input == {"text": "${item}"}
    assert summarize.capability == "text.summarize"
    assert summarize.input["analyses"] == "${steps.analyze.output}"
    assert plan.aggregate == {"strategy": "pick", "step": "summarize"}


def test_publish_brief_publishes_the_summary_and_can_take_it_down_again() -> None:
    plan = Catalog.builtin().get("publish-brief").to_plan()
    assert topological_order(plan) == ["split", "analyze", "summarize", "publish"]
    publish = plan.steps[-1]
    assert publish.capability == "text.publish"
    assert publish.compensation == "text.unpublish"
    assert publish.input == {"summary": "${steps.summarize.output.summary}"}
    assert plan.aggregate == {"strategy": "merge", "steps": ["summarize", "publish"]}


@pytest.mark.parametrize("name", ["document-brief", "publish-brief"])
def test_builtin_workflows_take_a_text_and_a_title(name: str) -> None:
    workflow = Catalog.builtin().get(name)
    workflow.check_input({"text": "Some text.", "title": "T"})
    with pytest.raises(ValidationError) as caught:
        workflow.check_input({"title": "T"})
    assert caught.value.field == "input"
    assert "'text' is a required property" in caught.value.message


# -- workflow files -------------------------------------------------------------------------


def test_a_yaml_workflow_loads_into_a_plan(tmp_path: Path) -> None:
    workflow = load_workflow(write(tmp_path, "echo.yaml", GOOD))
    assert workflow.name == "echo-twice"
    plan = workflow.to_plan()
    assert [s.id for s in plan.steps] == ["first", "second"]
    assert plan.steps[1].retry.max_attempts == 4
    assert plan.steps[1].timeout_seconds == 2.5
    assert plan.aggregate == {"strategy": "pick", "step": "second", "field": "text"}


def test_the_same_workflow_in_json_loads_the_same(tmp_path: Path) -> None:
    import yaml

    data = yaml.safe_load(GOOD)
    from_json = load_workflow(write(tmp_path, "echo.json", json.dumps(data)))
    assert from_json == load_workflow(write(tmp_path, "echo.yml", GOOD))


def test_the_workflow_input_is_checked_against_its_schema(tmp_path: Path) -> None:
    workflow = load_workflow(write(tmp_path, "echo.yaml", GOOD))
    workflow.check_input({"text": "hi"})
    with pytest.raises(ValidationError) as caught:
        workflow.check_input({"text": 5})
    assert caught.value.field == "input.text"
    assert "workflow 'echo-twice'" in caught.value.message


def test_a_workflow_without_input_schema_takes_any_input() -> None:
    workflow = parse_workflow({"name": "w", "steps": [{"id": "a", "capability": "c"}]})
    assert workflow.input_schema is None
    workflow.check_input({"anything": [1]})


def test_invalid_yaml_is_rejected_naming_the_file(tmp_path: Path) -> None:
    error = load_error(tmp_path, "broken.yaml", "name: [unclosed\n")
    assert error.field == "broken.yaml"
    assert "not valid YAML" in error.message


def test_invalid_json_is_rejected_naming_the_file(tmp_path: Path) -> None:
    error = load_error(tmp_path, "broken.json", "{")
    assert (error.field, error.message[:14]) == ("broken.json", "not valid JSON")


def test_a_file_that_is_not_an_object_is_rejected(tmp_path: Path) -> None:
    assert load_error(tmp_path, "list.yaml", "- a\n- b\n").field == "list.yaml"


def test_an_unknown_key_is_rejected_naming_file_and_key(tmp_path: Path) -> None:
    text = GOOD.replace(
        "    capability: test.echo\n    needs", "    capabilty: test.echo\n    needs"
    )
    error = load_error(tmp_path, "typo.yaml", text)
    assert error.field == "typo.yaml:steps[1].capabilty"


def test_a_workflow_needs_a_valid_name_and_at_least_one_step(tmp_path: Path) -> None:
    assert (
        load_error(tmp_path, "n.yaml", "name: Bad Name\nsteps: [{id: a, capability: c}]\n").field
        == "n.yaml:name"
    )
    assert load_error(tmp_path, "s.yaml", "name: ok\nsteps: []\n").field == "s.yaml:steps"


def test_an_input_schema_that_is_no_schema_is_rejected(tmp_path: Path) -> None:
    text = GOOD.replace("type: object\n  required", "type: 12\n  required")
    error = load_error(tmp_path, "schema.yaml", text)
    assert error.field == "schema.yaml:input_schema"
    assert "not a JSON schema" in error.message


def test_a_dangling_reference_in_a_workflow_is_rejected_naming_file_and_field(
    tmp_path: Path,
) -> None:
    text = GOOD.replace("${steps.first.output.text}", "${steps.third.output.text}")
    error = load_error(tmp_path, "dangling.yaml", text)
    assert error.field == "dangling.yaml:steps[1].input.text"
    assert error.message == "no step 'third' in the plan"


def test_a_bad_aggregate_in_a_workflow_is_rejected(tmp_path: Path) -> None:
    text = GOOD.replace("step: second", "step: fourth")
    assert load_error(tmp_path, "agg.yaml", text).field == "agg.yaml:aggregate.step"


def test_only_yaml_and_json_files_are_workflows(tmp_path: Path) -> None:
    assert load_error(tmp_path, "echo.txt", GOOD).field == "echo.txt"


def test_a_missing_file_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(NotFound):
        load_workflow(tmp_path / "nope.yaml")


def test_an_unreadable_file_is_rejected(tmp_path: Path) -> None:
    (tmp_path / "latin.yaml").write_bytes(b"name: caf\xe9\n")
    with pytest.raises(ValidationError, match="cannot read") as caught:
        load_workflow(tmp_path / "latin.yaml")
    assert caught.value.field == "latin.yaml"


# -- catalogs -------------------------------------------------------------------------------


def test_a_catalog_loads_every_workflow_file_of_a_directory(tmp_path: Path) -> None:
    write(tmp_path, "b.yaml", GOOD)
    write(
        tmp_path, "a.json", json.dumps({"name": "alpha", "steps": [{"id": "x", "capability": "c"}]})
    )
    write(tmp_path, "notes.md", "not a workflow")
    (tmp_path / "sub.yaml").mkdir()
    catalog = Catalog.from_dir(tmp_path)
    assert catalog.names == ("alpha", "echo-twice")
    assert [w.name for w in catalog] == ["alpha", "echo-twice"]
    assert len(catalog) == 2
    assert "alpha" in catalog
    assert "notes" not in catalog
    assert catalog.get("echo-twice").steps[0].id == "first"


def test_a_bad_file_in_a_catalog_directory_is_named(tmp_path: Path) -> None:
    write(tmp_path, "good.yaml", GOOD)
    write(tmp_path, "worse.yaml", "name: x\nsteps: [{id: a}]\n")
    with pytest.raises(ValidationError) as caught:
        Catalog.from_dir(tmp_path)
    assert caught.value.field == "worse.yaml:steps[0].capability"


def test_two_workflows_with_one_name_are_rejected(tmp_path: Path) -> None:
    write(tmp_path, "one.yaml", GOOD)
    write(tmp_path, "two.yaml", GOOD)
    with pytest.raises(ValidationError, match="a second workflow named 'echo-twice'") as caught:
        Catalog.from_dir(tmp_path)
    assert caught.value.field == "two.yaml"


def test_a_catalog_of_a_missing_directory_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(NotFound):
        Catalog.from_dir(tmp_path / "nope")


def test_an_unknown_workflow_is_not_found_and_the_known_ones_are_listed() -> None:
    with pytest.raises(
        NotFound, match="no workflow 'nope'; known: document-brief, publish-brief"
    ) as caught:
        Catalog.builtin().get("nope")
    assert caught.value.field == "workflow"


def test_a_catalog_can_be_built_from_workflow_objects() -> None:
    workflow = Workflow(name="w", steps=(StepSpec(id="a", capability="c"),))
    assert Catalog([workflow]).get("w") is workflow
    assert Catalog().names == ()
