"""Inputs and outputs of the demo capabilities."""

from __future__ import annotations

from pydantic import BaseModel, Field


class SplitIn(BaseModel):
    """A document to cut into sections."""

    text: str
    max_sections: int = Field(default=8, ge=1, le=100)


class SplitOut(BaseModel):
    """The document's sections, in order."""

    sections: list[str]


class AnalyzeIn(BaseModel):
    """A piece of text to analyse."""

    text: str


class Analysis(BaseModel):
    """What the analyst found in a text."""

    words: int
    keywords: list[str]
    #: From -1 (negative) to 1 (positive).
    sentiment: float
    sentences: list[str]


class SummarizeIn(BaseModel):
    """Analyses of a document's sections, to combine into a brief."""

    analyses: list[Analysis] = Field(min_length=1)
    title: str = ""


class Brief(BaseModel):
    """The summary of a document."""

    summary: str
    keywords: list[str]
    sentiment: float
    words: int


class PublishIn(BaseModel):
    """A summary to publish."""

    summary: str = Field(min_length=1)


class Publication(BaseModel):
    """Where a summary was published."""

    url: str


class UnpublishIn(BaseModel):
    """A compensation: the original publish input plus what it returned."""

    summary: str
    output: Publication


class Unpublished(BaseModel):
    """Whether the publication existed and is gone now."""

    removed: bool
