"""The ``splitter`` agent: cuts a document into sections (``text.split``)."""

from __future__ import annotations

from agentmesh.agent import Agent, AssignmentContext, capability, run
from agentmesh.examples import text
from agentmesh.examples.pacing import latency_for, step
from agentmesh.examples.schemas import SplitIn, SplitOut


class Splitter(Agent):
    """Splits documents at blank lines and headings."""

    name = "splitter"
    version = "1.0.0"
    max_concurrency = 4

    @capability("text.split", tags=("demo",))
    async def split(self, data: SplitIn, ctx: AssignmentContext) -> SplitOut:
        """Split a document into at most max_sections sections, merging tiny ones."""
        pause = latency_for(len(data.text)) / 2
        await step(ctx, 0.1, "reading document", pause)
        sections = text.split_sections(data.text, data.max_sections)
        await step(
            ctx, 0.7, f"found {len(sections)} section{'' if len(sections) == 1 else 's'}", pause
        )
        return SplitOut(sections=sections)


def main() -> None:
    """Serve the splitter until SIGTERM."""
    run(Splitter())


if __name__ == "__main__":  # pragma: no cover - exercised as a subprocess
    main()
