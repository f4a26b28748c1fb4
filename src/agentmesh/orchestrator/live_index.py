"""This replica's part in the index of live tasks in Redis: what it writes and vouches for.

The rows themselves, and how Redis keeps them, are :mod:`~agentmesh.orchestrator.live_tasks`'s.
Here: the replica running a task writes its row whenever the task changes (the event bus's
snapshot writer hands each batch over) and vouches for it again every third of
``fresh_seconds`` while it runs it; the row of a task that ends is taken out. A replica that
could not write a row (Redis was unreachable from it) answers from the store until it has
written all its rows again. One that saw Redis go, once Redis is back, calls the index
incomplete (Redis may have lost writes it had taken: a restart from an older save, a
failover to a replica that was behind), writes its rows again and takes out again the rows
of the tasks that ended on it lately; the index is then rebuilt from the store by whichever
replica comes first. Each round also takes out rows nobody vouches for of tasks the store
has as ended (their replica died before it could).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Container, Iterable, Sequence

import structlog

from agentmesh.errors import Unavailable
from agentmesh.models import TaskRecord, TaskState
from agentmesh.orchestrator.cache import Cache
from agentmesh.orchestrator.live_tasks import Ended, LiveTasks
from agentmesh.orchestrator.store import Store

log = structlog.get_logger(__name__)

#: How often the renewal loop looks whether Redis is back after an outage.
OUTAGE_CHECK_SECONDS = 0.5
#: Live tasks read from the store at most to rebuild the index (past it, it stays unused).
MAX_REBUILD = 50_000


class LiveIndex:
    """The rows of the live tasks run here: written, vouched for, made up for after outages.

    :meth:`renew_forever` is the replica's background loop (its owner runs and cancels it).
    """

    def __init__(self, cache: Cache, store: Store, *, fresh_seconds: float) -> None:
        self._cache = cache
        self._store = store
        self._every = fresh_seconds / 3
        self._fresh_seconds = fresh_seconds
        self._live = LiveTasks(cache, fresh_seconds=fresh_seconds)
        #: Live tasks run here, as last written: the rows this replica vouches for.
        self._rows: dict[str, TaskRecord] = {}
        #: Tasks that ended here whose rows are yet to be taken out (by id, to their owner).
        self._unlisted: dict[str, str] = {}
        #: Set when a write of rows failed: the index may be missing what this replica did
        #: until every row of its tasks is written again.
        self._rows_lost = False
        #: Redis outages made up for (see :meth:`_after_outage`).
        self._outages = 0
        #: Tasks that ended here lately (id to owner and when), for as long as a row is
        #: vouched for: after an outage their rows are taken out again.
        self._ended_lately: dict[str, tuple[str, float]] = {}
        #: One write of rows at a time, so that Redis gets them in the order they were made.
        self._lock = asyncio.Lock()

    @property
    def usable(self) -> bool:
        """False while this replica knows the index may be wrong (its reads go to the
        store): no Redis, a write of rows failed, or Redis was away and is not made up for."""
        return self._cache.available and not self._untrusted

    @property
    def _untrusted(self) -> bool:
        return self._rows_lost or self._cache.outages != self._outages

    def released(self, task_id: str) -> None:
        """The run of ``task_id`` left this replica: its row is not vouched for from here."""
        self._rows.pop(task_id, None)

    async def write(self, tasks: Iterable[TaskRecord], running_here: Container[str]) -> None:
        """Index the live ``tasks`` (as they are now) and take the ended ones out; of the
        live ones, this replica vouches for those ``running_here`` from now on."""
        live: list[TaskRecord] = []
        for task in tasks:
            if task.state.final:
                self._rows.pop(task.id, None)
                self._unlisted[task.id] = task.owner
                self._ended_lately[task.id] = (task.owner, time.monotonic())
            else:
                live.append(task)
                if task.id in running_here:
                    self._rows[task.id] = task
        self._forget_ended()
        async with self._lock:
            if self._rows_lost:
                live = list({**{t.id: t for t in live}, **self._rows}.values())
            ended = list(self._unlisted.items())
            try:
                await self._live.write(live, ended)
            except Unavailable as exc:
                if not self._rows_lost:
                    log.warning("events.live_rows_lost", error=str(exc))
                self._rows_lost = True
                return
            self._rows_lost = False
            for task_id, _ in ended:
                self._unlisted.pop(task_id, None)

    async def page(
        self, *, owner: str | None, states: Sequence[TaskState], limit: int, offset: int
    ) -> list[TaskRecord] | None:
        """A page from the index (see :meth:`LiveTasks.page`); None when the store must
        answer (the index cannot tell, or this replica does not trust it now)."""
        if not self.usable:
            return None
        try:
            return await self._live.page(owner=owner, states=states, limit=limit, offset=offset)
        except Unavailable:
            return None

    async def renew_forever(self) -> None:
        """Every third of ``fresh_seconds``, and as soon as Redis is back after an outage:
        make up for the outage, write rows that could not be written, vouch for the rows of
        the tasks run here, rebuild the index when it is not complete, and take out rows
        nobody vouches for of tasks that ended out of sight."""
        due = 0.0
        while True:
            if self._untrusted or time.monotonic() >= due:
                due = time.monotonic() + self._every
                try:
                    await self._round()
                except Unavailable as exc:
                    log.debug("events.live_rows_not_renewed", error=str(exc))
                except Exception as exc:  # the store failed: next round tries again
                    log.warning("events.live_rows_not_renewed", error=repr(exc))
            await asyncio.sleep(min(self._every, OUTAGE_CHECK_SECONDS))

    async def _round(self) -> None:
        outages = self._cache.outages
        if outages != self._outages and self._cache.available:
            await self._after_outage()
            self._outages = outages
        if self._rows_lost or self._unlisted:
            await self.write((), ())
        if not self._rows_lost:
            renewal = await self._live.renew(list(self._rows))
            if not renewal.complete:
                await self._rebuild()
            await self._take_out_ended(renewal.stale)

    def _forget_ended(self) -> None:
        """Drop the tasks that ended longer ago than a row is vouched for (oldest first)."""
        horizon = time.monotonic() - self._fresh_seconds
        while self._ended_lately:
            task_id, (_, ended_at) = next(iter(self._ended_lately.items()))
            if ended_at >= horizon:
                return
            del self._ended_lately[task_id]

    async def _after_outage(self) -> None:
        # Redis may have lost what it took before it went: rows written, rows taken out.
        await self._live.distrust()
        self._rows_lost = True
        self._forget_ended()
        for task_id, (owner, _) in self._ended_lately.items():
            self._unlisted.setdefault(task_id, owner)
        log.info("events.live_rows_distrusted", outages=self._cache.outages)

    async def _rebuild(self) -> None:
        # One read, not pages: a task ending between two pages would shift the next one
        # and a live task could be skipped, in an index then called complete.
        live = [s for s in TaskState if not s.final]
        tasks = await self._store.list_tasks(states=live, limit=MAX_REBUILD + 1)
        if len(tasks) > MAX_REBUILD:
            log.warning("events.live_rows_too_many", limit=MAX_REBUILD)
            return
        await self._live.rebuild(tasks)
        # Rows of tasks the read did not find live: created since (the store says live
        # now: they stay), or ended where Redis lost their removal: those go.
        found = {t.id for t in tasks}
        others = [i for i in await self._live.listed() if i not in found]
        await self._take_out_ended(await self._live.owners(others))
        await self._live.complete()
        log.info("events.live_rows_rebuilt", tasks=len(tasks))

    async def _take_out_ended(self, rows: Sequence[Ended]) -> None:
        """Take out the ``rows`` of tasks the store has as ended (or has no more)."""
        ended = []
        for task_id, owner in rows:
            end = await self._store.stream_end(task_id)
            if end is None or end[0]:
                ended.append((task_id, owner))
        if ended:
            async with self._lock:
                await self._live.write((), ended)
