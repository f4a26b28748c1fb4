"""The ``@capability`` decorator: a typed async method becomes a capability with JSON schemas."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar, get_type_hints

from pydantic import BaseModel

from agentmesh.models import (
    MAX_CAPABILITY_NAME,
    MAX_RESOURCE_NAME,
    Capability,
    is_capability_name,
    is_resource_name,
)

F = TypeVar("F", bound=Callable[..., Awaitable[Any]])

_SPEC_ATTR = "__agentmesh_capability__"


@dataclass(frozen=True, slots=True)
class CapabilitySpec:
    """A capability as declared on an agent class: its contract and the method that runs it."""

    capability: Capability
    input_model: type[BaseModel]
    output_model: type[BaseModel]
    #: Attribute name of the handler on the agent, looked up per instance so overrides work.
    method: str


def capability(
    name: str,
    *,
    version: str = "1.0.0",
    description: str = "",
    tags: Sequence[str] = (),
    resources: Sequence[str] = (),
) -> Callable[[F], F]:
    """Declare an ``async def method(self, data: In, ctx: AssignmentContext) -> Out`` a capability.

    ``In`` and ``Out`` must be pydantic models; their JSON schemas become the
    capability's input and output schemas. The description defaults to the first
    line of the method's docstring. ``resources`` names the shared resources each run uses
    (e.g. ``("llm:openai/gpt-4o",)``): the orchestrator's pools file limits their use
    across every agent of the mesh.
    """
    if not is_capability_name(name):
        raise ValueError(
            f"capability name {name!r} must be dotted lowercase, at most {MAX_CAPABILITY_NAME}"
            " characters, e.g. 'text.summarize'"
        )
    if isinstance(resources, str):
        raise TypeError("resources must be a sequence of names, e.g. ('llm:openai/gpt-4o',)")
    for resource in resources:
        if not is_resource_name(resource):
            raise ValueError(
                f"resource name {resource!r} must be letters, digits and ._:/@+- (not first),"
                f" at most {MAX_RESOURCE_NAME} characters, e.g. 'llm:openai/gpt-4o'"
            )

    def decorate(fn: F) -> F:
        input_model, output_model = _payload_models(fn)
        doc = (inspect.getdoc(fn) or "").strip().splitlines()
        spec = CapabilitySpec(
            capability=Capability(
                name=name,
                version=version,
                description=description or (doc[0] if doc else ""),
                input_schema=input_model.model_json_schema(),
                output_schema=output_model.model_json_schema(),
                tags=tuple(tags),
                resources=tuple(dict.fromkeys(resources)),
            ),
            input_model=input_model,
            output_model=output_model,
            method=fn.__name__,
        )
        setattr(fn, _SPEC_ATTR, spec)
        return fn

    return decorate


def spec_of(obj: object) -> CapabilitySpec | None:
    """The capability declared on ``obj`` by :func:`capability`, if any."""
    spec = getattr(obj, _SPEC_ATTR, None)
    return spec if isinstance(spec, CapabilitySpec) else None


def _payload_models(fn: Callable[..., Any]) -> tuple[type[BaseModel], type[BaseModel]]:
    where = getattr(fn, "__qualname__", repr(fn))
    if not inspect.iscoroutinefunction(fn):
        raise TypeError(f"capability {where} must be an async def method")
    params = list(inspect.signature(fn).parameters.values())
    if len(params) != 3:
        raise TypeError(f"capability {where} must take (self, data, ctx)")
    try:
        hints = get_type_hints(fn)
    except NameError as exc:
        # Models defined inside a function cannot be resolved from the module's globals.
        raise TypeError(
            f"cannot resolve the annotations of {where} ({exc}); define its models at module level"
        ) from exc
    models = (hints.get(params[1].name), hints.get("return"))
    for role, model in zip(("input", "output"), models, strict=True):
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            raise TypeError(f"capability {where} must annotate its {role} with a pydantic model")
    return models  # type: ignore[return-value]  # checked just above
