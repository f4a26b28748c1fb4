"""Polling with a deadline, instead of sleeping a fixed time and hoping."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


async def eventually(
    probe: Callable[[], Awaitable[T]],
    check: Callable[[T], bool],
    *,
    within: float = 15.0,
    interval: float = 0.1,
) -> T:
    """Call ``probe`` until ``check`` accepts its value; fail the test after ``within`` seconds."""
    value = await probe()
    try:
        async with asyncio.timeout(within):
            while not check(value):
                await asyncio.sleep(interval)
                value = await probe()
    except TimeoutError:
        raise AssertionError(f"condition not met within {within}s; last value: {value!r}") from None
    return value
