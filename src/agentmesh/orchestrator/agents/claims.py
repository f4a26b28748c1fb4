"""Claims on capability names: who may offer a capability another agent already offers.

An agent offering a capability with the same schemas as the agents already offering it is one
more of them (a replica, a second instance). One that declares other schemas under that name
would change what the name means for every client (and, with a schema anything fits, take a
share of their work), so it is refused unless the policy's ``redefine_capabilities`` lets
that identity do it. Agents of the same identity never clash: a re-registration replaces its
own card.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from agentmesh.errors import PermissionDenied
from agentmesh.models import AgentCard, Capability

#: Whether the registering identity may redefine a capability (by name).
MayRedefine = Callable[[str], bool]

#: What a declaration accepts and promises: its input and output schemas' canonical keys.
Contract = tuple[str, str]


class Claimant(Protocol):
    """An agent as the claims see it: its card, who registered it, whether it is connected."""

    @property
    def card(self) -> AgentCard: ...

    @property
    def identity(self) -> str: ...

    @property
    def alive(self) -> bool: ...


def contract(capability: Capability) -> Contract:
    """The payloads ``capability`` accepts and promises, as one comparable key: equal for
    declarations that accept and promise the same payloads."""
    # The canonical keys are made once per declaration (and interned): comparing the
    # schemas themselves for every connected agent was a tenth of the orchestrator's work
    # while a thousand agents registered (issue 9).
    return (capability.input_schema_key(), capability.output_schema_key())


class Claims:
    """The capabilities the registry's agents offer, by name and contract.

    A registration is checked against the agents that offer one of its capabilities under
    another contract, and nothing else: with a thousand agents connected, checking every
    one of them twice per registration was a quarter of the orchestrator's work while they
    registered, and registrations timed out (issue 9). The registry :meth:`add` s an agent
    when it publishes it, :meth:`remove` s it when it drops it (or before changing its card);
    agents still held but disconnected are skipped by :meth:`check`, as before the index.
    """

    def __init__(self) -> None:
        # name -> contract -> claimants, in the order they came (dicts as ordered sets).
        self._offers: dict[str, dict[Contract, dict[Claimant, None]]] = {}
        # What each claimant was added under: its card may be replaced before removal.
        self._held: dict[Claimant, list[tuple[str, Contract]]] = {}

    def add(self, claimant: Claimant) -> None:
        """Count ``claimant``'s capabilities, as its card declares them now."""
        self.remove(claimant)
        # A name declared twice (two versions) counts as its first declaration, the one
        # card.capability(name) finds: what a registration was always compared with.
        first: dict[str, Capability] = {}
        for capability in claimant.card.capabilities:
            first.setdefault(capability.name, capability)
        keys = [(name, contract(capability)) for name, capability in first.items()]
        for name, key in keys:
            self._offers.setdefault(name, {}).setdefault(key, {})[claimant] = None
        self._held[claimant] = keys

    def remove(self, claimant: Claimant) -> None:
        """Forget ``claimant`` (nothing when it was never added)."""
        for name, key in self._held.pop(claimant, ()):
            by_contract = self._offers[name]
            claimants = by_contract[key]
            del claimants[claimant]
            if not claimants:
                del by_contract[key]
                if not by_contract:
                    del self._offers[name]

    def clear(self) -> None:
        """Forget every claimant."""
        self._offers.clear()
        self._held.clear()

    def check(self, card: AgentCard, identity: str, may_redefine: MayRedefine) -> None:
        """Raise PermissionDenied, naming the capability, when ``card`` offers a capability
        that a connected agent of another identity offers with other schemas, and
        ``identity`` may not redefine it."""
        for index, capability in enumerate(card.capabilities):
            other = self._clashing(capability, identity)
            if other is None or may_redefine(capability.name):
                continue
            raise PermissionDenied(
                f"policy: {identity} may not register capability {capability.name!r}: agent "
                f"{other.card.name!r} offers it with other schemas (a policy rule's "
                "redefine_capabilities can allow it)",
                field=f"card.capabilities[{index}].name",
            )

    def _clashing(self, capability: Capability, identity: str) -> Claimant | None:
        """A connected agent of another identity offering ``capability`` under another
        contract, or None."""
        mine = contract(capability)
        for key, claimants in self._offers.get(capability.name, {}).items():
            if key == mine:
                continue
            for claimant in claimants:
                if claimant.identity != identity and claimant.alive:
                    return claimant
        return None
