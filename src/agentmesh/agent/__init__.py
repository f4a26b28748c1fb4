"""The agent SDK: declare capabilities, serve them over mTLS, register, drain on shutdown.

::

    class Shouter(Agent):
        name = "shouter"

        @capability("text.upper")
        async def upper(self, data: TextIn, ctx: AssignmentContext) -> TextOut:
            await ctx.progress(0.5, "halfway")
            return TextOut(text=data.text.upper())

    run(Shouter())
"""

from agentmesh.agent.base import Agent
from agentmesh.agent.capability import capability
from agentmesh.agent.context import AssignmentContext
from agentmesh.agent.server import AgentServer, run
from agentmesh.agent.settings import AgentSettings

__all__ = [
    "Agent",
    "AgentServer",
    "AgentSettings",
    "AssignmentContext",
    "capability",
    "run",
]
