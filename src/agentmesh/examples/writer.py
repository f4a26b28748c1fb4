"""The ``writer`` agent: extractive summaries (``text.summarize``) and their publication.

``text.publish`` "publishes" a summary under a content-derived id, kept in
memory; ``text.unpublish`` is its compensation.
"""

from __future__ import annotations

import hashlib

from agentmesh.agent import Agent, AssignmentContext, capability, run
from agentmesh.examples import text
from agentmesh.examples.pacing import latency_for, step
from agentmesh.examples.schemas import (
    Brief,
    Publication,
    PublishIn,
    SummarizeIn,
    Unpublished,
    UnpublishIn,
)

#: The most sentences a summary takes, one per section at best.
MAX_SENTENCES = 6
PUBLICATION_PREFIX = "memory://briefs/"


class Writer(Agent):
    """Writes and publishes briefs."""

    name = "writer"
    version = "1.0.0"
    max_concurrency = 2

    def __init__(self) -> None:
        self.published: set[str] = set()

    @capability("text.summarize", tags=("demo",))
    async def summarize(self, data: SummarizeIn, ctx: AssignmentContext) -> Brief:
        """Pick each section's best sentence by keyword weight and join them into a brief."""
        size = sum(len(s) for a in data.analyses for s in a.sentences)
        pause = latency_for(size) / 2
        await step(
            ctx,
            0.1,
            f"reading {len(data.analyses)} analys{'i' if len(data.analyses) == 1 else 'e'}s",
            pause,
        )
        ranked = text.rank_keywords(a.keywords for a in data.analyses)
        weights = {word: len(ranked) - i for i, word in enumerate(ranked)}
        best: list[tuple[float, int, str]] = []
        for index, analysis in enumerate(data.analyses):
            if analysis.sentences:
                sentence = max(analysis.sentences, key=lambda s: text.sentence_score(s, weights))
                best.append((text.sentence_score(sentence, weights), index, sentence))
        chosen = sorted(sorted(best, reverse=True)[:MAX_SENTENCES], key=lambda b: b[1])
        await step(
            ctx, 0.6, f"chose {len(chosen)} sentence{'' if len(chosen) == 1 else 's'}", pause
        )
        body = " ".join(sentence for _, _, sentence in chosen)
        words = sum(a.words for a in data.analyses)
        mood = sum(a.sentiment * a.words for a in data.analyses) / words if words else 0.0
        return Brief(
            summary=f"{data.title}\n\n{body}" if data.title else body,
            keywords=ranked,
            sentiment=round(mood, 3),
            words=words,
        )

    @capability("text.publish", tags=("demo", "compensation:text.unpublish"))
    async def publish(self, data: PublishIn, ctx: AssignmentContext) -> Publication:
        """Publish a summary; the same summary always gets the same url."""
        await step(ctx, 0.3, "publishing", latency_for(len(data.summary)) / 2)
        digest = hashlib.sha256(data.summary.encode()).hexdigest()[:12]
        url = PUBLICATION_PREFIX + digest
        self.published.add(url)
        await ctx.progress(0.9, f"published {url}")
        return Publication(url=url)

    @capability("text.unpublish", tags=("demo", "compensates:text.publish"))
    async def unpublish(self, data: UnpublishIn, ctx: AssignmentContext) -> Unpublished:
        """Withdraw a publication (the compensation of text.publish)."""
        await step(ctx, 0.3, f"withdrawing {data.output.url}", latency_for(0) / 2)
        removed = data.output.url in self.published
        self.published.discard(data.output.url)
        await ctx.progress(0.9, "withdrawn" if removed else "was not published")
        return Unpublished(removed=removed)


def main() -> None:
    """Serve the writer until SIGTERM."""
    run(Writer())


if __name__ == "__main__":  # pragma: no cover - exercised as a subprocess
    main()
