"""A task's events as Server-Sent Events, resumable with ``Last-Event-ID``.

Each event is ``id: <sequence>``, ``event: <kind>`` (``task_state``, ``step_state``,
``step_progress``) and ``data: <the event as JSON>``; a browser's ``EventSource`` that
reconnects sends the last id it saw and the stream goes on after it. The stream ends after
the task's final state; one that breaks off ends with an ``error`` event (``code``, ``field``,
``reason``). A comment line goes out every ``keepalive`` seconds without events,
so that proxies keep the connection open and a vanished client is noticed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator

from agentmesh.errors import AgentMeshError, Unauthenticated
from agentmesh.models import TaskEvent
from agentmesh.security import Peer
from agentmesh.security.guard import Guard


def frame(event: TaskEvent) -> bytes:
    """One event in the text/event-stream format."""
    data = json.dumps(event.model_dump(mode="json"), separators=(",", ":"))
    return f"id: {event.sequence}\nevent: {event.kind.value}\ndata: {data}\n\n".encode()


def _error_frame(exc: AgentMeshError) -> bytes:
    data = json.dumps({"code": exc.code.name, "field": exc.field or "", "reason": exc.message})
    return f"event: error\ndata: {data}\n\n".encode()


async def stream(
    events: AsyncIterator[TaskEvent],
    *,
    guard: Guard,
    peer: Peer,
    method: str,
    keepalive: float = 15.0,
) -> AsyncIterator[bytes]:
    """``events`` as SSE frames, tracked by the guard so that revoking the caller ends it
    (with an ``error`` event saying why)."""
    pending: asyncio.Future[TaskEvent] | None = None
    try:
        with guard.stream(peer, method) as ticket:
            try:
                while True:
                    if pending is None:
                        pending = asyncio.ensure_future(anext(events))
                    done, _ = await asyncio.wait({pending}, timeout=keepalive)
                    if not done:
                        yield b": keep-alive\n\n"
                        continue
                    finished, pending = pending, None
                    try:
                        event = finished.result()
                    except StopAsyncIteration:
                        return
                    except AgentMeshError as exc:
                        yield _error_frame(exc)  # the answer has begun: end it saying why
                        return
                    yield frame(event)
            except asyncio.CancelledError:
                if not ticket.revoked or ticket.task is None:
                    raise
                # Cancelled by the guard, not by the client: say why before ending.
                ticket.task.uncancel()
                yield _error_frame(Unauthenticated(ticket.revoked))
    finally:
        if pending is not None:
            pending.cancel()
            with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                await pending
        await events.aclose()  # type: ignore[attr-defined]
