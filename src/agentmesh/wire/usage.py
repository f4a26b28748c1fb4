"""Usage and budgets on the wire (agent results, task submissions and task views)."""

from __future__ import annotations

import math

from agentmesh._proto.agentmesh.v1 import common_pb2
from agentmesh.models import Budget, Usage


def usage_to_proto(usage: Usage, target: common_pb2.Usage) -> None:
    """Fill ``target`` from ``usage``."""
    target.input_tokens = usage.input_tokens
    target.output_tokens = usage.output_tokens
    target.cost = usage.cost
    target.seconds = usage.seconds
    target.steps = usage.steps


def _amount(value: float) -> float:
    # What an agent reports is added to a task's totals: a NaN or a negative figure would
    # poison them (a budget compared with NaN is never spent), so it counts as nothing.
    return value if math.isfinite(value) and value > 0 else 0.0


def usage_from_proto(message: common_pb2.Usage) -> Usage:
    """The usage in ``message``; amounts that are not finite and positive count as 0."""
    return Usage(
        input_tokens=message.input_tokens,
        output_tokens=message.output_tokens,
        cost=_amount(message.cost),
        seconds=_amount(message.seconds),
        steps=message.steps,
    )


def budget_to_proto(budget: Budget, target: common_pb2.Budget) -> None:
    """Fill ``target`` from ``budget``."""
    target.tokens = budget.tokens
    target.cost = budget.cost
    target.seconds = budget.seconds
    target.steps = budget.steps


def budget_from_proto(message: common_pb2.Budget) -> Budget:
    """The budget in ``message`` (pydantic refuses negative or non-finite limits)."""
    return Budget(
        tokens=message.tokens, cost=message.cost, seconds=message.seconds, steps=message.steps
    )
