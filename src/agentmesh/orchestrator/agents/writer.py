"""The orchestrator's writes on one agent's Session stream, coalesced into batches.

grpc.aio allows one write at a time on a stream, and each write costs the same whatever it
carries. So one writer owns the stream: messages sent while a write is under way, or in the
same event-loop turn, go out together in one ``OrchestratorMessage.batch`` when the agent's
card says it reads batches (``AgentCard.reads_batches``). An agent whose card does not gets
every message alone, as before batches existed. When idle, a message is written at once: nothing
waits for company beyond the loop turn it was sent in.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from agentmesh._proto.agentmesh.v1 import agent_pb2
from agentmesh.wire import batches

Write = Callable[[agent_pb2.OrchestratorMessage], Awaitable[None]]
#: Whether the agent reads batches now.
Allowed = Callable[[], bool]
#: Told of each batch written, with how many messages it carried.
OnBatch = Callable[[int], None]


@dataclass(slots=True)
class _Queued:
    message: agent_pb2.OrchestratorMessage
    #: Done once the message is written (or failed with the write's error).
    written: asyncio.Future[None]


class SessionWriter:
    """Writes one Session's messages in the order they were sent, batching when allowed.

    :meth:`run` is the writer (the link runs it as a task it owns); :meth:`send` queues a
    message and waits until it is written; :meth:`close` fails what is still queued.
    """

    def __init__(
        self, write: Write, *, batches: Allowed, max_bytes: int, on_batch: OnBatch
    ) -> None:
        self._batches = batches
        self._write = write
        self._max_bytes = max_bytes
        self._on_batch = on_batch
        self._queue: deque[_Queued] = deque()
        #: Taken from the queue, being written now: failed too if the writer is stopped.
        self._writing: list[_Queued] = []
        self._wake = asyncio.Event()
        self._closed: str | None = None

    async def send(self, message: agent_pb2.OrchestratorMessage) -> None:
        """Write ``message`` after every message sent before it; return once it is written.

        Raises what the write raised, or ``ConnectionError`` once the writer is closed. A
        caller cancelled before its message was taken withdraws the message.
        """
        if self._closed is not None:
            raise ConnectionError(self._closed)
        written = asyncio.get_running_loop().create_future()
        self._queue.append(_Queued(message, written))
        self._wake.set()
        await written

    async def run(self) -> None:
        """Write what is sent until cancelled; whatever is left then fails as closed."""
        try:
            while True:
                await self._wake.wait()
                if len(self._queue) == 1 and self._batches():
                    # One loop turn for company: what other tasks send in this very turn (a
                    # fan-out's assignments) goes in the same batch. No wait beyond that.
                    await asyncio.sleep(0)
                self._wake.clear()
                await self._write_queued()
        finally:
            self.close("session closed")

    async def _write_queued(self) -> None:
        # Withdrawn messages (their senders were cancelled while queued) are not sent.
        taken = [queued for queued in self._queue if not queued.written.done()]
        self._queue.clear()
        if not self._batches():
            for queued in taken:
                if not queued.written.done():  # withdrawn while those before it were written
                    await self._write_run([queued])
            return
        for run in batches.chunks(taken, self._max_bytes, lambda queued: queued.message.ByteSize()):
            await self._write_run(run)

    async def _write_run(self, run: list[_Queued]) -> None:
        # Kept while written: a writer stopped mid-write fails these too (see close).
        self._writing = run
        try:
            await self._write(batches.orchestrator_message([queued.message for queued in run]))
        except Exception as exc:
            # Not swallowed: each sender gets the write's error, as if it had written alone.
            self._writing = []
            for queued in run:
                if not queued.written.done():
                    queued.written.set_exception(exc)
            return
        self._writing = []
        if len(run) > 1:
            self._on_batch(len(run))
        for queued in run:
            if not queued.written.done():
                queued.written.set_result(None)

    def close(self, reason: str) -> None:
        """Refuse new messages and fail every one not yet written with ``ConnectionError``."""
        if self._closed is None:
            self._closed = reason
        for queued in (*self._writing, *self._queue):
            if not queued.written.done():
                queued.written.set_exception(ConnectionError(self._closed))
        self._writing = []
        self._queue.clear()
