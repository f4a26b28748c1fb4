"""The claims index answers as a check of every connected agent would, and follows the links."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from agentmesh.errors import PermissionDenied
from agentmesh.models import AgentCard, Capability
from agentmesh.orchestrator.agents.claims import Claims


@dataclass(eq=False)
class Held:
    """A registered agent as the claims see one (the registry adds its links)."""

    card: AgentCard
    identity: str
    alive: bool = True


def _card(name: str, *capabilities: Capability) -> AgentCard:
    return AgentCard(name=name, endpoint="127.0.0.1:1", capabilities=capabilities)


def _echo(output: str = "string", version: str = "1.0.0") -> Capability:
    return Capability(
        name="echo",
        version=version,
        input_schema={"type": "object"},
        output_schema={"type": output},
    )


def _never(name: str) -> bool:
    return False


def test_another_identitys_other_schemas_are_refused_naming_the_capability_and_holder() -> None:
    claims = Claims()
    claims.add(Held(_card("a", _echo()), "spiffe://mesh/a"))
    claims.check(_card("b", _echo()), "spiffe://mesh/b", _never)  # a replica: same contract
    with pytest.raises(PermissionDenied) as refused:
        claims.check(
            _card("b", Capability(name="other"), _echo("number")), "spiffe://mesh/b", _never
        )
    assert refused.value.field == "card.capabilities[1].name"
    assert "'echo'" in str(refused.value)
    assert "agent 'a'" in str(refused.value)
    # The same identity re-registers its own card; a policy may let another redefine it.
    claims.check(_card("a", _echo("number")), "spiffe://mesh/a", _never)
    claims.check(_card("b", _echo("number")), "spiffe://mesh/b", lambda name: name == "echo")


def test_disconnected_removed_and_replaced_holders_no_longer_clash() -> None:
    claims = Claims()
    held = Held(_card("a", _echo()), "spiffe://mesh/a")
    claims.add(held)
    newcomer = _card("b", _echo("number"))
    held.alive = False
    claims.check(newcomer, "spiffe://mesh/b", _never)
    held.alive = True
    with pytest.raises(PermissionDenied):
        claims.check(newcomer, "spiffe://mesh/b", _never)
    # A new card (a re-registration): what it offers now counts, not what it offered.
    held.card = _card("a", _echo("number"))
    claims.add(held)
    claims.check(newcomer, "spiffe://mesh/b", _never)
    with pytest.raises(PermissionDenied):
        claims.check(_card("b", _echo()), "spiffe://mesh/b", _never)
    claims.remove(held)
    claims.remove(held)  # twice is nothing
    claims.check(_card("b", _echo()), "spiffe://mesh/b", _never)
    claims.add(held)
    claims.clear()
    claims.check(_card("b", _echo()), "spiffe://mesh/b", _never)


def test_a_name_declared_twice_counts_as_its_first_declaration() -> None:
    claims = Claims()
    claims.add(Held(_card("a", _echo(), _echo("number", "2.0.0")), "spiffe://mesh/a"))
    claims.check(_card("b", _echo()), "spiffe://mesh/b", _never)
    with pytest.raises(PermissionDenied):
        claims.check(_card("b", _echo("number")), "spiffe://mesh/b", _never)
