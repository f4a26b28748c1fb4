"""Group commit: one writer for the whole orchestrator, one transaction per batch of writes.

Every task's journal and every submission hands its write to the :class:`GroupWriter` and
waits for it to be durable. The writer takes whatever has queued up (at most ``bound``
writes), writes it in one transaction and answers each caller. There is no timer: at low
load a write goes out at once, alone; under load the writes that arrive while one
transaction is in flight go out together in the next, so the number of transactions
follows what the database can do rather than how many tasks run.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from agentmesh._tasks import TaskSet

W = TypeVar("W")

#: The most writes one transaction takes: bounds the time a transaction holds the database.
DEFAULT_BOUND = 256


@dataclass(eq=False, slots=True)
class Pending(Generic[W]):
    """One write waiting for its transaction, and the future its caller awaits."""

    write: W
    done: asyncio.Future[object] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


#: Writes a batch in one transaction: one outcome per write, in order (an exception for a
#: write that failed on its own, e.g. a lost lease), or raises when the transaction failed.
WriteBatch = Callable[[Sequence[W]], Awaitable[Sequence[object]]]


class GroupWriter(Generic[W]):
    """Writes what callers :meth:`submit`, many writes per transaction; see the module."""

    def __init__(self, write_batch: WriteBatch[W], *, bound: int = DEFAULT_BOUND) -> None:
        self._write_batch = write_batch
        self._bound = bound
        self._queue: deque[Pending[W]] = deque()
        self._wake = asyncio.Event()
        self._closing = False
        self._tasks = TaskSet()
        self._writer: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start the writer (inside the event loop that will use it)."""
        self._writer = self._tasks.spawn(self._run(), name="store-group-writer")

    async def aclose(self) -> None:
        """Write what is queued, then stop the writer."""
        self._closing = True
        self._wake.set()
        if self._writer is not None:
            await asyncio.wait([self._writer])  # it returns once the queue is empty
        await self._tasks.aclose()
        _fail(self._queue, RuntimeError("the store is closed"))  # the writer died early
        self._queue.clear()

    async def submit(self, write: W) -> object:
        """Queue ``write``; its outcome once its transaction has committed (or its error).

        A caller cancelled while its write still waits takes the write back; once the
        writer has taken it, it is written whether or not anyone still waits.
        """
        if self._writer is None or self._writer.done():
            raise RuntimeError("the store is closed")
        pending = Pending(write)
        self._queue.append(pending)
        self._wake.set()
        return await pending.done

    async def _run(self) -> None:
        while True:
            if not self._queue:
                if self._closing:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            batch: list[Pending[W]] = []
            while self._queue and len(batch) < self._bound:
                pending = self._queue.popleft()
                if not pending.done.done():  # not given up by a cancelled caller
                    batch.append(pending)
            if batch:
                await self._write(batch)

    async def _write(self, batch: list[Pending[W]]) -> None:
        try:
            outcomes = await self._write_batch([p.write for p in batch])
        except asyncio.CancelledError:
            _fail(batch, None)
            raise
        except Exception as exc:
            if len(batch) == 1:
                _settle(batch[0], exc)
                return
            # One bad write must not fail the others: each goes again in a transaction of
            # its own, and only the writes that fail alone report an error.
            for index, pending in enumerate(batch):
                try:
                    (outcome,) = await self._write_batch([pending.write])
                except asyncio.CancelledError:
                    _fail(batch[index:], None)
                    raise
                except Exception as alone:
                    outcome = alone
                _settle(pending, outcome)
            return
        for pending, outcome in zip(batch, outcomes, strict=True):
            _settle(pending, outcome)


def _fail(pendings: Iterable[Pending[W]], error: BaseException | None) -> None:
    """Answer every caller still waiting with ``error`` (None: as cancelled)."""
    for pending in pendings:
        if pending.done.done():
            continue
        if error is None:
            pending.done.cancel()
        else:
            pending.done.set_exception(error)


def _settle(pending: Pending[W], outcome: object) -> None:
    if pending.done.done():
        return
    if isinstance(outcome, BaseException):
        pending.done.set_exception(outcome)
    else:
        pending.done.set_result(outcome)
