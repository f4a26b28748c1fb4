"""The ``Agent`` base class: a named, versioned set of capabilities."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any, ClassVar

from pydantic import BaseModel

from agentmesh.agent.capability import CapabilitySpec, spec_of
from agentmesh.agent.context import AssignmentContext
from agentmesh.models import AgentCard

Handler = Callable[[BaseModel, AssignmentContext], Awaitable[Any]]


class Agent:
    """Subclass to write an agent: set ``name``, ``version`` and ``max_concurrency``,
    and mark async methods with :func:`~agentmesh.agent.capability`.

    Capabilities are collected when the class is defined, including those
    inherited from base classes; a subclass may redeclare a capability name.
    """

    #: Default registration name; the agent's certificate must carry the same name.
    name: ClassVar[str] = ""
    #: The implementation's version, reported in the card.
    version: ClassVar[str] = "0.0.0"
    #: Most assignments run at once; more are refused as ``busy``.
    max_concurrency: ClassVar[int] = 1
    #: Free-form labels reported in the card (matching may use them).
    labels: ClassVar[Mapping[str, str]] = {}

    _specs: ClassVar[dict[str, CapabilitySpec]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        specs: dict[str, CapabilitySpec] = {}
        for klass in reversed(cls.__mro__):
            declared: set[str] = set()
            for value in vars(klass).values():
                spec = spec_of(value)
                if spec is None:
                    continue
                if spec.capability.name in declared:
                    raise TypeError(
                        f"{klass.__qualname__} declares capability {spec.capability.name!r} twice"
                    )
                declared.add(spec.capability.name)
                specs[spec.capability.name] = spec
        if cls.max_concurrency < 1:
            raise TypeError(f"{cls.__qualname__}.max_concurrency must be at least 1")
        cls._specs = specs

    @classmethod
    def specs(cls) -> Mapping[str, CapabilitySpec]:
        """The capabilities this agent offers, by name."""
        return cls._specs

    def handler(self, spec: CapabilitySpec) -> Handler:
        """The bound method that runs ``spec`` on this instance."""
        method: Handler = getattr(self, spec.method)
        return method

    def card(self, endpoint: str, *, name: str | None = None) -> AgentCard:
        """The card this agent registers when serving at ``endpoint`` (under ``name`` if given)."""
        return AgentCard(
            name=name or self.name,
            endpoint=endpoint,
            capabilities=tuple(spec.capability for spec in self.specs().values()),
            max_concurrency=self.max_concurrency,
            version=self.version,
            labels=dict(self.labels),
            # The SDK's Session reads batches, whatever the agent's handlers are.
            reads_batches=True,
        )
