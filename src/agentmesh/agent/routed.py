"""Agents whose capabilities are read at run time, not declared in a class: bridges.

A bridge (to Celery, to an A2A agent, ...) learns what it offers from a file or a remote
card, so it cannot write ``@capability`` methods with pydantic models. :func:`routed_agent`
builds the agent from :class:`Route` values instead: each a capability with its JSON
schemas and a handler that takes and returns plain JSON objects. The SDK's own input and
output checks accept any object; the orchestrator checks both against the declared schemas.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

from agentmesh.agent.base import Agent, Handler
from agentmesh.agent.capability import CapabilitySpec
from agentmesh.agent.context import AssignmentContext
from agentmesh.models import Capability

RouteHandler = Callable[[dict[str, Any], AssignmentContext], Awaitable[dict[str, Any]]]


class AnyObject(BaseModel):
    """Any JSON object; the capability's declared schema is checked by the orchestrator."""

    model_config = ConfigDict(extra="allow")


@dataclass(frozen=True, slots=True)
class Route:
    """One capability of a routed agent and the handler that serves it."""

    capability: Capability
    handler: RouteHandler = field(compare=False)


class RoutedAgent(Agent):
    """Base of the classes :func:`routed_agent` builds; not used directly."""

    _routes: ClassVar[Mapping[str, Route]] = {}

    def handler(self, spec: CapabilitySpec) -> Handler:
        route = self._routes[spec.capability.name]

        async def call(data: BaseModel, ctx: AssignmentContext) -> dict[str, Any]:
            return await route.handler(data.model_dump(mode="json"), ctx)

        return call


def routed_agent(
    name: str,
    routes: Sequence[Route],
    *,
    version: str = "0.0.0",
    max_concurrency: int = 1,
    labels: Mapping[str, str] | None = None,
) -> RoutedAgent:
    """An agent called ``name`` offering each route's capability.

    Raises ValueError for two routes of one capability name or a concurrency below 1.
    """
    by_name: dict[str, Route] = {}
    for route in routes:
        if route.capability.name in by_name:
            raise ValueError(f"capability {route.capability.name!r} is routed twice")
        by_name[route.capability.name] = route
    if max_concurrency < 1:
        raise ValueError(f"max_concurrency must be at least 1, not {max_concurrency}")

    # A class per agent: Agent keeps its name, limits and capabilities on the class.
    class Routed(RoutedAgent):
        pass

    Routed.__qualname__ = Routed.__name__ = f"Routed[{name}]"
    Routed.name = name
    Routed.version = version
    Routed.max_concurrency = max_concurrency
    Routed.labels = dict(labels or {})
    Routed._routes = by_name
    Routed._specs = {
        capability: CapabilitySpec(
            capability=route.capability,
            input_model=AnyObject,
            output_model=AnyObject,
            method="",
        )
        for capability, route in by_name.items()
    }
    return Routed()
