"""What the agents offer: each capability as each connected agent declares it.

A capability's schemas belong to the agent (and version) that declares them, never to the
name: two agents may offer ``text.upper`` with different input schemas, and neither decides
for the other. Plan validation asks which connected agents could serve a step and accepts the
step's input when one of them would; the registry builds these snapshots.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

from agentmesh.models import Capability


@dataclass(frozen=True, slots=True)
class Offer:
    """One connected agent's declaration of one capability."""

    #: The agent's name; empty when unknown (then no pin or exclusion applies to it).
    agent: str
    capability: Capability


class Offers(Mapping[str, Capability]):
    """A snapshot of what connected agents offer, and which names were offered at all.

    As a mapping (name → capability, for planners' prompts) it holds the capabilities some
    connected agent offers, as the earliest registered of them declares it. ``known`` names
    include those of agents that left: steps for them may wait for an agent to come back.
    """

    def __init__(self, offers: Iterable[Offer] = (), *, known: Iterable[str] = ()) -> None:
        self._offers: dict[str, list[Offer]] = {}
        for offer in offers:
            self._offers.setdefault(offer.capability.name, []).append(offer)
        self._known = frozenset(known) | self._offers.keys()

    @classmethod
    def of(cls, capabilities: Mapping[str, Capability]) -> Offers:
        """``capabilities`` (name → capability) as offered by one agent without a name."""
        if isinstance(capabilities, Offers):
            return capabilities
        return cls(Offer("", c) for c in capabilities.values())

    def known(self, name: str) -> bool:
        """True when some agent offers ``name`` or offered it since start-up."""
        return name in self._known

    def serving(
        self, name: str, *, pin: str = "", exclude: Iterable[str] = ()
    ) -> tuple[Offer, ...]:
        """The connected agents' offers of ``name`` that a step with ``pin`` and ``exclude``
        may be sent to."""
        excluded = frozenset(exclude)
        return tuple(
            offer
            for offer in self._offers.get(name, ())
            if not offer.agent or ((not pin or offer.agent == pin) and offer.agent not in excluded)
        )

    def __getitem__(self, name: str) -> Capability:
        return self._offers[name][0].capability

    def __iter__(self) -> Iterator[str]:
        return iter(self._offers)

    def __len__(self) -> int:
        return len(self._offers)
