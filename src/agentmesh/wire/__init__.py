"""Protobuf ⇄ domain conversion for the client, the agent SDK and the orchestrator; no I/O."""

from agentmesh.wire.cards import (
    card_from_proto,
    card_to_proto,
    from_struct,
    step_from_proto,
    step_to_proto,
    to_struct,
)
from agentmesh.wire.usage import (
    budget_from_proto,
    budget_to_proto,
    usage_from_proto,
    usage_to_proto,
)

__all__ = [
    "budget_from_proto",
    "budget_to_proto",
    "card_from_proto",
    "card_to_proto",
    "from_struct",
    "step_from_proto",
    "step_to_proto",
    "to_struct",
    "usage_from_proto",
    "usage_to_proto",
]
