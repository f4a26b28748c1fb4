"""live_list: one page of live tasks from the Redis index against the same page from the store.

``python -m benchmarks.live_list [--tasks N] [--database-url URL] [--redis-url URL]``

Component level, no processes: ``N`` running tasks (a one-step plan each, a tenth of them
owned by ``bob``) are created in a fresh store (SQLite in a temporary folder unless
``--database-url`` names another) and indexed in Redis under a namespace of the run's own
(removed afterwards), as a rebuild does. Then the first page (50) of ListTasks(states=[RUNNING])
is read 200 times each way, for everyone (an admin) and for bob alone (the policy's owner
filter), and the median and 95th percentile printed. Both answers are checked equal first.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from redis.asyncio import Redis

from agentmesh.models import Plan, StepRecord, StepSpec, TaskRecord, TaskState
from agentmesh.orchestrator.cache import Cache
from agentmesh.orchestrator.live_tasks import LiveTasks
from agentmesh.orchestrator.store import Store

PAGE = 50
ROUNDS = 200
ALICE = "spiffe://agentmesh.test/client/alice"
BOB = "spiffe://agentmesh.test/client/bob"


def _task(number: int, start: datetime) -> TaskRecord:
    spec = StepSpec(id="work", capability="bench.work", input={"n": number})
    at = start + timedelta(milliseconds=number)
    return TaskRecord(
        id=str(uuid.uuid4()),
        owner=BOB if number % 10 == 0 else ALICE,
        state=TaskState.RUNNING,
        input={"n": number},
        plan=Plan(steps=(spec,)),
        steps={"work": StepRecord(spec=spec)},
        created_at=at,
        updated_at=at,
    )


async def _timed(read: Callable[[], Awaitable[object]]) -> tuple[float, float]:
    seconds = []
    for _ in range(ROUNDS):
        started = time.perf_counter()
        await read()
        seconds.append(time.perf_counter() - started)
    cuts = statistics.quantiles(seconds, n=20)
    return statistics.median(seconds) * 1000, cuts[18] * 1000


async def main(tasks: int, database_url: str, redis_url: str) -> None:
    namespace = f"bench-live-{uuid.uuid4().hex[:8]}"
    start = datetime.now(UTC)
    async with Store(database_url) as store, Cache(redis_url, namespace=namespace) as cache:
        try:
            await asyncio.gather(*(store.create_task(_task(n, start)) for n in range(tasks)))
            live = await store.list_tasks(states=[TaskState.RUNNING], limit=tasks + 1)
            index = LiveTasks(cache, fresh_seconds=600)
            await index.rebuild(live)
            for owner in (None, BOB):

                async def from_store(owner: str | None = owner) -> object:
                    return await store.list_tasks(
                        owner=owner, states=[TaskState.RUNNING], limit=PAGE + 1
                    )

                async def from_redis(owner: str | None = owner) -> object:
                    return await index.page(
                        owner=owner, states=[TaskState.RUNNING], limit=PAGE + 1, offset=0
                    )

                assert await from_store() == await from_redis(), "the answers differ"
                who = "everyone" if owner is None else "bob (a tenth)"
                for name, read in (("store", from_store), ("redis", from_redis)):
                    median, p95 = await _timed(read)
                    timing = f"median {median:.2f} ms, p95 {p95:.2f} ms"
                    print(f"{tasks} live, {who:14} {name:5}: {timing}")
        finally:
            async with Redis.from_url(redis_url) as plain:
                names = [n async for n in plain.scan_iter(match=f"{namespace}:*")]
                if names:
                    await plain.delete(*names)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--database-url", default="")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    arguments = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        url = arguments.database_url or f"sqlite+aiosqlite:///{Path(folder) / 'bench.db'}"
        asyncio.run(main(arguments.tasks, url, arguments.redis_url))
