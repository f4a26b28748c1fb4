"""Plain-Python text analysis: sections, sentences, keywords and a small sentiment lexicon."""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable

_WORD = re.compile(r"[a-z][a-z'-]*")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[\"'(A-Z0-9])")


def _wordset(words: str) -> frozenset[str]:
    return frozenset(words.split())


STOPWORDS = _wordset(
    """
    a about above across after again against all also am an and any are as at be because been
    before being below between both but by can could did do does doing down during each even
    every few first for from further had has have having he her here hers him his how i if in
    into is it its itself just many may me might more most much must my new next no nor not now
    of off on once one only or other our ours out over own per same shall she should since so
    some still such than that the their theirs them then there these they this those through to
    too two three four five six under until up upon us very via was we well were what when where
    which while who whom why will with within without would yet you your yours
    """
)

POSITIVE = _wordset(
    """
    good great excellent strong growth grew improve improved improvement success successful
    succeeds gain gains benefit benefits efficient reliable record ahead best better positive
    happy pleased praised welcome welcomed clear robust exceeded win wins progress stable savings
    """
)

NEGATIVE = _wordset(
    """
    bad poor weak decline declined loss losses risk risks delay delayed delays problem problems
    fail failed failure costly expensive shortage negative worse worst concern concerns
    complaint complaints complained outage outages damage damaged slow unstable overrun missed
    """
)

_NEGATORS = _wordset("not no never without hardly barely")
#: How many words before a sentiment word a negator still flips it ("without a single outage").
_NEGATION_REACH = 3


def words(text: str) -> list[str]:
    """The lowercased words of ``text``."""
    return _WORD.findall(text.lower())


def _is_heading(line: str) -> bool:
    return line.lstrip().startswith("#")


def sentences(text: str) -> list[str]:
    """The sentences of ``text``, headings left out, each on one line."""
    found: list[str] = []
    for block in re.split(r"\n\s*\n", text):
        prose = " ".join(
            ln.strip() for ln in block.splitlines() if ln.strip() and not _is_heading(ln)
        )
        found.extend(s.strip() for s in _SENTENCE_END.split(prose) if s.strip())
    return found


def keywords(text: str, limit: int = 5) -> list[str]:
    """The most frequent meaningful words of ``text``; ties go to the earlier one."""
    counts = Counter(w for w in words(text) if len(w) > 2 and w not in STOPWORDS)
    # Counter.most_common keeps insertion (first occurrence) order among equal counts.
    return [word for word, _ in counts.most_common(limit)]


def sentiment(text: str) -> float:
    """From -1 to 1: the balance of positive and negative words; a negator just before flips one."""
    score = hits = 0
    tokens = words(text)
    for i, word in enumerate(tokens):
        polarity = (word in POSITIVE) - (word in NEGATIVE)
        if not polarity:
            continue
        if _NEGATORS.intersection(tokens[max(0, i - _NEGATION_REACH) : i]):
            polarity = -polarity
        score += polarity
        hits += 1
    return round(score / hits, 3) if hits else 0.0


def split_sections(text: str, max_sections: int, min_words: int = 12) -> list[str]:
    """Cut ``text`` at blank lines and headings; merge tiny parts; keep at most ``max_sections``.

    A heading stays with the text under it. Sections shorter than ``min_words``
    join the next one; then the smallest neighbours merge until few enough remain.
    """
    pieces: list[list[str]] = []
    for block in re.split(r"\n\s*\n", text.strip()):
        current: list[str] = []
        for line in (ln.rstrip() for ln in block.splitlines() if ln.strip()):
            if _is_heading(line) and current and not all(map(_is_heading, current)):
                pieces.append(current)
                current = []
            current.append(line)
        if current:
            pieces.append(current)
    sections: list[str] = []
    headings: list[str] = []
    for piece in pieces:
        if all(map(_is_heading, piece)):
            headings.extend(piece)  # a heading alone belongs to what follows it
            continue
        sections.append("\n".join(headings + piece))
        headings = []
    if headings:
        sections.append("\n".join(headings))
    sections = _merge_tiny(sections, min_words)
    while len(sections) > max_sections:
        i = min(
            range(len(sections) - 1),
            key=lambda j: len(words(sections[j])) + len(words(sections[j + 1])),
        )
        sections[i : i + 2] = [sections[i] + "\n\n" + sections[i + 1]]
    return sections


def _merge_tiny(sections: list[str], min_words: int) -> list[str]:
    merged: list[str] = []
    carry = ""
    for section in sections:
        section = f"{carry}\n\n{section}" if carry else section
        carry = ""
        if len(words(section)) < min_words:
            carry = section
        else:
            merged.append(section)
    if carry:
        if merged:
            merged[-1] = f"{merged[-1]}\n\n{carry}"
        else:
            merged.append(carry)
    return merged


def rank_keywords(keyword_lists: Iterable[list[str]], limit: int = 8) -> list[str]:
    """Combine ranked keyword lists: a word scores more the higher and more often it ranks."""
    scores: Counter[str] = Counter()
    for ranked in keyword_lists:
        for position, word in enumerate(ranked):
            scores[word] += len(ranked) - position
    return [word for word, _ in scores.most_common(limit)]


def sentence_score(sentence: str, weights: dict[str, int]) -> float:
    """How much of the weighted vocabulary ``sentence`` carries, for its length."""
    tokens = words(sentence)
    if not tokens:
        return 0.0
    return sum(weights.get(w, 0) for w in set(tokens)) / math.sqrt(len(tokens))
