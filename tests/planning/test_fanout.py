"""``for_each`` fan-out into ``ID[0]``, ``ID[1]``, ..."""

from __future__ import annotations

from typing import Any

import pytest

from agentmesh.errors import ValidationError
from agentmesh.models import RetryPolicy, StepSpec
from agentmesh.orchestrator.planning import (
    expand_for_each,
    for_each_items,
    instance_id,
    resolve,
    split_instance_id,
)

ANALYZE = StepSpec(
    id="analyze",
    capability="text.analyze",
    version="1",
    for_each="${steps.split.output.sections}",
    input={
        "text": "${item}",
        "label": "section ${index} of ${input.title}",
        "position": "${index}",
        "language": "${input.language}",
    },
    needs=("prepare",),
    retry=RetryPolicy(max_attempts=3),
    timeout_seconds=5.0,
    optional=True,
)


def test_each_item_becomes_an_instance_named_by_its_position() -> None:
    instances = expand_for_each(ANALYZE, ["first", "second", "third"])
    assert [s.id for s in instances] == ["analyze[0]", "analyze[1]", "analyze[2]"]
    assert instances[1].input == {
        "text": "second",
        "label": "section 1 of ${input.title}",
        "position": 1,
        "language": "${input.language}",
    }


def test_instances_keep_every_other_field_and_lose_for_each() -> None:
    (instance,) = expand_for_each(ANALYZE, ["x"])
    assert instance.for_each == ""
    expected = ANALYZE.model_dump(exclude={"id", "input", "for_each"})
    assert instance.model_dump(exclude={"id", "input", "for_each"}) == expected


def test_the_remaining_references_resolve_when_an_instance_runs() -> None:
    (_, instance) = expand_for_each(ANALYZE, [{"t": 1}, {"t": 2}])
    resolved = resolve(instance.input, input={"title": "Q3", "language": "en"}, outputs={})
    assert resolved == {
        "text": {"t": 2},
        "label": "section 1 of Q3",
        "position": 1,
        "language": "en",
    }


def test_item_data_that_looks_like_a_reference_is_never_resolved() -> None:
    spec = ANALYZE.model_copy(update={"input": {"text": "${item}", "quote": "said: ${item}"}})
    (instance,) = expand_for_each(spec, ["${input.secret} costs $5"])
    resolved = resolve(instance.input, input={"secret": "hunter2"}, outputs={})
    assert resolved == {
        "text": "${input.secret} costs $5",
        "quote": "said: ${input.secret} costs $5",
    }


def test_non_string_items_are_interpolated_as_json() -> None:
    spec = ANALYZE.model_copy(update={"input": {"text": "item=${item}"}})
    (instance,) = expand_for_each(spec, [{"a": [1, None]}])
    assert resolve(instance.input, input={}, outputs={}) == {"text": 'item={"a":[1,null]}'}


def test_an_empty_list_fans_out_to_no_instances() -> None:
    assert expand_for_each(ANALYZE, []) == []


def test_fan_out_up_to_the_limit_is_allowed_and_wider_is_rejected() -> None:
    assert len(expand_for_each(ANALYZE, list(range(1000)))) == 1000
    with pytest.raises(ValidationError) as caught:
        expand_for_each(ANALYZE, list(range(1001)))
    assert caught.value.field == "steps.analyze.for_each"
    assert caught.value.message == "for_each over 1001 items exceeds the limit of 1000"


def test_the_fan_out_limit_is_configurable() -> None:
    with pytest.raises(ValidationError, match="exceeds the limit of 2"):
        expand_for_each(ANALYZE, [1, 2, 3], max_fanout=2)


def test_a_step_without_for_each_cannot_be_expanded() -> None:
    with pytest.raises(ValidationError, match="has no for_each"):
        expand_for_each(ANALYZE.model_copy(update={"for_each": ""}), [1])


def test_items_must_be_a_list() -> None:
    with pytest.raises(ValidationError, match="needs a list, got dict"):
        expand_for_each(ANALYZE, {"a": 1})  # type: ignore[arg-type]


def test_for_each_items_resolves_the_list_from_outputs_or_input() -> None:
    outputs = {"split": {"sections": ["a", "b"]}}
    assert for_each_items(ANALYZE, input={}, outputs=outputs) == ["a", "b"]
    over_input = ANALYZE.model_copy(update={"for_each": "${input.urls}"})
    assert for_each_items(over_input, input={"urls": ["u"]}, outputs={}) == ["u"]


@pytest.mark.parametrize(
    ("outputs", "reason"),
    [
        ({"split": {"sections": "not a list"}}, "needs a list, got str"),
        ({"split": {}}, "no key 'sections'"),
        ({}, "step 'split' has no output"),
        ({"split": {"sections": list(range(1001))}}, "exceeds the limit of 1000"),
    ],
)
def test_for_each_items_rejects_what_cannot_be_fanned_out(
    outputs: dict[str, Any], reason: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        for_each_items(ANALYZE, input={}, outputs=outputs)
    assert reason in caught.value.message
    assert caught.value.field == "steps.analyze.for_each"


def test_for_each_items_needs_exactly_one_reference() -> None:
    spec = ANALYZE.model_copy(update={"for_each": "x ${input.urls}"})
    with pytest.raises(ValidationError, match="exactly one reference"):
        for_each_items(spec, input={"urls": []}, outputs={})


def test_instance_ids_round_trip() -> None:
    assert instance_id("analyze", 12) == "analyze[12]"
    assert split_instance_id("analyze[12]") == ("analyze", 12)
    assert split_instance_id("analyze") == ("analyze", None)
    assert split_instance_id("analyze[01]") == ("analyze[01]", None)
