"""A test agent that also plans goals (the ``plan`` capability): ``-m tests.support.planner``.

Kept apart from :mod:`tests.support.agents` so that only tests that want goals delegated
to an agent have one.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from agentmesh.agent import AssignmentContext, capability, run
from agentmesh.errors import StepFailed
from tests.support.agents import PlanningAgent


class Goal(BaseModel):
    goal: str
    input: dict[str, Any] = {}
    capabilities: list[dict[str, Any]] = []


class Planned(BaseModel):
    plan: dict[str, Any]


class GoalPlanner(PlanningAgent):
    """Everything the fault-injecting agent does, plus planning goals (and failing, with an
    internal error, those that start with "crash")."""

    @capability("plan", description="Plan a goal: one test.echo step per word of the goal.")
    async def plan(self, data: Goal, ctx: AssignmentContext) -> Planned:
        if data.goal.startswith("crash"):
            # An internal error (a bug), the kind that counts against the agent's circuit.
            raise RuntimeError("the planner is broken (the goal asked for it)")
        offered = {c["name"] for c in data.capabilities}
        if "test.echo" not in offered:
            raise StepFailed("test.echo is not offered", retryable=False)
        words = data.goal.split()
        return Planned(
            plan={
                "steps": [
                    {"id": f"w{i}", "capability": "test.echo", "input": {"value": word}}
                    for i, word in enumerate(words)
                ]
            }
        )


if __name__ == "__main__":
    run(GoalPlanner())
