"""Which text fits a query best, by TF-IDF cosine similarity over word stems.

Deliberately simple, so a choice can be explained: every match lists the terms it shares with
the query, and the score is the cosine of the two term-weight vectors (0 to 1).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

_WORD = re.compile(r"[a-z0-9]+")
_STOPWORDS: Final = frozenset({
    "a", "an", "and", "are", "as", "at", "be", "by", "do", "for", "from", "get", "give", "how",
    "i", "in", "into", "is", "it", "its", "me", "my", "of", "on", "or", "our", "please", "so",
    "that", "the", "their", "then", "them", "this", "to", "up", "us", "we", "what", "when",
    "with", "would", "you", "your", "can", "could", "should", "will", "make", "let", "each",
    "every", "all", "any",
})  # fmt: skip
# Longest first; a stem keeps at least three letters.
_SUFFIXES: Final = (
    "izations", "ization", "izing", "ized", "izes", "ize", "yzing", "yzed", "yzes", "yze",
    "ysis", "yses", "ies", "ing", "ed", "es", "s", "y",
)  # fmt: skip


def tokenize(text: str) -> list[str]:
    """Lower-cased word stems of ``text`` without stop words: "Summarizing documents" →
    ``["summar", "document"]``."""
    return [_stem(word) for word in _WORD.findall(text.lower()) if word not in _STOPWORDS]


def _stem(word: str) -> str:
    for suffix in _SUFFIXES:
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            return word[: -len(suffix)]
    return word


@dataclass(frozen=True, slots=True)
class Match:
    """How well one document fits a query."""

    key: str
    #: Cosine similarity, 0 (nothing shared) to 1.
    score: float
    #: The shared terms, the weightiest first.
    terms: tuple[str, ...]


class TfIdfIndex:
    """Documents by key, ranked against queries by TF-IDF cosine similarity.

    Weights are term count times smoothed inverse document frequency, so words that every
    document uses count for little and words that single one out count for much.
    """

    def __init__(self, documents: Mapping[str, str]) -> None:
        counts = {key: Counter(tokenize(text)) for key, text in documents.items()}
        frequency = Counter(term for terms in counts.values() for term in terms)
        total = len(counts)
        self._idf = {
            term: math.log((1 + total) / (1 + seen)) + 1 for term, seen in frequency.items()
        }
        self._vectors = {key: self._weigh(terms) for key, terms in counts.items()}

    def _weigh(self, terms: Counter[str]) -> dict[str, float]:
        weights = {term: n * self._idf[term] for term, n in terms.items() if term in self._idf}
        norm = math.sqrt(sum(w * w for w in weights.values()))
        return {term: w / norm for term, w in weights.items()} if norm else {}

    def rank(self, query: str) -> list[Match]:
        """Every document with its score against ``query``, best first; ties keep key order."""
        wanted = self._weigh(Counter(tokenize(query)))
        matches = []
        for key, vector in self._vectors.items():
            shared = {term: wanted[term] * vector[term] for term in wanted if term in vector}
            terms = tuple(sorted(shared, key=lambda term: -shared[term]))
            matches.append(Match(key=key, score=sum(shared.values()), terms=terms))
        return sorted(matches, key=lambda match: -match.score)
