"""The process-local layer of the cache: JSON text with per-entry expiry."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(slots=True)
class _Entry:
    raw: str
    expires_at: float


class MemoryStore:
    """Keys to JSON text, each with its own deadline; expired entries are never returned.

    Values are kept as text rather than live objects so every read hands out a fresh copy
    and memory behaves exactly like Redis would (tuples come back as lists, and so on).
    """

    def __init__(
        self, *, sweep_interval: float = 1.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._entries: dict[str, _Entry] = {}
        self._clock = clock
        self._sweep_interval = sweep_interval
        self._next_sweep = clock() + sweep_interval

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str) -> str | None:
        """The live text under ``key``, or None."""
        found = self.get_with_ttl(key)
        return None if found is None else found[0]

    def get_with_ttl(self, key: str) -> tuple[str, float] | None:
        """The live text under ``key`` and the seconds it has left, or None."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        left = entry.expires_at - self._clock()
        if left <= 0:
            del self._entries[key]
            return None
        return entry.raw, left

    def put(self, key: str, raw: str, ttl: float) -> None:
        """Store ``raw`` under ``key`` for ``ttl`` seconds, replacing what was there."""
        now = self._clock()
        self._entries[key] = _Entry(raw, now + ttl)
        if now >= self._next_sweep:
            self._sweep(now)

    def discard(self, key: str) -> None:
        """Forget ``key`` if present."""
        self._entries.pop(key, None)

    def keys(self, prefix: str) -> list[str]:
        """Live keys starting with ``prefix``, sorted."""
        now = self._clock()
        return sorted(
            k for k, e in self._entries.items() if k.startswith(prefix) and e.expires_at > now
        )

    def _sweep(self, now: float) -> None:
        # Reads drop expired entries one by one; keys nobody reads again would otherwise
        # pile up, so writes purge the whole table now and then (amortised O(1) per write).
        self._entries = {k: e for k, e in self._entries.items() if e.expires_at > now}
        self._next_sweep = now + self._sweep_interval
