"""Combining step outputs into the task result."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from agentmesh.errors import ValidationError
from agentmesh.orchestrator.planning.aggregate import (
    AggregateSpec,
    DelegatedAggregate,
    aggregate,
    check_result,
    parse_aggregate_spec,
)

OUTPUTS: dict[str, Any] = {
    "split": {"sections": ["a", "b"], "meta": {"lang": "en", "pages": 2}},
    "analyze": [
        {"words": 10, "keywords": ["x", "y"], "label": "good", "score": 0.5},
        {"words": 20, "keywords": ["z"], "label": "bad", "score": 0.9},
        {"words": 30, "keywords": [], "label": "good", "score": 0.1},
    ],
    "summarize": {"summary": "short", "meta": {"pages": 3, "author": "bot"}, "score": 0.7},
}


def failing(spec: dict[str, Any], outputs: dict[str, Any] = OUTPUTS) -> ValidationError:
    with pytest.raises(ValidationError) as caught:
        aggregate(spec, outputs)
    return caught.value


def test_without_a_spec_every_output_is_collected_by_step_id() -> None:
    assert aggregate({}, OUTPUTS) == OUTPUTS


def test_collect_takes_the_listed_steps_in_their_order_and_leaves_out_skipped_ones() -> None:
    result = aggregate({"strategy": "collect", "steps": ["summarize", "split", "skipped"]}, OUTPUTS)
    assert result == {"summarize": OUTPUTS["summarize"], "split": OUTPUTS["split"]}
    assert list(result) == ["summarize", "split"]


def test_merge_deep_merges_objects_in_step_order_later_values_winning() -> None:
    result = aggregate({"strategy": "merge", "steps": ["split", "summarize"]}, OUTPUTS)
    assert result == {
        "sections": ["a", "b"],
        "meta": {"lang": "en", "pages": 3, "author": "bot"},
        "summary": "short",
        "score": 0.7,
    }


def test_merge_replaces_lists_and_never_changes_the_outputs() -> None:
    outputs = {"a": {"l": [1, 2], "o": {"k": 1}}, "b": {"l": [3], "o": {"j": 2}}}
    before = copy.deepcopy(outputs)
    assert aggregate({"strategy": "merge"}, outputs) == {"l": [3], "o": {"k": 1, "j": 2}}
    assert outputs == before


def test_merge_treats_each_fan_out_instance_as_one_output() -> None:
    result = aggregate({"strategy": "merge", "steps": ["analyze"]}, OUTPUTS)
    assert result == OUTPUTS["analyze"][2]


def test_merge_needs_objects() -> None:
    error = failing({"strategy": "merge"}, {"a": {"x": 1}, "b": [1]})
    assert error.field == "plan.aggregate.strategy"
    assert "output of 'b[0]' is int" in error.message


def test_concat_joins_the_lists_at_a_field_across_steps_and_instances() -> None:
    outputs = {**OUTPUTS, "extra": {"keywords": ["w"]}}
    result = aggregate(
        {"strategy": "concat", "field": "keywords", "steps": ["analyze", "extra"]}, outputs
    )
    assert result == ["x", "y", "z", "w"]


def test_concat_of_no_outputs_is_empty() -> None:
    assert aggregate({"strategy": "concat", "field": "k", "steps": ["skipped"]}, OUTPUTS) == []


def test_concat_follows_dotted_paths_with_list_positions() -> None:
    outputs = {"a": {"pages": [{"lines": [1, 2]}]}, "b": {"pages": [{"lines": [3]}]}}
    assert aggregate({"strategy": "concat", "field": "pages.0.lines"}, outputs) == [1, 2, 3]


def test_concat_rejects_a_field_that_is_missing_or_not_a_list() -> None:
    error = failing({"strategy": "concat", "field": "summary", "steps": ["summarize"]})
    assert (error.field, error.message) == (
        "plan.aggregate.field",
        "'summary' of 'summarize' is str, not a list",
    )
    error = failing({"strategy": "concat", "field": "nope.deeper", "steps": ["split"]})
    assert error.message == "output of 'split' has no 'nope'"


def test_pick_returns_one_steps_output() -> None:
    assert aggregate({"strategy": "pick", "step": "summarize"}, OUTPUTS) == OUTPUTS["summarize"]


def test_pick_can_take_a_field_even_inside_fan_out_outputs() -> None:
    assert aggregate({"strategy": "pick", "step": "split", "field": "meta.lang"}, OUTPUTS) == "en"
    spec = {"strategy": "pick", "step": "analyze", "field": "1.keywords.0"}
    assert aggregate(spec, OUTPUTS) == "z"


def test_pick_of_a_step_without_output_is_rejected() -> None:
    error = failing({"strategy": "pick", "step": "skipped"})
    assert (error.field, error.message) == ("plan.aggregate.step", "step 'skipped' has no output")


def test_pick_of_a_missing_field_is_rejected() -> None:
    error = failing({"strategy": "pick", "step": "analyze", "field": "7.words"})
    assert (error.field, error.message) == (
        "plan.aggregate.field",
        "output of 'analyze' has no '7'",
    )


def test_vote_returns_the_majority_value_with_the_counts() -> None:
    result = aggregate({"strategy": "vote", "field": "label"}, {"analyze": OUTPUTS["analyze"]})
    assert result == {
        "value": "good",
        "votes": 2,
        "total": 3,
        "counts": [{"value": "good", "votes": 2}, {"value": "bad", "votes": 1}],
    }


def test_a_tied_vote_goes_to_the_value_seen_first() -> None:
    outputs = {"a": {"v": "no"}, "b": {"v": "yes"}, "c": {"v": "yes"}, "d": {"v": "no"}}
    result = aggregate({"strategy": "vote", "field": "v"}, outputs)
    assert (result["value"], result["votes"], result["total"]) == ("no", 2, 4)
    result = aggregate({"strategy": "vote", "field": "v", "steps": ["b", "a", "d", "c"]}, outputs)
    assert result["value"] == "yes"


def test_vote_compares_whole_json_values_when_no_field_is_given() -> None:
    outputs = {"a": {"x": [1], "y": 2}, "b": {"y": 2, "x": [1]}, "c": {"x": [2], "y": 2}}
    result = aggregate({"strategy": "vote"}, outputs)
    assert (result["value"], result["votes"]) == ({"x": [1], "y": 2}, 2)


def test_vote_without_any_output_is_rejected() -> None:
    error = failing({"strategy": "vote", "field": "v", "steps": ["skipped"]})
    assert error.field == "plan.aggregate.steps"


def test_best_returns_the_output_with_the_highest_score() -> None:
    assert (
        aggregate({"strategy": "best"}, OUTPUTS | {"split": {"score": 0}}) == OUTPUTS["analyze"][1]
    )


def test_best_can_take_the_lowest_of_another_field() -> None:
    result = aggregate(
        {"strategy": "best", "field": "words", "order": "min"}, {"analyze": OUTPUTS["analyze"]}
    )
    assert result == OUTPUTS["analyze"][0]


def test_a_tied_best_goes_to_the_first_seen() -> None:
    outputs = {
        "a": {"score": 1, "n": "a"},
        "b": {"score": 2, "n": "b"},
        "c": {"score": 2, "n": "c"},
    }
    assert aggregate({"strategy": "best"}, outputs)["n"] == "b"
    assert (
        aggregate({"strategy": "best", "order": "min", "steps": ["c", "b", "a"]}, outputs)["n"]
        == "a"
    )


@pytest.mark.parametrize("score", ["high", True, None, [1]])
def test_best_needs_numeric_scores(score: Any) -> None:
    error = failing({"strategy": "best"}, {"a": {"score": 1}, "b": {"score": score}})
    assert (error.field, error.message) == (
        "plan.aggregate.field",
        "score 'score' of 'b' is not a number",
    )


def test_best_without_any_output_is_rejected() -> None:
    assert failing({"strategy": "best"}, {}).field == "plan.aggregate.steps"


def test_agent_strategy_hands_the_collected_outputs_to_an_agent() -> None:
    spec = {
        "strategy": "agent",
        "capability": "text.merge",
        "version": "2",
        "steps": ["split", "summarize"],
        "input": {"style": "terse"},
        "output_schema": {"type": "object"},
    }
    result = aggregate(spec, OUTPUTS)
    assert result == DelegatedAggregate(
        capability="text.merge",
        version="2",
        input={
            "style": "terse",
            "outputs": {"split": OUTPUTS["split"], "summarize": OUTPUTS["summarize"]},
        },
        output_schema={"type": "object"},
    )


def test_a_result_that_fits_the_output_schema_is_returned() -> None:
    spec = {
        "strategy": "pick",
        "step": "summarize",
        "field": "summary",
        "output_schema": {"type": "string"},
    }
    assert aggregate(spec, OUTPUTS) == "short"


def test_a_result_that_violates_the_output_schema_is_rejected() -> None:
    schema = {"type": "object", "properties": {"pages": {"type": "string"}}}
    error = failing({"strategy": "pick", "step": "split", "field": "meta", "output_schema": schema})
    assert error.field == "plan.aggregate.output_schema"
    assert error.message == "the result does not match: 2 is not of type 'string' (at ['pages'])"


def test_check_result_validates_an_agents_aggregate_too() -> None:
    spec = {"strategy": "agent", "capability": "c", "output_schema": {"type": "array"}}
    delegated = aggregate(spec, OUTPUTS)
    assert isinstance(delegated, DelegatedAggregate)
    assert check_result(delegated, [1]) == [1]
    with pytest.raises(ValidationError, match="is not of type 'array' \\(at the result\\)"):
        check_result(delegated, {"a": 1})
    assert check_result(parse_aggregate_spec(spec), [2]) == [2]


@pytest.mark.parametrize(
    ("spec", "field", "reason"),
    [
        ([], "plan.aggregate", "must be an object"),
        ({"strategy": "average"}, "plan.aggregate.strategy", "unknown strategy 'average'"),
        (
            {"strategy": "merge", "field": "x"},
            "plan.aggregate.field",
            "not an option of strategy 'merge'",
        ),
        ({"steps": ["a"], "colour": "red"}, "plan.aggregate.colour", "not an option"),
        (
            {"strategy": "pick", "steps": ["a"], "step": "a"},
            "plan.aggregate.steps",
            "not an option",
        ),
        ({"steps": "a"}, "plan.aggregate.steps", "non-empty list"),
        ({"steps": []}, "plan.aggregate.steps", "non-empty list"),
        ({"steps": ["a", 3]}, "plan.aggregate.steps[1]", "no step 3"),
        ({"strategy": "pick"}, "plan.aggregate.step", "pick needs the id of a step"),
        ({"strategy": "pick", "step": ""}, "plan.aggregate.step", "pick needs the id of a step"),
        ({"strategy": "concat"}, "plan.aggregate.field", "concat needs the field"),
        ({"strategy": "vote", "field": 3}, "plan.aggregate.field", "dotted path"),
        ({"strategy": "vote", "field": "a..b"}, "plan.aggregate.field", "empty segment"),
        ({"strategy": "best", "order": "up"}, "plan.aggregate.order", "'max' or 'min'"),
        ({"strategy": "agent"}, "plan.aggregate.capability", "agent needs a capability"),
        (
            {"strategy": "agent", "capability": "c", "version": 1},
            "plan.aggregate.version",
            "string",
        ),
        ({"strategy": "agent", "capability": "c", "input": [1]}, "plan.aggregate.input", "object"),
        ({"output_schema": {"type": 5}}, "plan.aggregate.output_schema", "not a JSON schema"),
        ({"output_schema": True}, "plan.aggregate.output_schema", "must be an object"),
    ],
)
def test_a_malformed_spec_is_rejected_naming_its_field(spec: Any, field: str, reason: str) -> None:
    with pytest.raises(ValidationError) as caught:
        parse_aggregate_spec(spec)
    assert caught.value.field == field
    assert reason in caught.value.message
    with pytest.raises(ValidationError):
        aggregate(spec, OUTPUTS)


def test_with_the_plans_step_ids_unknown_steps_are_rejected() -> None:
    ids = {"a", "b"}
    assert parse_aggregate_spec({"steps": ["a", "b"]}, step_ids=ids).steps == ("a", "b")
    with pytest.raises(ValidationError) as caught:
        parse_aggregate_spec({"steps": ["a", "c"]}, step_ids=ids)
    assert (caught.value.field, caught.value.message) == (
        "plan.aggregate.steps[1]",
        "no step 'c' in the plan",
    )
    with pytest.raises(ValidationError) as caught:
        parse_aggregate_spec({"strategy": "pick", "step": "c"}, step_ids=ids)
    assert caught.value.field == "plan.aggregate.step"


def test_parsing_fills_in_the_defaults() -> None:
    assert parse_aggregate_spec({}) == AggregateSpec()
    best = parse_aggregate_spec({"strategy": "best"})
    assert (best.field, best.order, best.steps) == (("score",), "max", None)
