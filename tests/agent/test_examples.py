"""The demo agents: sensible outputs, alone and wired together over real Sessions."""

from __future__ import annotations

import pytest

from agentmesh.agent import AgentServer, AssignmentContext
from agentmesh.agent.work import Assignment
from agentmesh.examples import sample_document, text
from agentmesh.examples.analyst import Analyst
from agentmesh.examples.pacing import latency_for
from agentmesh.examples.schemas import PublishIn
from agentmesh.examples.splitter import Splitter
from agentmesh.examples.writer import PUBLICATION_PREFIX, Writer
from tests.agent.agent_support import SessionClient, kind_of, output_of
from tests.agent.conftest import OpenSession, StartAgent


@pytest.fixture(autouse=True)
def fast_demo(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENTMESH_DEMO_LATENCY", "0.01")


def test_the_sample_document_splits_into_its_six_sections() -> None:
    sections = text.split_sections(sample_document(), max_sections=8)

    assert len(sections) == 6
    assert sections[0].startswith("# Riverside Community Solar")
    assert "## Overview" in sections[0]
    assert [s.splitlines()[0] for s in sections[1:]] == [
        "## Production",
        "## Finances",
        "## Reliability",
        "## Community",
        "## Next Steps",
    ]


def test_splitting_keeps_every_word_and_respects_max_sections() -> None:
    document = sample_document()

    sections = text.split_sections(document, max_sections=3)

    assert len(sections) == 3
    assert text.words("\n".join(sections)) == text.words(document)


def test_tiny_paragraphs_are_merged_into_their_neighbours() -> None:
    document = "Hi.\n\n" + "A long paragraph with many words in it " * 3 + "\n\nBye."

    sections = text.split_sections(document, max_sections=8)

    assert len(sections) == 1
    assert sections[0].startswith("Hi.")
    assert sections[0].endswith("Bye.")


def test_a_document_of_headings_only_is_one_section() -> None:
    assert text.split_sections("# Title\n\n## Part", max_sections=8) == ["# Title\n## Part"]


def test_keywords_are_frequent_meaningful_words() -> None:
    found = text.keywords("The solar panels and the solar battery. The panels shine. Solar!")

    assert found[:2] == ["solar", "panels"]
    assert "the" not in found


@pytest.mark.parametrize(
    ("sentence", "sign"),
    [
        ("Growth was strong and members were pleased.", 1),
        ("Outages caused losses and delays.", -1),
        ("The array ran without a single outage.", 1),
        ("The roof is grey.", 0),
    ],
)
def test_sentiment_follows_the_lexicon_and_negation(sentence: str, sign: int) -> None:
    score = text.sentiment(sentence)

    assert -1 <= score <= 1
    assert (score > 0) - (score < 0) == sign


def test_sentences_leave_headings_out() -> None:
    assert text.sentences("## Heading\nFirst one. Second one!\n\nThird?") == [
        "First one.",
        "Second one!",
        "Third?",
    ]


def test_latency_scales_with_size_and_can_be_turned_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENTMESH_DEMO_LATENCY", "0.3")
    assert latency_for(0) == pytest.approx(0.15)
    assert latency_for(600) == pytest.approx(0.3)
    assert latency_for(10**6) == pytest.approx(0.9)
    monkeypatch.setenv("AGENTMESH_DEMO_LATENCY", "0")
    assert latency_for(600) == 0
    monkeypatch.setenv("AGENTMESH_DEMO_LATENCY", "soon")
    assert latency_for(600) == pytest.approx(0.3)


async def _run(session: SessionClient, capability: str, payload: dict[str, object]) -> dict:
    aid = await session.assign(capability, payload)
    replies = await session.replies(aid)
    assert [kind_of(m) for m in replies[:2]] == ["accepted", "progress"]
    assert 2 <= sum(kind_of(m) == "progress" for m in replies) <= 3
    return output_of(replies[-1])


async def test_the_demo_agents_brief_the_sample_document_together(
    start_agent: StartAgent, open_session: OpenSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AGENTMESH_AGENT_NAME", "analyst-2")
    async with (
        # Explicit names win over AGENTMESH_AGENT_NAME, which names the second analyst.
        start_agent(Splitter(), name="splitter") as splitter,
        start_agent(Analyst(), name="analyst-1") as analyst_1,
        start_agent(Analyst()) as analyst_2,
        start_agent(Writer(), name="writer") as writer,
        open_session(splitter) as to_splitter,
        open_session(analyst_1) as to_analyst_1,
        open_session(analyst_2) as to_analyst_2,
        open_session(writer) as to_writer,
    ):
        split = await _run(to_splitter, "text.split", {"text": sample_document()})
        analysts = [to_analyst_1, to_analyst_2]
        analyses = [
            await _run(analysts[i % 2], "text.analyze", {"text": section})
            for i, section in enumerate(split["sections"])
        ]
        brief = await _run(to_writer, "text.summarize", {"analyses": analyses, "title": "Solar"})
        published = await _run(to_writer, "text.publish", {"summary": brief["summary"]})
        undo = {"summary": brief["summary"], "output": published}
        removed = await _run(to_writer, "text.unpublish", undo)
        removed_again = await _run(to_writer, "text.unpublish", undo)

    assert isinstance(analyst_2, AgentServer)
    assert analyst_2.name == "analyst-2"
    assert len(split["sections"]) == 6
    reliability = analyses[3]
    assert reliability["sentiment"] < 0 < analyses[0]["sentiment"]
    assert "outages" in reliability["keywords"]
    assert reliability["words"] == len(text.words(split["sections"][3]))
    assert brief["summary"].startswith("Solar\n\n")
    assert brief["words"] == sum(a["words"] for a in analyses)
    assert -1 <= brief["sentiment"] <= 1
    assert brief["keywords"]
    assert set(brief["keywords"]) <= {k for a in analyses for k in a["keywords"]}
    every_sentence = {s for a in analyses for s in a["sentences"]}
    body = brief["summary"].removeprefix("Solar\n\n")
    assert all(s in every_sentence for s in text.sentences(body))
    assert published["url"].startswith(PUBLICATION_PREFIX)
    assert removed == {"removed": True}
    assert removed_again == {"removed": False}


async def test_publishing_the_same_summary_gives_the_same_url() -> None:
    writer = Writer()
    ctx = AssignmentContext.of(Assignment(assignment_id="a", capability="c"), lambda f, m: None)

    first = await writer.publish(PublishIn(summary="x"), ctx)
    second = await writer.publish(PublishIn(summary="x"), ctx)
    other = await writer.publish(PublishIn(summary="y"), ctx)

    assert first == second != other
