"""Holds on shared limits in SQL: the database half of the cross-replica limit primitive.

A limit is a key (``agent:echo-1``, ``pool:llm:openai/gpt-4o:uses``) that at most ``limit``
holders may hold at once. A hold is a row that runs out at its ``expires_at`` unless renewed,
so the holds of a replica that died free themselves. A rate is the same thing with holds
that are never released: each use holds the key for one window.

Acquiring is all or nothing over every key of a step (no step holds one pool while it waits
for another) and fenced: on PostgreSQL by a transaction-scoped advisory lock per key (taken
in key order, so two acquirers never deadlock), on SQLite by the database's single writer
(the expired-hold DELETE comes first and takes the write lock before anything is counted).
The Redis half is :class:`agentmesh.orchestrator.agents.limits.RedisHolds`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, func, select, text, update

from agentmesh.orchestrator.store.connection import Connection, utc
from agentmesh.orchestrator.store.tables import HoldRow


@dataclass(frozen=True, slots=True)
class Claim:
    """A hold wanted on one limit: at most ``limit`` holders of ``key`` at once.

    ``seconds`` is how long the hold lasts unless renewed; a ``released=False`` claim (a
    rate) is never released or renewed: it holds its key for one window of ``seconds``.
    A key is full when the ``weight`` of its live holds adds up to ``limit``; a claim of
    weight 0 only asks that the key is not full and takes nothing (a token window, whose
    tokens are charged after the run: :meth:`Holds.charge_hold`).
    """

    key: str
    limit: int
    seconds: float
    released: bool = True
    #: Only kept in Redis (where it costs no SQL transaction per step): left out otherwise.
    redis_only: bool = False
    #: What the hold counts for against ``limit`` (0: a check, nothing held).
    weight: int = 1


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why an acquisition was refused: ``claim`` is full, for about ``retry_after`` seconds."""

    claim: Claim
    retry_after: float


def _lock_id(key: str) -> int:
    """A stable signed 64-bit advisory lock number for ``key``."""
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big", signed=True)


class Holds(Connection):
    """Acquiring, renewing, releasing and counting holds on shared limits."""

    async def acquire_holds(self, claims: Sequence[Claim], holder: str) -> Refusal | None:
        """Hold every claim for ``holder``, or none of them; the first full one if refused."""
        keys = sorted({c.key for c in claims})
        if not keys:
            return None
        now = datetime.now(UTC)
        async with self._transaction() as session:
            if not self.is_sqlite:
                for key in keys:
                    await session.execute(
                        text("SELECT pg_advisory_xact_lock(:id)"), {"id": _lock_id(key)}
                    )
            await session.execute(
                delete(HoldRow).where(HoldRow.key.in_(keys), HoldRow.expires_at <= now)
            )
            rows = await session.execute(
                select(HoldRow.key, func.sum(HoldRow.weight), func.min(HoldRow.expires_at))
                .where(HoldRow.key.in_(keys))
                .group_by(HoldRow.key)
            )
            held = {key: (int(used), utc(earliest)) for key, used, earliest in rows}
            for claim in claims:
                count, earliest = held.get(claim.key, (0, None))
                if count >= claim.limit:
                    left = (earliest - now).total_seconds() if earliest else claim.seconds
                    return Refusal(claim, max(0.0, left))
            session.add_all(
                HoldRow(
                    key=c.key,
                    holder=holder,
                    expires_at=now + timedelta(seconds=c.seconds),
                    weight=c.weight,
                )
                for c in claims
                if c.weight > 0
            )
        return None

    async def charge_hold(self, claim: Claim, holder: str) -> None:
        """Record ``claim`` (its weight, for its ``seconds``) whether or not its key is full.

        What a run used is already spent: it counts against the runs that start after it.
        """
        expires_at = datetime.now(UTC) + timedelta(seconds=claim.seconds)
        async with self._transaction() as session:
            session.add(
                HoldRow(key=claim.key, holder=holder, expires_at=expires_at, weight=claim.weight)
            )

    async def renew_holds(self, holds: Iterable[tuple[str, str]], seconds: float) -> None:
        """Extend the ``(key, holder)`` holds to ``seconds`` from now (lost ones stay lost)."""
        pairs = list(holds)
        if not pairs:
            return
        expires_at = datetime.now(UTC) + timedelta(seconds=seconds)
        async with self._transaction() as session:
            for holder in {h for _, h in pairs}:
                keys = [k for k, h in pairs if h == holder]
                await session.execute(
                    update(HoldRow)
                    .where(HoldRow.holder == holder, HoldRow.key.in_(keys))
                    .values(expires_at=expires_at)
                )

    async def release_holds(self, keys: Iterable[str], holder: str) -> None:
        """Give up ``holder``'s holds on ``keys``."""
        wanted = list(keys)
        if not wanted:
            return
        async with self._transaction() as session:
            await session.execute(
                delete(HoldRow).where(HoldRow.holder == holder, HoldRow.key.in_(wanted))
            )

    async def hold_counts(self, keys: Iterable[str]) -> dict[str, int]:
        """Live holds per key (keys without any are left out)."""
        wanted = list(keys)
        if not wanted:
            return {}
        async with self._read() as session:
            rows = await session.execute(
                select(HoldRow.key, func.count())
                .where(HoldRow.key.in_(wanted), HoldRow.expires_at > datetime.now(UTC))
                .group_by(HoldRow.key)
            )
            return {key: int(count) for key, count in rows}
