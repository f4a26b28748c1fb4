"""Plan validation: every rejection names the step and field at fault."""

from __future__ import annotations

import math
from typing import Any

import pytest

from agentmesh.errors import ValidationError
from agentmesh.models import Capability, Plan, StepSpec, version_matches
from agentmesh.orchestrator.agents.offers import Offer, Offers
from agentmesh.orchestrator.planning import (
    PlanLimits,
    dependencies,
    topological_order,
    validate_plan,
)
from agentmesh.orchestrator.planning import validate as validate_module
from tests.planning.support import make_plan


def rejected(plan: Plan, **kwargs: Any) -> ValidationError:
    with pytest.raises(ValidationError) as caught:
        validate_plan(plan, **kwargs)
    return caught.value


def nested(depth: int) -> dict[str, Any]:
    """An input object ``depth`` levels deep, the input itself counting as one."""
    value: dict[str, Any] = {}
    for _ in range(depth - 1):
        value = {"n": value}
    return value


def test_a_valid_plan_is_returned_as_it_is() -> None:
    plan = make_plan(
        {"id": "fetch", "input": {"url": "${input.url}", "wait": 1.5, "n": 3, "x": None}},
        {"id": "parse", "input": {"html": "${steps.fetch.output.body}"}, "needs": ["fetch"]},
        {"id": "each", "for_each": "${steps.parse.output.links}", "input": {"u": "${item}"}},
        aggregate={"strategy": "pick", "step": "each"},
    )
    assert validate_plan(plan) is plan


def test_an_empty_plan_is_rejected() -> None:
    error = rejected(Plan(steps=()))
    assert error.field == "plan.steps"
    assert "at least one step" in error.message


def test_a_plan_of_100000_steps_is_refused_by_its_size_before_anything_else(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Every step has the same id and a dangling reference: any check but the size check would
    # find something else to complain about. Those checks must not even run.
    def never(*args: object, **kwargs: object) -> None:
        raise AssertionError("the graph was built for an oversized plan")

    monkeypatch.setattr(validate_module, "_check_ids", never)
    monkeypatch.setattr(validate_module, "_order", never)
    step = StepSpec(id="same", capability="x", input={"a": "${steps.ghost.output}"})
    error = rejected(Plan(steps=(step,) * 100_000))
    assert error.field == "plan.steps"
    assert error.message == "100000 steps exceed the limit of 1000"


def test_a_plan_at_the_step_limit_is_accepted_even_as_one_long_chain() -> None:
    steps = [{"id": "s0"}] + [
        {"id": f"s{i}", "input": {"prev": f"${{steps.s{i - 1}.output}}"}} for i in range(1, 1000)
    ]
    plan = make_plan(*steps)
    assert validate_plan(plan) is plan
    assert topological_order(plan) == [f"s{i}" for i in range(1000)]


def test_the_step_limit_is_configurable() -> None:
    error = rejected(make_plan({"id": "a"}, {"id": "b"}), limits=PlanLimits(max_steps=1))
    assert (error.field, error.message) == ("plan.steps", "2 steps exceed the limit of 1")


@pytest.mark.parametrize("bad_id", ["", "1st", "has space", "a" * 65, "a[0]", "dot.ted", "ü"])
def test_an_invalid_step_id_is_rejected(bad_id: str) -> None:
    error = rejected(make_plan({"id": "ok"}, {"id": bad_id}))
    assert error.field == "plan.steps[1].id"
    assert "is not a step id" in error.message


def test_the_longest_valid_step_id_is_accepted() -> None:
    validate_plan(make_plan({"id": "a" + "-_9Z" * 15 + "abc"}))


def test_a_duplicate_step_id_is_rejected_naming_both_places() -> None:
    error = rejected(make_plan({"id": "a"}, {"id": "b"}, {"id": "a"}))
    assert error.field == "plan.steps[2].id"
    assert error.message == "duplicate step id 'a', first used by plan.steps[0]"


def test_a_step_without_capability_is_rejected() -> None:
    assert rejected(make_plan({"id": "a", "capability": ""})).field == "plan.steps[0].capability"


@pytest.mark.parametrize("field", ["capability", "compensation", "pin_agent"])
def test_names_with_spaces_or_too_long_are_rejected(field: str) -> None:
    for value in ("has space", "x" * 257):
        assert rejected(make_plan({"id": "a", field: value})).field == f"plan.steps[0].{field}"


@pytest.mark.parametrize("version", ["v1", "1.", "1..2", "latest"])
def test_a_malformed_version_prefix_is_rejected(version: str) -> None:
    assert rejected(make_plan({"id": "a", "version": version})).field == "plan.steps[0].version"


def test_input_nested_deeper_than_the_limit_is_rejected_at_the_too_deep_object() -> None:
    validate_plan(make_plan({"id": "a", "input": nested(32)}))
    error = rejected(make_plan({"id": "a"}, {"id": "b", "input": nested(33)}))
    assert error.field == "plan.steps[1].input" + ".n" * 32
    assert error.message == "nested deeper than 32 levels"


def test_input_nested_far_beyond_the_recursion_limit_is_refused_cleanly() -> None:
    deep: Any = []
    for _ in range(100_000):
        deep = [deep]
    step = StepSpec.model_construct(id="a", capability="x", input={"d": deep})
    error = rejected(make_plan({"id": "b"}).model_copy(update={"steps": (step,)}))
    assert error.field is not None
    assert error.field.startswith("plan.steps[0].input.d[0][0]")


def test_lists_count_towards_depth_too() -> None:
    limits = PlanLimits(max_depth=3)
    validate_plan(make_plan({"id": "a", "input": {"l": [[1]]}}), limits=limits)
    error = rejected(make_plan({"id": "a", "input": {"l": [[[1]]]}}), limits=limits)
    assert error.field == "plan.steps[0].input.l[0][0]"


def test_a_string_longer_than_the_limit_is_rejected() -> None:
    limits = PlanLimits(max_string=10)
    validate_plan(make_plan({"id": "a", "input": {"s": "x" * 10}}), limits=limits)
    error = rejected(make_plan({"id": "a", "input": {"s": ["x" * 11]}}), limits=limits)
    assert error.field == "plan.steps[0].input.s[0]"
    assert "11 characters exceeds the limit of 10" in error.message


def test_a_key_longer_than_the_string_limit_is_rejected() -> None:
    error = rejected(
        make_plan({"id": "a", "input": {"k" * 11: 1}}), limits=PlanLimits(max_string=10)
    )
    assert error.field == "plan.steps[0].input"


def test_the_default_string_limit_is_one_mebibyte() -> None:
    validate_plan(make_plan({"id": "a", "input": {"s": "x" * 1024 * 1024}}))
    error = rejected(make_plan({"id": "a", "input": {"s": "x" * (1024 * 1024 + 1)}}))
    assert error.field == "plan.steps[0].input.s"


def test_inputs_of_all_steps_together_must_fit_the_byte_limit() -> None:
    limits = PlanLimits(max_input_bytes=100)
    one = {"text": "x" * 60}
    validate_plan(make_plan({"id": "a", "input": one}), limits=limits)
    error = rejected(make_plan({"id": "a", "input": one}, {"id": "b", "input": one}), limits=limits)
    assert error.field == "plan.steps[1].input.text"
    assert "exceed the limit of 100 bytes" in error.message


def test_the_aggregate_spec_counts_towards_the_byte_limit() -> None:
    plan = make_plan({"id": "a"}, aggregate={"strategy": "agent", "capability": "c" * 200})
    assert (
        rejected(plan, limits=PlanLimits(max_input_bytes=100)).field == "plan.aggregate.capability"
    )


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (b"bytes", "a bytes is not a JSON value"),
        ({1, 2}, "a set is not a JSON value"),
        (math.nan, "nan is not a JSON number"),
        (math.inf, "inf is not a JSON number"),
    ],
)
def test_values_that_are_not_json_are_rejected(value: object, reason: str) -> None:
    step = StepSpec.model_construct(id="a", capability="x", input={"v": [value]})
    error = rejected(make_plan({"id": "a"}).model_copy(update={"steps": (step,)}))
    assert (error.field, error.message) == ("plan.steps[0].input.v[0]", reason)


def test_an_object_key_that_is_not_a_string_is_rejected() -> None:
    step = StepSpec.model_construct(id="a", capability="x", input={"v": {1: "one"}})
    error = rejected(make_plan({"id": "a"}).model_copy(update={"steps": (step,)}))
    assert error.field == "plan.steps[0].input.v"


def test_a_reference_to_an_unknown_step_is_rejected_naming_the_input_field() -> None:
    error = rejected(
        make_plan({"id": "a"}, {"id": "b"}, {"id": "c", "input": {"url": "${steps.zz.output}"}})
    )
    assert error.field == "plan.steps[2].input.url"
    assert error.message == "no step 'zz' in the plan"


def test_an_unknown_need_is_rejected_naming_its_position() -> None:
    error = rejected(make_plan({"id": "a"}, {"id": "b", "needs": ["a", "zz"]}))
    assert (error.field, error.message) == ("plan.steps[1].needs[1]", "no step 'zz' in the plan")


def test_too_many_needs_are_rejected() -> None:
    error = rejected(make_plan({"id": "a"}, {"id": "b", "needs": ["a"] * 1001}))
    assert error.field == "plan.steps[1].needs"


def test_a_for_each_over_an_unknown_step_is_rejected() -> None:
    error = rejected(make_plan({"id": "a", "for_each": "${steps.zz.output.items}"}))
    assert (error.field, error.message) == ("plan.steps[0].for_each", "no step 'zz' in the plan")


@pytest.mark.parametrize(
    "for_each", ["items", "${steps.a.output} and more", "${input.a}${input.b}", "$${input.a}"]
)
def test_for_each_must_be_exactly_one_reference(for_each: str) -> None:
    error = rejected(make_plan({"id": "a"}, {"id": "b", "for_each": for_each}))
    assert error.field == "plan.steps[1].for_each"
    assert "exactly one reference" in error.message


@pytest.mark.parametrize("for_each", ["${item}", "${index}"])
def test_for_each_cannot_fan_out_over_item_or_index(for_each: str) -> None:
    assert rejected(make_plan({"id": "a", "for_each": for_each})).field == "plan.steps[0].for_each"


def test_a_for_each_over_the_task_input_is_accepted() -> None:
    validate_plan(make_plan({"id": "a", "for_each": "${input.urls}", "input": {"u": "${item}"}}))


def test_item_outside_a_for_each_step_is_rejected() -> None:
    error = rejected(make_plan({"id": "a", "input": {"x": ["${item.text}"]}}))
    assert error.field == "plan.steps[0].input.x[0]"
    assert "only defined in a for_each step" in error.message


def test_a_malformed_reference_is_rejected_naming_its_field() -> None:
    error = rejected(make_plan({"id": "a", "input": {"x": {"y": "${steps.b}"}}}))
    assert error.field == "plan.steps[0].input.x.y"


def test_a_cycle_is_rejected_naming_the_cycle() -> None:
    error = rejected(
        make_plan(
            {"id": "start"},
            {"id": "a", "needs": ["start", "b"]},
            {"id": "b", "input": {"x": "${steps.a.output}"}},
        )
    )
    assert error.message == "dependency cycle: a -> b -> a (each step depends on the next)"
    # The field is where the cycle's first edge (a depends on b) is declared.
    assert error.field == "plan.steps[1].needs[1]"


def test_a_step_referencing_itself_is_a_cycle() -> None:
    error = rejected(make_plan({"id": "a", "input": {"x": "${steps.a.output}"}}))
    assert error.message.startswith("dependency cycle: a -> a")
    assert error.field == "plan.steps[0].input.x"


def test_a_for_each_over_its_own_output_is_a_cycle() -> None:
    error = rejected(make_plan({"id": "a", "for_each": "${steps.a.output.items}"}))
    assert error.field == "plan.steps[0].for_each"
    assert "a -> a" in error.message


def test_a_cycle_behind_valid_steps_is_found() -> None:
    error = rejected(
        make_plan(
            {"id": "ok"},
            {"id": "tail", "needs": ["c"]},
            {"id": "c", "needs": ["d", "ok"]},
            {"id": "d", "needs": ["e"]},
            {"id": "e", "needs": ["c"]},
        )
    )
    assert error.message.startswith("dependency cycle: c -> d -> e -> c")


def test_a_cycle_through_1000_steps_is_found_without_recursion() -> None:
    steps = [{"id": "s0", "needs": ["s999"]}] + [
        {"id": f"s{i}", "needs": [f"s{i - 1}"]} for i in range(1, 1000)
    ]
    error = rejected(make_plan(*steps))
    cycle = ["s0", *(f"s{i}" for i in range(999, 0, -1)), "s0"]
    assert (
        error.message == f"dependency cycle: {' -> '.join(cycle)} (each step depends on the next)"
    )
    assert error.field == "plan.steps[0].needs[0]"


def test_the_aggregate_spec_is_checked_against_the_plans_steps() -> None:
    error = rejected(make_plan({"id": "a"}, aggregate={"strategy": "merge", "steps": ["a", "b"]}))
    assert error.field == "plan.aggregate.steps[1]"


# -- against capabilities ------------------------------------------------------------------


def test_the_demo_plan_fits_the_demo_capabilities(demo_capabilities: dict[str, Capability]) -> None:
    plan = make_plan(
        {"id": "split", "capability": "text.split", "input": {"text": "${input.text}"}},
        {
            "id": "analyze",
            "capability": "text.analyze",
            "for_each": "${steps.split.output.sections}",
            "input": {"text": "${item}"},
        },
        {
            "id": "sum",
            "capability": "text.summarize",
            "version": "1",
            "input": {"analyses": "${steps.analyze.output}", "title": "Report"},
            "compensation": "text.unpublish",
        },
    )
    assert validate_plan(plan, capabilities=demo_capabilities) is plan


def test_an_unknown_capability_is_rejected(demo_capabilities: dict[str, Capability]) -> None:
    error = rejected(
        make_plan({"id": "a", "capability": "text.split", "input": {"text": "x"}}, {"id": "b"}),
        capabilities=demo_capabilities,
    )
    assert error.field == "plan.steps[1].capability"
    assert "unknown capability 'test.echo'" in error.message


def test_an_unknown_compensation_is_rejected(demo_capabilities: dict[str, Capability]) -> None:
    plan = make_plan({"id": "a", "capability": "text.publish", "compensation": "text.burn"})
    error = rejected(plan, capabilities=demo_capabilities)
    assert error.field == "plan.steps[0].compensation"


def test_without_capabilities_unknown_names_are_not_checked() -> None:
    validate_plan(make_plan({"id": "a", "capability": "nobody.offers", "compensation": "x.y"}))


@pytest.mark.parametrize("version", ["2", "1.1", "1.0.1", "10"])
def test_a_version_prefix_mismatch_is_rejected(version: str) -> None:
    capabilities = {"c": Capability(name="c", version="1.0.0")}
    error = rejected(
        make_plan({"id": "a", "capability": "c", "version": version}), capabilities=capabilities
    )
    assert error.field == "plan.steps[0].version"
    assert error.message == f"c is at version 1.0.0, not {version}"


@pytest.mark.parametrize(
    ("prefix", "version", "fits"),
    [
        ("1", "1.2.3", True),
        ("1.2", "1.2.3", True),
        ("1.2.3", "1.2.3", True),
        ("1", "10.0.0", False),
        ("1.2", "1.20.0", False),
        ("1.2.3.4", "1.2.3", False),
    ],
)
def test_version_prefixes_match_whole_dotted_parts(prefix: str, version: str, fits: bool) -> None:
    assert version_matches(prefix, version) is fits


def test_a_literal_input_of_the_wrong_type_is_rejected(
    demo_capabilities: dict[str, Capability],
) -> None:
    plan = make_plan(
        {"id": "split", "capability": "text.split", "input": {"text": "x", "max_sections": "8"}}
    )
    error = rejected(plan, capabilities=demo_capabilities)
    assert error.field == "plan.steps[0].input.max_sections"
    assert "does not match text.split's input schema: '8' is not of type 'integer'" in error.message


def test_a_missing_required_literal_is_rejected(demo_capabilities: dict[str, Capability]) -> None:
    plan = make_plan({"id": "split", "capability": "text.split", "input": {"max_sections": 3}})
    error = rejected(plan, capabilities=demo_capabilities)
    assert error.field == "plan.steps[0].input"
    assert "'text' is a required property" in error.message


def test_an_unexpected_literal_key_is_rejected(demo_capabilities: dict[str, Capability]) -> None:
    plan = make_plan({"id": "s", "capability": "text.split", "input": {"text": "x", "colour": 1}})
    assert rejected(plan, capabilities=demo_capabilities).field == "plan.steps[0].input"


def test_a_required_value_given_by_reference_counts_as_present(
    demo_capabilities: dict[str, Capability],
) -> None:
    plan = make_plan(
        {"id": "split", "capability": "text.split", "input": {"text": "Part ${input.n} of it"}}
    )
    validate_plan(plan, capabilities=demo_capabilities)


def test_a_reference_inside_a_list_leaves_the_whole_list_unchecked() -> None:
    schema = {
        "type": "object",
        "required": ["xs"],
        "properties": {"xs": {"type": "array", "items": {"type": "integer"}, "minItems": 3}},
    }
    capabilities = {"c": Capability(name="c", input_schema=schema)}
    validate_plan(
        make_plan({"id": "a", "capability": "c", "input": {"xs": [1, "${input.x}"]}}),
        capabilities=capabilities,
    )
    error = rejected(
        make_plan({"id": "a", "capability": "c", "input": {"xs": [1, "2"]}}),
        capabilities=capabilities,
    )
    assert error.field == "plan.steps[0].input.xs"


def test_literal_siblings_of_a_reference_are_still_checked_in_nested_objects() -> None:
    schema = {
        "type": "object",
        "properties": {
            "config": {
                "type": "object",
                "required": ["url", "retries"],
                "properties": {"url": {"type": "string"}, "retries": {"type": "integer"}},
            }
        },
    }
    capabilities = {"c": Capability(name="c", input_schema=schema)}
    ok = {"config": {"url": "${input.url}", "retries": 3}}
    validate_plan(make_plan({"id": "a", "capability": "c", "input": ok}), capabilities=capabilities)
    bad_type = {"config": {"url": "${input.url}", "retries": "three"}}
    error = rejected(
        make_plan({"id": "a", "capability": "c", "input": bad_type}), capabilities=capabilities
    )
    assert error.field == "plan.steps[0].input.config.retries"
    missing = {"config": {"url": "${input.url}"}}
    error = rejected(
        make_plan({"id": "a", "capability": "c", "input": missing}), capabilities=capabilities
    )
    assert error.field == "plan.steps[0].input.config"
    assert "'retries' is a required property" in error.message


def test_choices_that_a_referenced_value_could_satisfy_are_not_judged() -> None:
    schema = {
        "type": "object",
        "anyOf": [{"required": ["url"]}, {"required": ["path"]}],
        "minProperties": 2,
    }
    capabilities = {"c": Capability(name="c", input_schema=schema)}
    plan = make_plan({"id": "a", "capability": "c", "input": {"url": "${input.url}", "x": 1}})
    validate_plan(plan, capabilities=capabilities)
    literal = make_plan({"id": "a", "capability": "c", "input": {"other": 1, "x": 1}})
    assert rejected(literal, capabilities=capabilities).field == "plan.steps[0].input"


def test_a_capability_with_an_invalid_input_schema_is_reported() -> None:
    capabilities = {"c": Capability(name="c", input_schema={"type": "no-such-type"})}
    error = rejected(make_plan({"id": "a", "capability": "c"}), capabilities=capabilities)
    assert error.field == "plan.steps[0].capability"
    assert "invalid input schema" in error.message


# -- schemas per agent ------------------------------------------------------------------------

TEXT = {"type": "object", "required": ["text"], "properties": {"text": {"type": "string"}}}


def _op(schema: dict[str, Any], version: str = "1.0.0") -> Capability:
    return Capability(name="victim.op", version=version, input_schema=schema)


def test_an_input_one_serving_agent_accepts_is_accepted_whatever_the_others_declare() -> None:
    offers = Offers([Offer("squatter", _op({"not": {}})), Offer("victim", _op(TEXT))])
    validate_plan(
        make_plan({"id": "a", "capability": "victim.op", "input": {"text": "hi"}}),
        capabilities=offers,
    )
    error = rejected(
        make_plan({"id": "a", "capability": "victim.op", "input": {"text": 5}}),
        capabilities=offers,
    )
    # The first serving agent's reason.
    assert error.field == "plan.steps[0].input"
    assert "should not be valid under {}" in error.message


def test_only_the_agents_that_could_serve_the_step_judge_its_input() -> None:
    offers = Offers(
        [Offer("squatter", _op({"not": {}}, version="9.0.0")), Offer("victim", _op(TEXT))]
    )
    step = {"id": "a", "capability": "victim.op", "input": {"text": "hi"}}
    validate_plan(make_plan({**step, "pin_agent": "victim"}), capabilities=offers)
    validate_plan(make_plan({**step, "version": "1"}), capabilities=offers)
    for alone in ({"pin_agent": "squatter"}, {"exclude_agents": ["victim"]}, {"version": "9"}):
        error = rejected(make_plan({**step, **alone}), capabilities=offers)
        assert error.field == "plan.steps[0].input"
    wrong = rejected(make_plan({**step, "version": "2"}), capabilities=offers)
    assert wrong.message == "victim.op is at version 1.0.0, 9.0.0, not 2"


def test_a_capability_no_connected_agent_offers_but_one_did_is_accepted_unchecked() -> None:
    offers = Offers(known={"victim.op"})
    assert dict(offers) == {}
    validate_plan(
        make_plan({"id": "a", "capability": "victim.op", "input": {"text": 5}, "version": "7"}),
        capabilities=offers,
    )
    assert rejected(
        make_plan({"id": "a", "capability": "other.op"}), capabilities=offers
    ).field == ("plan.steps[0].capability")


# -- the graph ------------------------------------------------------------------------------


def test_dependencies_come_from_references_needs_and_for_each() -> None:
    plan = make_plan(
        {"id": "a"},
        {"id": "b"},
        {"id": "c", "needs": ["a"]},
        {
            "id": "d",
            "for_each": "${steps.c.output.items}",
            "input": {"x": ["${steps.b.output.k}", "${item}", "${input.z}"]},
        },
    )
    assert dependencies(plan) == {"a": set(), "b": set(), "c": {"a"}, "d": {"b", "c"}}


def test_topological_order_puts_dependencies_first_and_otherwise_keeps_plan_order() -> None:
    plan = make_plan(
        {"id": "late", "needs": ["early"]},
        {"id": "free"},
        {"id": "early"},
        {"id": "last", "input": {"x": "${steps.late.output}"}},
    )
    assert topological_order(plan) == ["free", "early", "late", "last"]


def test_topological_order_rejects_unknown_steps_and_cycles() -> None:
    with pytest.raises(ValidationError) as caught:
        topological_order(make_plan({"id": "a", "needs": ["zz"]}))
    assert caught.value.field == "plan.steps[0].needs[0]"
    with pytest.raises(ValidationError, match="dependency cycle: a -> b -> a"):
        topological_order(make_plan({"id": "a", "needs": ["b"]}, {"id": "b", "needs": ["a"]}))
