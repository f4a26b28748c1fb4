"""Leases: which orchestrator replica runs which task, and cancellations any replica may ask for."""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import or_, select, update

from agentmesh.models import TaskState
from agentmesh.orchestrator.store.connection import Connection, rowcount
from agentmesh.orchestrator.store.tables import TaskRow


class LeaseLost(Exception):
    """Another replica owns the task now; this one must stop writing to it."""


@dataclass(frozen=True, slots=True)
class Lease:
    """This replica's claim on the tasks it runs: owner name and how long a claim lasts."""

    owner: str
    seconds: float

    def expires_at(self) -> datetime:
        """When a claim taken or renewed now runs out."""
        return datetime.now(UTC) + timedelta(seconds=self.seconds)


class Leases(Connection):
    """Claiming, renewing and cancelling tasks across replicas."""

    async def claim_tasks(
        self, lease: Lease, limit: int = 100, skip: Collection[str] = ()
    ) -> list[str]:
        """Take over unfinished tasks that are unowned, ours, or whose lease expired.

        ``skip``: tasks the caller runs already (never worth claiming again).
        """
        now = datetime.now(UTC)
        final = [s.value for s in TaskState if s.final]
        async with self._read() as session:
            candidates = list(
                await session.scalars(
                    select(TaskRow.id)
                    .where(
                        TaskRow.state.not_in(final),
                        TaskRow.id.not_in(list(skip)),
                        or_(
                            TaskRow.lease_owner.is_(None),
                            TaskRow.lease_owner == lease.owner,
                            TaskRow.lease_expires_at < now,
                        ),
                    )
                    .order_by(TaskRow.created_at)
                    .limit(limit)
                )
            )
        claimed = []
        for task_id in candidates:
            # The condition is checked again by the UPDATE itself: of two replicas
            # racing for one task, exactly one sees its row change.
            async with self._transaction() as session:
                result = await session.execute(
                    update(TaskRow)
                    .where(
                        TaskRow.id == task_id,
                        TaskRow.state.not_in(final),
                        or_(
                            TaskRow.lease_owner.is_(None),
                            TaskRow.lease_owner == lease.owner,
                            TaskRow.lease_expires_at < now,
                        ),
                    )
                    .values(lease_owner=lease.owner, lease_expires_at=lease.expires_at())
                )
                if rowcount(result) == 1:
                    claimed.append(task_id)
        return claimed

    async def renew_leases(self, lease: Lease, task_ids: Iterable[str]) -> set[str]:
        """Extend our leases on ``task_ids``; returns those we still own."""
        ids = list(task_ids)
        if not ids:
            return set()
        async with self._transaction() as session:
            await session.execute(
                update(TaskRow)
                .where(TaskRow.id.in_(ids), TaskRow.lease_owner == lease.owner)
                .values(lease_expires_at=lease.expires_at())
            )
            owned = await session.scalars(
                select(TaskRow.id).where(TaskRow.id.in_(ids), TaskRow.lease_owner == lease.owner)
            )
            return set(owned)

    async def request_cancel(self, task_id: str, reason: str) -> None:
        """Record that the task should be cancelled, for whichever replica owns it."""
        async with self._transaction() as session:
            await session.execute(
                update(TaskRow).where(TaskRow.id == task_id).values(cancel_reason=reason)
            )

    async def cancel_requests(self, task_ids: Iterable[str]) -> dict[str, str]:
        """Cancellation reasons recorded for any of ``task_ids``."""
        ids = list(task_ids)
        if not ids:
            return {}
        async with self._read() as session:
            rows = await session.execute(
                select(TaskRow.id, TaskRow.cancel_reason).where(
                    TaskRow.id.in_(ids), TaskRow.cancel_reason.is_not(None)
                )
            )
            return {task_id: reason or "cancelled" for task_id, reason in rows}
