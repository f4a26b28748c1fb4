"""A bounded memory of finished outcomes by idempotency key."""

from __future__ import annotations

from collections import OrderedDict

from agentmesh.models import Outcome


class OutcomeCache:
    """Least-recently-used map of idempotency key to final outcome, holding at most ``size``."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._outcomes: OrderedDict[str, Outcome] = OrderedDict()

    def __len__(self) -> int:
        return len(self._outcomes)

    def get(self, key: str) -> Outcome | None:
        """The outcome remembered for ``key``; a hit makes it the most recently used."""
        outcome = self._outcomes.get(key)
        if outcome is not None:
            self._outcomes.move_to_end(key)
        return outcome

    def put(self, key: str, outcome: Outcome) -> None:
        """Remember ``outcome`` for ``key``, forgetting the least recently used beyond the bound."""
        if self._size <= 0:
            return
        self._outcomes[key] = outcome
        self._outcomes.move_to_end(key)
        while len(self._outcomes) > self._size:
            self._outcomes.popitem(last=False)
