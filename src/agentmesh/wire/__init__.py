"""Protobuf ⇄ domain conversion for the client, the agent SDK and the orchestrator; no I/O."""

from agentmesh.wire.cards import (
    card_from_proto,
    card_to_proto,
    from_struct,
    step_from_proto,
    step_to_proto,
    to_struct,
)

__all__ = [
    "card_from_proto",
    "card_to_proto",
    "from_struct",
    "step_from_proto",
    "step_to_proto",
    "to_struct",
]
