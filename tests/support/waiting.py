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
    """Call ``probe`` until ``check`` accepts its value; fail the test after ``within`` seconds.

    The first call counts too: a probe that never answers fails the test here, naming the
    wait, rather than at the suite's timeout with nothing to tell which wait it was.
    """
    value: T | None = None
    answered = False
    try:
        async with asyncio.timeout(within):
            value = await probe()
            answered = True
            while not check(value):
                await asyncio.sleep(interval)
                value = await probe()
    except TimeoutError:
        last = repr(value) if answered else "the probe never answered"
        raise AssertionError(f"condition not met within {within}s; last value: {last}") from None
    return value
