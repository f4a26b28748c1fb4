"""Per-attempt lookups cached by identity answer as the scans and compilations they replace."""

from __future__ import annotations

from agentmesh import schemas
from agentmesh.models import AgentCard, Capability
from agentmesh.orchestrator.agents.claims import contract


def test_a_capability_is_found_by_name_and_a_copy_with_other_capabilities_is_not_stale() -> None:
    card = AgentCard(
        name="a",
        endpoint="127.0.0.1:1",
        capabilities=(Capability(name="x", version="1.0.0"), Capability(name="x", version="2.0.0")),
    )
    found = card.capability("x")
    assert found is not None
    assert found.version == "1.0.0"
    assert card.capability("y") is None
    other = card.model_copy(update={"capabilities": (Capability(name="y"),)})
    assert other.capability("x") is None
    assert other.capability("y") is not None
    assert card.capability("x") is found


def test_a_validator_is_reused_for_the_same_schema_object_and_never_for_another() -> None:
    schema = {"type": "object", "required": ["a"]}
    first = schemas.validator(schema)
    assert first is not None
    assert schemas.validator(schema) is first
    assert schemas.first_error(schema, {}) is not None
    # Fresh schemas. (The cache holds each schema it keyed by identity, so an address is not
    # recycled while its entry lives: a gc.collect() per round only cost seconds.)
    for _ in range(100):
        other = {"type": "string"}
        assert schemas.first_error(other, "text") is None
        assert schemas.first_error(other, 1) is not None
    assert schemas.validator({"type": "nope"}) is None


def test_a_contract_is_compared_by_cached_keys_that_follow_a_copy() -> None:
    echo = Capability(name="x", input_schema={"type": "object"}, output_schema={"type": "string"})
    twin = Capability(name="x", input_schema={"type": "object"}, output_schema={"type": "string"})
    assert contract(echo) == contract(twin)
    other_output = echo.model_copy(update={"output_schema": {"type": "number"}})
    other_input = echo.model_copy(update={"input_schema": {"type": "array"}})
    assert contract(echo) != contract(other_output)  # the copy's key is its own, not echo's
    assert contract(echo) != contract(other_input)
    assert contract(echo) == contract(twin)
