"""The live (not final) tasks in Redis, indexed so that ListTasks of live states need no SQL.

These keys in the cache's namespace, changed together by Lua scripts (so always consistent
with each other):

- ``live-tasks:order``, a sorted set of task ids scored by minus their creation time in
  microseconds: ascending order is the store's (newest first; ties by id, as Redis orders
  equal scores by member), and ``live-tasks:owner:<uri>``, the same for one owner's tasks;
- ``live-tasks:rows``, a hash of id to ``state<TAB>owner<TAB>version<TAB>task JSON`` (the
  task without its steps, as the store lists it; the version is its ``updated_at`` in
  microseconds): a page is filtered by state in Redis without decoding JSON;
- ``live-tasks:fresh``, a sorted set of ids scored by the Redis time (ms) until which the
  row is vouched for. The replica running a task renews it; a row nobody renews (its
  replica died, or could not reach Redis to write what changed) goes stale, and while any
  row is stale the index answers nothing;
- ``live-tasks:ended``, ids of tasks that ended lately (a tombstone for as long as a row is
  vouched for): a late write of the live task, or a rebuild that read it before it ended,
  cannot bring it back;

and ``live-tasks:complete``, written once the index was rebuilt from the store. Rows are
written only by replicas that are up and can reach Redis, so the index alone cannot know
of a task it never heard of: a Redis that lost its data (a restart without persistence, a
failover to an empty replica) loses this marker too, and the index answers nothing until a
replica has read every live task from the store again (:meth:`LiveTasks.rebuild`, then
:meth:`LiveTasks.complete`). A Redis that lost only some writes (a restart from an older
save, a failover to a replica that was behind) keeps the marker: the replicas that saw it
go drop it themselves (:meth:`LiveTasks.distrust`, see
:mod:`~agentmesh.orchestrator.live_index`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from agentmesh.models import TaskRecord, TaskState
from agentmesh.orchestrator.cache import Cache

_ORDER = "live-tasks:order"
_ROWS = "live-tasks:rows"
_FRESH = "live-tasks:fresh"
_ENDED = "live-tasks:ended"
_COMPLETE = "live-tasks:complete"
_KEYS = (_ORDER, _ROWS, _FRESH, _ENDED, _COMPLETE)
#: One more order per owner (``live-tasks:owner:<uri>``): a caller who sees only their own
#: tasks pages through theirs alone.
_OWNER_ORDER = "live-tasks:owner:"

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
#: Rows a rebuild sends to Redis per script call (a call blocks Redis while it runs).
_REBUILD_PART = 500
#: Stale ids a renewal reports at most (enough to repair a few each round).
MAX_STALE = 100

_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

# KEYS: the five, then each row's owner order, then each ended task's.
# ARGV: ms, number of rows, then (id, score, row) per row, then the ids of ended tasks.
_WRITE = (
    _NOW
    + """
local ms = tonumber(ARGV[1])
local rows = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', now)
for i = 0, rows - 1 do
  local id = ARGV[3 + 3 * i]
  if not redis.call('ZSCORE', KEYS[4], id) then
    redis.call('ZADD', KEYS[1], ARGV[4 + 3 * i], id)
    redis.call('ZADD', KEYS[6 + i], ARGV[4 + 3 * i], id)
    redis.call('HSET', KEYS[2], id, ARGV[5 + 3 * i])
    redis.call('ZADD', KEYS[3], now + ms, id)
  end
end
for i = 3 + 3 * rows, #ARGV do
  local id = ARGV[i]
  redis.call('ZREM', KEYS[1], id)
  redis.call('ZREM', KEYS[6 + rows + i - (3 + 3 * rows)], id)
  redis.call('HDEL', KEYS[2], id)
  redis.call('ZREM', KEYS[3], id)
  redis.call('ZADD', KEYS[4], now + ms, id)
end
return 0
"""
)

# ARGV: ms, max stale, then the ids to vouch for.
# Returns {complete, then (id, owner) per stale row}.
_RENEW = (
    _NOW
    + """
local ms = tonumber(ARGV[1])
for i = 3, #ARGV do
  redis.call('ZADD', KEYS[3], 'XX', now + ms, ARGV[i])
end
local found = {redis.call('EXISTS', KEYS[5])}
local stale = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now, 'LIMIT', 0, tonumber(ARGV[2]))
for _, id in ipairs(stale) do
  local row = redis.call('HGET', KEYS[2], id) or ''
  local tab1 = string.find(row, '\\t', 1, true)
  local tab2 = tab1 and string.find(row, '\\t', tab1 + 1, true)
  table.insert(found, id)
  table.insert(found, tab2 and string.sub(row, tab1 + 1, tab2 - 1) or '')
end
return found
"""
)

# KEYS: the five, then each row's owner order. ARGV: ms, then (id, score, row) per row:
# rows the index lacks (or has in an older version), read from the store.
_REBUILD = (
    _NOW
    + """
local function version(row)
  local tab1 = string.find(row, '\\t', 1, true)
  local tab2 = string.find(row, '\\t', tab1 + 1, true)
  local tab3 = string.find(row, '\\t', tab2 + 1, true)
  return tonumber(string.sub(row, tab2 + 1, tab3 - 1)) or 0
end
local ms = tonumber(ARGV[1])
for i = 0, (#ARGV - 1) / 3 - 1 do
  local id = ARGV[2 + 3 * i]
  local row = ARGV[4 + 3 * i]
  local old = redis.call('HGET', KEYS[2], id)
  if old then
    -- Written before Redis lost an update of it (a failover)? The store's is newer then.
    if version(row) > version(old) then redis.call('HSET', KEYS[2], id, row) end
  elseif not redis.call('ZSCORE', KEYS[4], id) then
    redis.call('ZADD', KEYS[1], ARGV[3 + 3 * i], id)
    redis.call('ZADD', KEYS[6 + i], ARGV[3 + 3 * i], id)
    redis.call('HSET', KEYS[2], id, row)
    redis.call('ZADD', KEYS[3], now + ms, id)
  end
end
return 0
"""
)

# KEYS: the five, then the order to walk (everyone's, or the owner's). ARGV: offset, limit,
# then the states wanted. Returns {0} (not complete), {1} (a row is stale) or
# {2, task JSON...}.
_PAGE = (
    _NOW
    + """
if redis.call('EXISTS', KEYS[5]) == 0 then return {0} end
if #redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now, 'LIMIT', 0, 1) > 0 then return {1} end
local offset, limit = tonumber(ARGV[1]), tonumber(ARGV[2])
local wanted = {}
for i = 3, #ARGV do wanted[ARGV[i]] = true end
local page, skipped, start = {2}, 0, 0
while true do
  local ids = redis.call('ZRANGE', KEYS[6], start, start + 199)
  if #ids == 0 then return page end
  start = start + #ids
  for _, id in ipairs(ids) do
    local row = redis.call('HGET', KEYS[2], id)
    if not row then return {0} end  -- not written by us: trust none of it
    local tab = string.find(row, '\\t', 1, true)
    if wanted[string.sub(row, 1, tab - 1)] then
      if skipped < offset then
        skipped = skipped + 1
      else
        local tab2 = string.find(row, '\\t', tab + 1, true)
        table.insert(page, string.sub(row, string.find(row, '\\t', tab2 + 1, true) + 1))
        if #page > limit then return page end
      end
    end
  end
end
"""
)


_DISTRUST = """
redis.call('DEL', KEYS[5])
return 0
"""

_MARK_COMPLETE = """
redis.call('SET', KEYS[5], '1')
return 0
"""

# ARGV: ids. Returns the owner of each ('' when the index has no row of it).
_OWNERS = """
local owners = {}
for i, id in ipairs(ARGV) do
  local row = redis.call('HGET', KEYS[2], id) or ''
  local tab1 = string.find(row, '\\t', 1, true)
  local tab2 = tab1 and string.find(row, '\\t', tab1 + 1, true)
  owners[i] = tab2 and string.sub(row, tab1 + 1, tab2 - 1) or ''
end
return owners
"""

_IDS = """
return redis.call('HKEYS', KEYS[2])
"""


def _ms(seconds: float) -> int:
    return max(1, math.ceil(seconds * 1000))


def _score(task: TaskRecord) -> str:
    # Exact integer microseconds (a float timestamp would round), negated: newest first.
    return str(-_micros(task.created_at))


def _owner_order(owner: str) -> str:
    return f"{_OWNER_ORDER}{owner}"


def _micros(at: datetime) -> int:
    return (at - _EPOCH) // timedelta(microseconds=1)


def _row(task: TaskRecord) -> str:
    listed = task.model_copy(update={"steps": {}})
    version = _micros(task.updated_at)
    return f"{task.state.value}\t{task.owner}\t{version}\t{listed.model_dump_json()}"


#: A task the index is to forget: its id and its owner (whose order lists it too).
Ended = tuple[str, str]


@dataclass(frozen=True, slots=True)
class Renewal:
    """What a renewal learnt: whether the index is complete, and rows nobody vouches for."""

    complete: bool
    stale: tuple[Ended, ...]


class LiveTasks:
    """The index of live tasks in Redis (see the module): written, renewed, rebuilt, paged.

    Every call raises :class:`~agentmesh.errors.Unavailable` while Redis cannot run it;
    whoever calls decides what holds instead (for a page: the store answers).
    ``fresh_seconds`` is how long a write vouches for a row.
    """

    def __init__(self, cache: Cache, *, fresh_seconds: float) -> None:
        self._cache = cache
        self._ms = _ms(fresh_seconds)

    async def write(self, live: Sequence[TaskRecord], ended: Sequence[Ended]) -> None:
        """Put ``live`` tasks in the index (as they are now) and take ``ended`` ones out."""
        if not live and not ended:
            return
        args: list[str | int] = [self._ms, len(live)]
        for task in live:
            args += [task.id, _score(task), _row(task)]
        args += [task_id for task_id, _ in ended]
        owners = [*(_owner_order(t.owner) for t in live), *(_owner_order(o) for _, o in ended)]
        await self._cache.script(_WRITE, [*_KEYS, *owners], args)

    async def renew(self, task_ids: Sequence[str]) -> Renewal:
        """Vouch again for the rows of ``task_ids`` (whose tasks run here)."""
        found = await self._cache.script(_RENEW, _KEYS, [self._ms, MAX_STALE, *task_ids])
        texts = [_text(v) for v in found[1:]]
        stale = tuple(zip(texts[0::2], texts[1::2], strict=True))
        return Renewal(complete=bool(int(found[0])), stale=stale)

    async def rebuild(self, live: Sequence[TaskRecord]) -> None:
        """Add the ``live`` tasks read from the store that the index lacks. Rows written
        meanwhile by the replicas running the tasks are newer than the store read and stay;
        tasks that ended meanwhile stay out; a row older than the store's (an update Redis
        lost) is replaced. The index is not called complete here (see :meth:`complete`)."""
        for start in range(0, len(live), _REBUILD_PART):
            part = live[start : start + _REBUILD_PART]
            args: list[str | int] = [self._ms]
            for task in part:
                args += [task.id, _score(task), _row(task)]
            owners = [_owner_order(t.owner) for t in part]
            await self._cache.script(_REBUILD, [*_KEYS, *owners], args)

    async def listed(self) -> list[str]:
        """The ids of the tasks the index has a row of."""
        return [_text(i) for i in await self._cache.script(_IDS, _KEYS, [])]

    async def owners(self, task_ids: Sequence[str]) -> list[Ended]:
        """``task_ids`` with the owners their rows name (to take them out)."""
        found = await self._cache.script(_OWNERS, _KEYS, list(task_ids))
        return list(zip(task_ids, (_text(o) for o in found), strict=True))

    async def complete(self) -> None:
        """Call the index complete: every live task has a row (a rebuild made sure)."""
        await self._cache.script(_MARK_COMPLETE, _KEYS, [])

    async def distrust(self) -> None:
        """Call the index incomplete (Redis may have lost writes): it answers nothing until
        rebuilt."""
        await self._cache.script(_DISTRUST, _KEYS, [])

    async def page(
        self, *, owner: str | None, states: Sequence[TaskState], limit: int, offset: int
    ) -> list[TaskRecord] | None:
        """Up to ``limit`` live tasks in ``states`` (of ``owner``, unless None) after the
        first ``offset`` of them, in the store's order; None when the index cannot tell
        (incomplete, or a row nobody vouches for)."""
        order = _ORDER if owner is None else _owner_order(owner)
        args: list[str | int] = [offset, limit, *(s.value for s in states)]
        found = await self._cache.script(_PAGE, [*_KEYS, order], args)
        if int(found[0]) != 2:
            return None
        return [TaskRecord.model_validate_json(_text(row)) for row in found[1:]]


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
