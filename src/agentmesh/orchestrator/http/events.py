"""Server-Sent Events: a task's events (resumable with ``Last-Event-ID``), and the task list's
changes.

Each event is ``id: <sequence>``, ``event: <kind>`` (``task_state``, ``step_state``,
``step_progress``) and ``data: <the event as JSON>``; a browser's ``EventSource`` that
reconnects sends the last id it saw and the stream goes on after it. The stream ends after
the task's final state; one that breaks off ends with an ``error`` event (``code``, ``field``,
``reason``). A comment line goes out every ``keepalive`` seconds without events,
so that proxies keep the connection open and a vanished client is noticed.

The task list's stream (``GET /v1/tasks/changes``) starts with ``event: relist`` (from now
on every change is in this stream: list the tasks now) and then sends ``event: task`` with
the task as ``GET /v1/tasks`` lists it, whenever one the caller may see changes; another
``relist`` says that changes were lost (too many at once). It has no ids: a client that
reconnects gets a ``relist`` first, which is how it catches up.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from typing import TypeVar

from agentmesh.errors import AgentMeshError, Unauthenticated
from agentmesh.models import TaskEvent, TaskRecord
from agentmesh.orchestrator.http.models import TaskView
from agentmesh.security import Peer
from agentmesh.security.guard import Guard


def frame(event: TaskEvent) -> bytes:
    """One event in the text/event-stream format."""
    data = json.dumps(event.model_dump(mode="json"), separators=(",", ":"))
    return f"id: {event.sequence}\nevent: {event.kind.value}\ndata: {data}\n\n".encode()


_RELIST = b"event: relist\ndata: {}\n\n"

T = TypeVar("T")


def task_frame(task: TaskRecord | None) -> bytes:
    """A task of the list as it is now (``event: task``), or None as ``event: relist``."""
    if task is None:
        return _RELIST
    data = TaskView.of(task, omit_outputs=True).model_dump_json()
    return f"event: task\ndata: {data}\n\n".encode()


def _error_frame(exc: AgentMeshError) -> bytes:
    data = json.dumps({"code": exc.code.name, "field": exc.field or "", "reason": exc.message})
    return f"event: error\ndata: {data}\n\n".encode()


async def stream(
    events: AsyncIterator[T],
    render: Callable[[T], bytes],
    *,
    guard: Guard,
    peer: Peer,
    method: str,
    keepalive: float = 15.0,
) -> AsyncIterator[bytes]:
    """``events`` as SSE frames (``render`` makes one of each), tracked by the guard so that
    revoking the caller ends it (with an ``error`` event saying why)."""
    pending: asyncio.Future[T] | None = None
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
                    yield render(event)
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
