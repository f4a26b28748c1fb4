"""The ``${...}`` reference language of step inputs."""

from __future__ import annotations

from typing import Any

import pytest

from agentmesh.errors import ValidationError
from agentmesh.orchestrator.planning import (
    Reference,
    bind_item,
    has_references,
    iter_references,
    lookup_path,
    parse,
    resolve,
    step_references,
)
from agentmesh.orchestrator.planning.references import UNBOUND

INPUT = {"doc": {"title": "Q3", "tags": ["a", "b"]}, "n": 3, "flag": None}
OUTPUTS: dict[str, Any] = {
    "split": {"sections": ["one", "two"], "meta": {"count": 2}},
    "analyze": [{"words": 10, "keywords": ["x"]}, {"words": 20, "keywords": ["y"]}],
}


def run(value: Any, **extra: Any) -> Any:
    return resolve(value, input=INPUT, outputs=OUTPUTS, **extra)


def test_a_string_that_is_exactly_one_reference_becomes_the_value_of_any_type() -> None:
    assert run("${input.doc}") == INPUT["doc"]
    assert run("${input.doc.tags}") == ["a", "b"]
    assert run("${input.n}") == 3
    assert run("${input.flag}") is None
    assert run("${steps.split.output.meta}") == {"count": 2}


def test_the_whole_input_and_a_whole_output_can_be_referenced() -> None:
    assert run("${input}") == INPUT
    assert run("${steps.split.output}") == OUTPUTS["split"]


def test_numeric_segments_index_lists() -> None:
    assert run("${input.doc.tags.1}") == "b"
    assert run("${steps.analyze.output.1.keywords.0}") == "y"


def test_a_numeric_segment_on_an_object_is_a_key() -> None:
    assert resolve("${input.7}", input={"7": "seven"}, outputs={}) == "seven"


def test_references_inside_text_are_interpolated_non_strings_as_json() -> None:
    assert run("Title: ${input.doc.title}, n=${input.n}") == "Title: Q3, n=3"
    assert run("tags=${input.doc.tags} flag=${input.flag}") == 'tags=["a","b"] flag=null'
    assert run("${input.n}${input.n}") == "33"


def test_references_are_resolved_anywhere_in_nested_values_but_keys_stay_literal() -> None:
    value = {"${input.n}": ["${input.doc.title}", {"deep": "${steps.split.output.meta.count}"}]}
    assert run(value) == {"${input.n}": ["Q3", {"deep": 2}]}


def test_values_without_references_are_returned_as_they_are() -> None:
    value = {"a": [1, 2.5, True, None, "plain $ text"]}
    assert run(value) == value


def test_double_dollar_is_a_literal_dollar_so_a_reference_can_be_written_as_text() -> None:
    assert run("$${input.n}") == "${input.n}"
    assert run("costs $$5 for ${input.n}") == "costs $5 for 3"


def test_a_lone_dollar_is_text() -> None:
    assert run("$ 5 and $x") == "$ 5 and $x"


def test_unbound_item_and_index_print_as_such() -> None:
    assert repr(UNBOUND) == "UNBOUND"


def test_item_and_index_are_the_element_and_position_of_a_fan_out_instance() -> None:
    item = {"text": "hello", "lines": [4, 5]}
    assert run("${item}", item=item, index=2) == item
    assert run("${item.lines.1}", item=item, index=2) == 5
    assert run("#${index}: ${item.text}", item=item, index=2) == "#2: hello"


@pytest.mark.parametrize("text", ["${item}", "${index}", "x ${item.a}"])
def test_item_and_index_outside_a_fan_out_instance_are_rejected(text: str) -> None:
    with pytest.raises(ValidationError, match="only defined in a for_each step") as caught:
        run({"x": text})
    assert caught.value.field == "input.x"


@pytest.mark.parametrize(
    ("value", "field", "reason"),
    [
        ({"url": "${input.missing}"}, "input.url", "no key 'missing' at the top"),
        ({"a": ["${input.doc.nope}"]}, "input.a[0]", "no key 'nope' at doc"),
        ({"t": "${input.doc.tags.5}"}, "input.t", "no position '5' in a list of 2"),
        ({"t": "${input.doc.tags.x}"}, "input.t", "no position 'x'"),
        ({"t": "${input.n.x}"}, "input.t", "no 'x' in a value of type int at n"),
        ({"s": "${steps.ghost.output}"}, "input.s", "step 'ghost' has no output"),
        ({"s": "x ${steps.split.output.none}"}, "input.s", "no key 'none'"),
    ],
)
def test_a_missing_path_is_rejected_naming_the_field(
    value: dict[str, Any], field: str, reason: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        run(value)
    assert caught.value.field == field
    assert reason in caught.value.message


def test_the_field_prefix_can_be_chosen() -> None:
    with pytest.raises(ValidationError) as caught:
        resolve({"odd key": "${input.x}"}, input={}, outputs={}, field="plan.steps[2].input")
    assert caught.value.field == 'plan.steps[2].input["odd key"]'


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("${input", "unclosed"),
        ("ok ${input.a", "unclosed"),
        ("${}", "malformed"),
        ("${input..a}", "malformed"),
        ("${input. a}", "malformed"),
        ("${foo.bar}", "unknown reference"),
        ("${steps.a}", "expected ${steps.ID.output...}"),
        ("${steps.a.result}", "expected ${steps.ID.output...}"),
        ("${steps.1a.output}", "not a step id"),
        ("${steps.a[0].output}", "not a step id"),
        ("${index.x}", "has no '.x'"),
    ],
)
def test_a_malformed_expression_is_rejected(text: str, reason: str) -> None:
    with pytest.raises(ValidationError) as caught:
        parse(text, field="plan.steps[0].input.x")
    assert reason in caught.value.message
    assert caught.value.field == "plan.steps[0].input.x"
    with pytest.raises(ValidationError):
        run({"x": text})


def test_parse_splits_text_and_references() -> None:
    assert parse("a ${input.x} b ${steps.s.output.0} $$") == (
        "a ",
        Reference(root="input", path=("x",)),
        " b ",
        Reference(root="steps", step="s", path=("0",)),
        " $",
    )
    assert parse("") == ()
    assert parse("plain") == ("plain",)


def test_a_reference_prints_as_it_is_written() -> None:
    for text in ("${input}", "${input.a.0}", "${steps.s.output.x}", "${item.k}", "${index}"):
        (ref,) = parse(text)
        assert str(ref) == text


def test_step_references_finds_every_referenced_step_in_a_nested_value() -> None:
    value = {
        "a": "${steps.one.output}",
        "b": ["x ${steps.two.output.k} y", {"c": "${steps.three.output.0}"}],
        "d": "${input.q} ${item} ${index} $${steps.escaped.output}",
        "e": 5,
    }
    assert step_references(value) == {"one", "two", "three"}
    assert step_references("${input}") == set()


def test_reference_walks_survive_values_nested_far_beyond_the_recursion_limit() -> None:
    deep: Any = "${steps.bottom.output}"
    for _ in range(5000):
        deep = [deep]
    assert step_references({"x": deep}) == {"bottom"}


def test_iter_references_reports_the_field_of_each_reference() -> None:
    found = list(iter_references({"a": ["${input.x}", {"b": "${steps.s.output}"}]}, field="in"))
    assert found == [
        ("in.a[0]", Reference(root="input", path=("x",))),
        ("in.a[1].b", Reference(root="steps", step="s")),
    ]


def test_has_references() -> None:
    assert has_references({"a": ["${input}"]})
    assert not has_references({"a": ["$${input}", "$", 1]})


def test_bind_item_fills_item_and_index_and_keeps_every_other_reference() -> None:
    bound = bind_item(
        {"text": "${item.text}", "pos": "${index}", "title": "${input.doc.title}", "n": 1},
        item={"text": "hello"},
        index=4,
    )
    assert bound == {"text": "hello", "pos": 4, "title": "${input.doc.title}", "n": 1}
    assert run(bound) == {"text": "hello", "pos": 4, "title": "Q3", "n": 1}


def test_bind_item_keeps_other_references_inside_interpolated_text() -> None:
    bound = bind_item("#${index} of ${input.n}: ${item} costs $$1", item="x", index=0)
    assert run(bound) == "#0 of 3: x costs $1"


def test_item_text_that_looks_like_a_reference_stays_text_after_resolution() -> None:
    hostile = {"text": "${input.doc}", "nested": ["cost $$ ${steps.split.output}"]}
    bound = bind_item({"a": "${item}", "b": "see ${item.text}"}, item=hostile, index=0)
    assert run(bound) == {"a": hostile, "b": "see ${input.doc}"}


def test_lookup_path_names_the_missing_segment() -> None:
    assert lookup_path({"a": [{"b": 1}]}, ("a", "0", "b")) == 1
    with pytest.raises(KeyError, match=r"no key 'c' at a\.0"):
        lookup_path({"a": [{"b": 1}]}, ("a", "0", "c"))
