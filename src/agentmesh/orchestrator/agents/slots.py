"""Assignment slots: who waits for an agent, who is served first, and how many an agent holds.

An agent never gets more work than its declared concurrency (counted here, by the slots
handed out, not by what the agent reports; across replicas through
:mod:`~agentmesh.orchestrator.agents.limits` when Redis is configured), a step waits for
the pools its capability uses, and, when agents are scarce, higher-priority
steps are served first, in arrival order within a priority.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import heapq
import itertools
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from agentmesh.errors import AgentMeshError, StepFailed
from agentmesh.models import FailureCode
from agentmesh.orchestrator import metrics
from agentmesh.orchestrator.agents.circuits import AgentCircuit
from agentmesh.orchestrator.agents.limits import MAX_RETRY_SECONDS, Grant, Limits
from agentmesh.orchestrator.agents.link import AgentLink
from agentmesh.orchestrator.agents.matching import (
    AgentStats,
    Candidate,
    Requirement,
    choose,
    refusal,
)
from agentmesh.orchestrator.agents.pools import Pools, pool_of
from agentmesh.orchestrator.store import Claim


@dataclass(order=True)
class _Waiter:
    sort_key: tuple[int, int]
    requirement: Requirement = field(compare=False)
    granted: asyncio.Future[AgentLink] = field(compare=False)
    #: Set when the grant is its agent's half-open probe (see :meth:`AgentCircuit.started`).
    probe: int | None = field(default=None, compare=False)


class Slots:
    """Hands out assignment slots on the agents of a directory (the :class:`Registry`).

    ``links``, ``stats`` and ``circuits`` are the directory's own mappings, read live;
    the directory calls :meth:`dispatch` whenever an agent comes, goes or changes state.
    """

    def __init__(
        self,
        links: Mapping[str, AgentLink],
        stats: Mapping[str, AgentStats],
        circuits: Mapping[str, AgentCircuit],
        limits: Limits | None = None,
        pools: Pools | None = None,
    ) -> None:
        self._links = links
        self._stats = stats
        self._circuits = circuits
        self._limits = limits
        self._pools = pools or Pools()
        #: Agents found at their limit through other replicas, until when (monotonic).
        self._full_until: dict[str, float] = {}
        self._waiters: list[_Waiter] = []
        self._order = itertools.count()
        #: Slots held per agent; this, not what the agent reports, bounds its concurrency.
        self._reserved: dict[str, int] = {}
        #: Where matching's next look at the directory starts (see :meth:`dispatch`).
        self._turn = 0

    def usable(self, name: str) -> bool:
        """True when agent ``name`` may be given work now (live, not draining, circuit allows)."""
        link = self._links[name]
        return link.alive and not link.draining and self._circuits[name].allows()

    def candidates(self) -> Iterator[Candidate]:
        """Every agent of the directory as matching sees it, with the slots it holds."""
        now = time.monotonic() if self._full_until else 0.0
        for name in self._links:
            yield self._candidate(name, now)

    def _candidate(self, name: str, now: float) -> Candidate:
        """Agent ``name`` as matching sees it at ``now`` (monotonic; 0 when none is full)."""
        link = self._links[name]
        active = self._reserved.get(name, 0)
        if now and self._full_until.get(name, 0.0) > now:
            active = max(active, link.card.max_concurrency)
        return Candidate(
            card=link.card, active=active, usable=self.usable(name), stats=self._stats[name]
        )

    @asynccontextmanager
    async def slot(
        self,
        requirement: Requirement,
        priority: int = 0,
        on_wait: Callable[[str], None] | None = None,
    ) -> AsyncIterator[AgentLink]:
        """Wait for, then hold, one assignment slot on the best matching agent.

        With shared :class:`Limits`, the slot also holds the agent's concurrency across
        replicas and the pools its capability uses; a step over one of them waits.
        ``on_wait`` is told why the step waits whenever the reason changes (no agent with
        room, a pool at its limit). Raises StepFailed (``invalid_input``, final) when every
        connected agent that could serve the step refuses its payload, now or while it waits.
        """
        told = ""

        def tell(reason: str) -> None:
            nonlocal told
            if on_wait is not None and reason != told:
                told = reason
                on_wait(reason)

        while True:
            link, probe = await self._local(requirement, priority, tell)
            claims = self._claims(link, requirement.capability)
            if self._limits is None or not claims:
                grant = None  # nothing shared to hold: no call at all on the step's way
                break
            freed = self._limits.freed()
            try:
                answer = await self._limits.acquire(claims)
            except BaseException:
                self._release(link.name, probe)
                raise
            if isinstance(answer, Grant):
                grant = answer
                break
            self._release(link.name, probe)
            wait = min(max(answer.retry_after, 0.01), MAX_RETRY_SECONDS)
            pool = pool_of(answer.claim.key)
            if pool is None:  # the agent is at its limit through other replicas
                self._full_until[link.name] = time.monotonic() + wait
                tell(self._no_room(requirement))
            else:
                name, kind = pool
                metrics.POOL_WAITS.labels(name).inc()
                limit = answer.claim.limit
                if kind == "uses":
                    tell(f"pool {name!r} is at its limit of {limit} concurrent uses")
                elif kind == "tokens":
                    tell(f"pool {name!r} used its {limit} tokens per minute")
                else:
                    tell(
                        f"pool {name!r} is at its limit of {limit} requests"
                        f" per {answer.claim.seconds:g}s"
                    )
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await freed.wait()
            self._full_until.clear()
        in_pools = [p for c in grant.held if (p := pool_of(c.key)) is not None] if grant else []
        for name, _ in in_pools:
            metrics.POOL_IN_USE.labels(name).inc()
        try:
            yield link
        finally:
            for name, _ in in_pools:
                metrics.POOL_IN_USE.labels(name).dec()
            if grant is not None and self._limits is not None:
                self._limits.release(grant)
            self._release(link.name, probe)

    async def charge(self, link: AgentLink, capability: str, tokens: int) -> None:
        """Charge ``tokens`` a run of ``capability`` on ``link`` used to its pools' windows."""
        declared = link.card.capability(capability)
        if self._limits is None or declared is None or not declared.resources:
            return
        charges = self._pools.charges(declared.resources, tokens)
        if charges:
            await self._limits.charge(charges)
        for charged in charges:
            if (pool := pool_of(charged.key)) is not None:
                metrics.POOL_TOKENS.labels(pool[0]).inc(charged.weight)

    @staticmethod
    def _no_room(requirement: Requirement) -> str:
        return f"no agent with {requirement.capability!r} has room"

    def _claims(self, link: AgentLink, capability: str) -> list[Claim]:
        """The shared holds a run of ``capability`` on ``link`` needs."""
        if self._limits is None:
            return []
        card = link.card
        claims = []
        if self._limits.shared_agents:
            claims.append(
                Claim(
                    f"agent:{card.name}",
                    card.max_concurrency,
                    self._limits.hold_seconds,
                    redis_only=True,
                )
            )
        declared = card.capability(capability)
        if declared is not None and declared.resources:
            claims += self._pools.claims(declared.resources)
        return claims

    async def _local(
        self, requirement: Requirement, priority: int, tell: Callable[[str], None]
    ) -> tuple[AgentLink, int | None]:
        """Wait for a slot on an agent by this replica's own count; the link and its probe."""
        reason = refusal(self.candidates(), requirement)
        if reason is not None:
            raise StepFailed(reason, code=FailureCode.INVALID_INPUT, retryable=False)
        loop = asyncio.get_running_loop()
        waiter = _Waiter((-priority, next(self._order)), requirement, loop.create_future())
        heapq.heappush(self._waiters, waiter)
        self.dispatch()
        if not waiter.granted.done():
            tell(self._no_room(requirement))
        try:
            link = await waiter.granted
        except asyncio.CancelledError:
            granted = waiter.granted
            if granted.done() and not granted.cancelled() and granted.exception() is None:
                self._release(granted.result().name, waiter.probe)
            raise
        finally:
            if waiter in self._waiters:
                self._waiters.remove(waiter)
                heapq.heapify(self._waiters)
        return link, waiter.probe

    def fail_waiters(self, error: AgentMeshError) -> None:
        """End every wait with ``error`` (the directory is closing)."""
        for waiter in self._waiters:
            if not waiter.granted.done():
                waiter.granted.set_exception(error)

    def _release(self, name: str, probe: int | None) -> None:
        # A probe that ends without a recorded outcome (cancelled, the task's deadline, not
        # the agent's fault) must not keep the circuit half-open and waiting for good.
        circuit = self._circuits.get(name)
        if circuit is not None:
            circuit.abandoned(probe)
        count = self._reserved.get(name, 0) - 1
        if count > 0:
            self._reserved[name] = count
        else:
            self._reserved.pop(name, None)
        self.dispatch()

    def dispatch(self) -> None:
        """Grant free slots to waiters, highest priority first (FIFO within a priority)."""
        if not self._waiters:
            return
        # One snapshot per pass, updated as slots are granted: rebuilding it per waiter made
        # dispatching quadratic in the number of waiting steps. Built lazily: matching looks
        # at a few agents with room (MAX_WEIGHED), and with a thousand connected, building
        # every agent's Candidate for each pass cost more than the step itself (issue 9).
        names = list(self._links)
        now = time.monotonic() if self._full_until else 0.0
        seen: dict[str, Candidate] = {}

        def candidate(name: str) -> Candidate:
            found = seen.get(name)
            if found is None:
                found = seen[name] = self._candidate(name, now)
            return found

        def room() -> bool:
            return any(
                c.usable and c.active < c.card.max_concurrency for c in map(candidate, names)
            )

        def walk() -> Iterator[Candidate]:
            # From where the last look stopped, all the way round: each agent is weighed in
            # turn, not the first few of the directory every time.
            count = len(names)
            first = self._turn % count
            for offset in range(count):
                self._turn = first + offset + 1
                yield candidate(names[(first + offset) % count])

        if not names or not room():
            return
        still_waiting: list[_Waiter] = []
        while self._waiters:
            waiter = heapq.heappop(self._waiters)
            if waiter.granted.done():
                continue
            chosen = choose(walk(), waiter.requirement)
            if chosen is None:
                reason = refusal(map(candidate, names), waiter.requirement)
                if reason is not None:  # e.g. the only agent that came refuses the input
                    waiter.granted.set_exception(
                        StepFailed(reason, code=FailureCode.INVALID_INPUT, retryable=False)
                    )
                else:
                    still_waiting.append(waiter)
                continue
            name = chosen.card.name
            self._reserved[name] = self._reserved.get(name, 0) + 1
            self._stats[name].last_assigned = time.monotonic()
            waiter.probe = self._circuits[name].started()
            waiter.granted.set_result(self._links[name])
            seen[name] = dataclasses.replace(
                chosen, active=self._reserved[name], usable=self.usable(name)
            )
            if not room():
                break
        for waiter in still_waiting:
            heapq.heappush(self._waiters, waiter)
