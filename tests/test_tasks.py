"""Background tasks have an owner: a crash is logged with the task's name, never swallowed."""

from __future__ import annotations

import asyncio
from typing import Any

from structlog.testing import capture_logs

from agentmesh._tasks import TaskSet


async def _crash() -> None:
    raise RuntimeError("the background work broke")


def _crashes(logs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [entry for entry in logs if entry["event"] == "background.crashed"]


async def test_a_crashed_task_is_logged_with_its_name_and_error() -> None:
    tasks = TaskSet()
    with capture_logs() as logs:
        task = tasks.spawn(_crash(), name="worker-7")
        await asyncio.wait([task])
        await asyncio.sleep(0)  # done-callbacks run on the next loop iteration
        await tasks.aclose()
    (crash,) = _crashes(logs)
    assert crash["task"] == "worker-7"
    assert crash["log_level"] == "error"
    assert crash["error"] == "RuntimeError: the background work broke"
    # A plain traceback (never the locals of the frames; see agentmesh.logs).
    assert crash["exception"].startswith("Traceback (most recent call last)")
    assert "exc_info" not in crash
    assert len(tasks) == 0


async def test_a_cancelled_task_is_not_a_crash() -> None:
    tasks = TaskSet()
    with capture_logs() as logs:
        tasks.spawn(asyncio.sleep(3600), name="sleeper")
        await tasks.aclose()
    assert _crashes(logs) == []


async def test_a_task_of_the_set_may_close_it_without_waiting_for_itself() -> None:
    tasks = TaskSet()
    other = tasks.spawn(asyncio.sleep(3600), name="other")
    closer = tasks.spawn(tasks.aclose(), name="closer")
    async with asyncio.timeout(10):
        await closer
    assert other.cancelled()


async def test_join_waits_for_the_tasks_to_finish_on_their_own() -> None:
    tasks = TaskSet()
    gate = asyncio.Event()

    async def waits() -> str:
        await gate.wait()
        return "done"

    task = tasks.spawn(waits(), name="waiter")
    joined = asyncio.create_task(tasks.join())
    for _ in range(3):
        await asyncio.sleep(0)
    assert not joined.done()
    gate.set()
    async with asyncio.timeout(10):
        await joined
    assert task.result() == "done"
    await tasks.aclose()
