"""Assignment slots: who is served first when agents are scarce, and how many run at once.

Against an in-process Registry with in-process agents (see this folder's conftest): the
waiter queue is part of the Registry, not a structure of its own.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import AsyncIterator

import pytest

from agentmesh.orchestrator.agents import matching
from agentmesh.orchestrator.agents.matching import Requirement
from agentmesh.orchestrator.agents.registry import Registry
from tests.orchestrator.agents.conftest import ServeAgent
from tests.support.waiting import eventually

ECHO = Requirement("test.echo")
#: Generous bound on waiting for a slot to be asked for; nothing legitimate comes close.
PATIENCE = 10.0


class Slots:
    """Asks the registry for slots from concurrent tasks, recording who got one and when."""

    def __init__(self, registry: Registry) -> None:
        self._registry = registry
        #: Labels in the order their slots were granted.
        self.granted: list[str] = []
        #: Labels that had to wait in line.
        self.waited: set[str] = set()
        #: The agent each label's slot is on.
        self.agent_of: dict[str, str] = {}
        self.holding: collections.Counter[str] = collections.Counter()
        self.peak: collections.Counter[str] = collections.Counter()
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self._release: dict[str, asyncio.Event] = {}

    async def take(self, label: str, priority: int = 0) -> None:
        """Ask for a slot as ``label``; returns once it holds one or waits in line."""
        asked = asyncio.Event()
        self._release[label] = asyncio.Event()
        self.tasks[label] = asyncio.create_task(self._hold(label, priority, asked))
        async with asyncio.timeout(PATIENCE):
            await asked.wait()

    async def _hold(self, label: str, priority: int, asked: asyncio.Event) -> None:
        def waiting(reason: str) -> None:
            self.waited.add(label)
            asked.set()

        async with self._registry.slot(ECHO, priority, on_wait=waiting) as link:
            asked.set()
            self.granted.append(label)
            self.agent_of[label] = link.name
            self.holding[link.name] += 1
            self.peak[link.name] = max(self.peak[link.name], self.holding[link.name])
            try:
                await self._release[label].wait()
            finally:
                self.holding[link.name] -= 1

    def release(self, label: str) -> None:
        """Let ``label`` give its slot back (once it has one)."""
        self._release[label].set()

    async def granted_count(self, n: int) -> list[str]:
        """The grant order once ``n`` slots have been granted."""

        async def order() -> list[str]:
            return list(self.granted)

        return await eventually(order, lambda granted: len(granted) >= n)

    async def close(self) -> None:
        for task in self.tasks.values():
            task.cancel()
        await asyncio.gather(*self.tasks.values(), return_exceptions=True)


@pytest.fixture
async def slots(registry: Registry) -> AsyncIterator[Slots]:
    """Slot takers on ``registry``; any still waiting or holding are cancelled afterwards."""
    takers = Slots(registry)
    try:
        yield takers
    finally:
        await takers.close()


async def test_a_higher_priority_waiter_is_served_first_whenever_it_arrived(
    serve_agent: ServeAgent, slots: Slots
) -> None:
    async with serve_agent("echo-1", 1):
        await slots.take("holder")
        await slots.take("low", priority=-1)
        await slots.take("normal", priority=0)
        await slots.take("high", priority=5)
        assert slots.waited == {"low", "normal", "high"}
        for label, expected in [("holder", 2), ("high", 3), ("normal", 4)]:
            slots.release(label)
            await slots.granted_count(expected)
        assert slots.granted == ["holder", "high", "normal", "low"]


async def test_waiters_of_equal_priority_are_served_in_the_order_they_came(
    serve_agent: ServeAgent, slots: Slots
) -> None:
    async with serve_agent("echo-1", 1):
        await slots.take("holder", priority=3)
        for label in ("first", "second", "third", "fourth"):
            await slots.take(label, priority=3)
        for label, expected in [("holder", 2), ("first", 3), ("second", 4), ("third", 5)]:
            slots.release(label)
            await slots.granted_count(expected)
        assert slots.granted == ["holder", "first", "second", "third", "fourth"]


async def test_no_agent_is_given_more_slots_than_its_declared_concurrency(
    serve_agent: ServeAgent, slots: Slots
) -> None:
    labels = [f"step-{i}" for i in range(7)]
    async with serve_agent("echo-1", 1), serve_agent("echo-2", 2):
        for label in labels:
            await slots.take(label)
        granted = await slots.granted_count(3)
        assert len(slots.waited) == len(labels) - 3
        # Free one slot at a time: each is handed on, never doubled up.
        for label in labels:
            slots.release(label)
            granted = await slots.granted_count(min(len(granted) + 1, len(labels)))
            assert sum(slots.holding.values()) <= 3
        assert sorted(granted) == sorted(labels)
        assert slots.peak == {"echo-1": 1, "echo-2": 2}


async def test_a_cancelled_waiter_gives_its_turn_to_the_next_and_holds_no_slot(
    serve_agent: ServeAgent, slots: Slots
) -> None:
    async with serve_agent("echo-1", 1):
        await slots.take("holder")
        await slots.take("cancelled", priority=5)
        await slots.take("next", priority=0)
        slots.tasks["cancelled"].cancel()
        with pytest.raises(asyncio.CancelledError):
            await slots.tasks["cancelled"]
        slots.release("holder")
        assert await slots.granted_count(2) == ["holder", "next"]
        slots.release("next")
        await slots.tasks["next"]
        # Every slot is free again: the cancelled waiter left no reservation behind.
        await slots.take("later")
        assert "later" not in slots.waited
        assert "cancelled" not in slots.granted


async def test_each_look_for_an_agent_starts_where_the_last_one_stopped(
    serve_agent: ServeAgent, slots: Slots, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Matching weighs only the first few agents with room it reads (MAX_WEIGHED); were each
    # look to start at the directory's first agent, the rest would never get work.
    monkeypatch.setattr(matching, "MAX_WEIGHED", 1)
    labels = [f"step-{i}" for i in range(6)]
    async with serve_agent("echo-1", 3), serve_agent("echo-2", 3), serve_agent("analyst-1", 3):
        for label in labels:
            await slots.take(label)
        await slots.granted_count(len(labels))
        assert [slots.agent_of[label] for label in labels] == ["echo-1", "echo-2", "analyst-1"] * 2
