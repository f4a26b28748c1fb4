"""Claims on capability names: who may offer a capability another agent already offers.

An agent offering a capability with the same schemas as the agents already offering it is one
more of them (a replica, a second instance). One that declares other schemas under that name
would change what the name means for every client (and, with a schema anything fits, take a
share of their work), so it is refused unless the policy's ``redefine_capabilities`` lets
that identity do it. Agents of the same identity never clash: a re-registration replaces its
own card.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from agentmesh.errors import PermissionDenied
from agentmesh.models import AgentCard, Capability

#: Whether the registering identity may redefine a capability (by name).
MayRedefine = Callable[[str], bool]


def same_contract(a: Capability, b: Capability) -> bool:
    """True when both declarations accept and promise the same payloads."""
    # By their canonical keys, each made once per declaration: a registration is checked
    # against every connected agent, and comparing the schemas themselves each time was a
    # tenth of the orchestrator's work while a thousand agents registered (issue 9).
    return (
        a.input_schema_key() == b.input_schema_key()
        and a.output_schema_key() == b.output_schema_key()
    )


def check_claims(
    card: AgentCard,
    identity: str,
    others: Iterable[tuple[AgentCard, str]],
    may_redefine: MayRedefine,
) -> None:
    """Raise PermissionDenied, naming the capability, when ``card`` offers a capability that
    an agent of another identity (``others``: connected cards and their identities) offers
    with other schemas, and ``identity`` may not redefine it."""
    held = [other for other, owner in others if owner != identity]
    for index, capability in enumerate(card.capabilities):
        for other in held:
            theirs = other.capability(capability.name)
            if theirs is None or same_contract(capability, theirs):
                continue
            if may_redefine(capability.name):
                break
            raise PermissionDenied(
                f"policy: {identity} may not register capability {capability.name!r}: agent "
                f"{other.name!r} offers it with other schemas (a policy rule's "
                "redefine_capabilities can allow it)",
                field=f"card.capabilities[{index}].name",
            )
