"""The ``analyst`` agent: keywords, sentiment and sentences of a text (``text.analyze``).

Several instances may run at once under different names: set
``AGENTMESH_AGENT_NAME`` (default ``analyst``) and issue a certificate for each.
"""

from __future__ import annotations

from agentmesh.agent import Agent, AssignmentContext, capability, run
from agentmesh.examples import text
from agentmesh.examples.pacing import latency_for, step
from agentmesh.examples.schemas import Analysis, AnalyzeIn


class Analyst(Agent):
    """Analyses text with word counts and a built-in sentiment lexicon."""

    name = "analyst"
    version = "1.0.0"
    max_concurrency = 2

    @capability("text.analyze", tags=("demo",))
    async def analyze(self, data: AnalyzeIn, ctx: AssignmentContext) -> Analysis:
        """Count words, pick keywords, score sentiment and list sentences."""
        pause = latency_for(len(data.text)) / 3
        await step(ctx, 0.1, "tokenizing", pause)
        found = text.keywords(data.text)
        await step(ctx, 0.5, f"keywords: {', '.join(found[:3])}", pause)
        mood = text.sentiment(data.text)
        await step(ctx, 0.8, f"sentiment {mood:+.2f}", pause)
        return Analysis(
            words=len(text.words(data.text)),
            keywords=found,
            sentiment=mood,
            sentences=text.sentences(data.text),
        )


def main() -> None:
    """Serve an analyst until SIGTERM."""
    run(Analyst())


if __name__ == "__main__":  # pragma: no cover - exercised as a subprocess
    main()
