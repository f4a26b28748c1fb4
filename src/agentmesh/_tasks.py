"""Background tasks owned by one object: spawned, tracked, cancelled and awaited together."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

import structlog

from agentmesh.logs import exception_fields

T = TypeVar("T")

_log = structlog.get_logger("agentmesh.tasks")


async def cancel_and_wait(*tasks: asyncio.Task[Any]) -> None:
    """Cancel ``tasks`` and wait until all have finished.

    Their own outcomes (results, errors, cancellation) are not raised here, but a
    cancellation of the caller still propagates out of the wait.
    """
    for task in tasks:
        task.cancel()
    if tasks:
        await asyncio.wait(tasks)


class TaskSet:
    """Owns background tasks so that none is fired and forgotten.

    Finished tasks drop out by themselves; an error nobody else collected is logged as
    ``background.crashed`` with the task's name. :meth:`aclose` cancels whatever still
    runs and waits for it to finish; one of the set's own tasks may call it.
    """

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closed = False

    def __len__(self) -> int:
        return len(self._tasks)

    def spawn(self, coro: Coroutine[Any, Any, T], *, name: str) -> asyncio.Task[T]:
        """Run ``coro`` as a task owned by this set."""
        if self._closed:
            coro.close()
            raise RuntimeError(f"cannot start {name}: the task set is closed")
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._forget)
        return task

    def _forget(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            _log.error("background.crashed", task=task.get_name(), **exception_fields(exc))

    def _others(self) -> list[asyncio.Task[Any]]:
        # A task of the set that closes it must not wait for itself.
        current = asyncio.current_task()
        return [task for task in self._tasks if task is not current]

    async def join(self) -> None:
        """Wait until the tasks running now (and any they start) have finished on their own."""
        while others := self._others():
            await asyncio.wait(others)

    async def aclose(self) -> None:
        """Refuse new tasks, cancel the running ones and wait for them."""
        self._closed = True
        await cancel_and_wait(*self._others())
