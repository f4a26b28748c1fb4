"""Live agents: their cards, Session links, load and health.

Registration is persisted in SQL (so ``ListAgents`` history survives) and
cached for other replicas; liveness is what this process's links say. Slots on
the agents are handed out by :class:`~agentmesh.orchestrator.agents.slots.Slots`.
Operators' overrides (drain, weight) are kept in SQL too, and every replica reads
them back every ``overrides_refresh_seconds``: the store, not Redis, because an
override must hold while Redis is down and after every replica restarts.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime

import grpc
import structlog

from agentmesh._tasks import TaskSet
from agentmesh.config import Settings
from agentmesh.errors import AgentUnavailable, NotFound, PermissionDenied, describe
from agentmesh.models import AgentCard, AgentOverride, AgentStatus
from agentmesh.orchestrator import metrics
from agentmesh.orchestrator.agents.circuits import AgentCircuit
from agentmesh.orchestrator.agents.claims import Claims, MayRedefine
from agentmesh.orchestrator.agents.learning import LearnerKnobs, matcher
from agentmesh.orchestrator.agents.limits import Limits
from agentmesh.orchestrator.agents.link import AgentLink
from agentmesh.orchestrator.agents.matching import (
    AgentStats,
    Matcher,
    Requirement,
    eligible,
    rejection,
)
from agentmesh.orchestrator.agents.offers import Offer, Offers
from agentmesh.orchestrator.agents.pools import Pools
from agentmesh.orchestrator.agents.slots import Slots
from agentmesh.orchestrator.cache import Cache
from agentmesh.orchestrator.store import Store
from agentmesh.security import Identity

log = structlog.get_logger(__name__)


class Registry:
    """The agents this orchestrator has Sessions with: their cards, links, stats and circuits."""

    def __init__(
        self,
        store: Store,
        cache: Cache,
        settings: Settings,
        credentials: grpc.ChannelCredentials | Callable[[], grpc.ChannelCredentials],
        *,
        identify: Callable[[str], Awaitable[Identity]] | None = None,
        limits: Limits | None = None,
        pools: Pools | None = None,
    ) -> None:
        """``identify`` tells who serves an endpoint (see :mod:`agentmesh.security.peer_check`);
        with it, an agent may register only an endpoint that serves its own certificate.
        ``limits`` holds agents' concurrency and ``pools`` across replicas (see
        :mod:`agentmesh.orchestrator.agents.limits`)."""
        self._identify = identify
        self._store = store
        self._cache = cache
        self._settings = settings
        self._credentials = credentials
        self._links: dict[str, AgentLink] = {}
        #: Deregistered links still waiting for the outcomes of their work in flight.
        self._retiring: set[AgentLink] = set()
        #: The published links' capabilities, by name and contract (registrations' checks).
        self._claims = Claims()
        self._registered_at: dict[str, datetime] = {}
        self._stats: dict[str, AgentStats] = {}
        self._circuits: dict[str, AgentCircuit] = {}
        #: Operators' overrides by agent name, as last read from (or written to) the store.
        self._overrides: dict[str, AgentOverride] = {}
        #: Capability names offered since start-up (their schemas live on the agents' cards).
        self._known: set[str] = set()
        #: Notified whenever an agent registers (waking :meth:`wait_for_agent`).
        self._registered = asyncio.Condition()
        #: The ticker and the drops of lost agents.
        self._tasks = TaskSet()
        self._ticker: asyncio.Task[None] | None = None
        self._limits = limits
        self._slots = Slots(self._links, self._stats, self._circuits, limits, pools)
        #: The scorer every step's requirement carries (``AGENTMESH_MATCHING_STRATEGY``).
        self.matcher: Matcher = matcher(
            settings.matching_strategy,
            LearnerKnobs(
                prior_successes=settings.learn_prior_successes,
                prior_failures=settings.learn_prior_failures,
                latency_spread=settings.learn_latency_spread,
                half_life_seconds=settings.learn_half_life_seconds,
                explore=settings.learn_explore,
                load_penalty=settings.learn_load_penalty,
            ),
        )

    def _new_stats(self) -> AgentStats:
        return AgentStats(half_life=self._settings.learn_half_life_seconds)

    async def __aenter__(self) -> Registry:
        for card, _, _ in await self._store.agents():
            self._learn(card)
        self._apply_overrides(await self._store.overrides())
        self._ticker = self._tasks.spawn(self._tick(), name="registry-tick")
        return self

    async def _tick(self) -> None:
        # Open circuits become probe-able by the clock alone; nothing else would wake waiters.
        refresh_every = self._settings.cache_ttl_seconds / 3
        overrides_every = self._settings.overrides_refresh_seconds
        refreshed = overrides_read = time.monotonic()
        while True:
            await asyncio.sleep(0.25)
            self._slots.dispatch()
            if time.monotonic() - overrides_read >= overrides_every:
                overrides_read = time.monotonic()
                await self._refresh_overrides()
            if time.monotonic() - refreshed >= refresh_every:
                # Cached cards expire unless renewed: a dead replica's agents fade from Redis.
                refreshed = time.monotonic()
                for link in list(self._links.values()):
                    await self._cache_card(link)

    def _card_key(self, name: str) -> str:
        # One entry per replica an agent is connected to: one replica losing the agent
        # leaves the others' entries (and so the mesh's listing) alone.
        return f"agents:{name}@{self._settings.replica}"

    async def _cache_card(self, link: AgentLink) -> None:
        registered = self._registered_at.get(link.name) or datetime.now(UTC)
        await self._cache.set(
            self._card_key(link.name),
            {
                "card": link.card.model_dump(mode="json"),
                "identity": link.identity,
                "registered_at": registered.isoformat(),
                "draining": link.draining,
            },
        )

    async def __aexit__(self, *_: object) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
        links = [*self._links.values(), *self._retiring]
        self._links.clear()
        self._claims.clear()
        await asyncio.gather(*(link.close("orchestrator stopping") for link in links))
        # Drops in flight finish: a lost agent's row must leave the store.
        await self._tasks.join()
        await self._tasks.aclose()
        self._slots.fail_waiters(AgentUnavailable("orchestrator stopping"))

    # -- operators' overrides ---------------------------------------------------------------

    async def _refresh_overrides(self) -> None:
        try:
            overrides = await self._store.overrides()
        except Exception as exc:  # a store blip keeps the overrides we have; the next read
            log.warning("agent.overrides_unread", error=describe(exc))
            return
        self._apply_overrides(overrides)

    def _apply_overrides(self, overrides: dict[str, AgentOverride]) -> None:
        changed = False
        for name, override in overrides.items():
            if self._overrides.get(name) != override:
                changed = True
                if name in self._overrides or override.drained or override.weight != 1.0:
                    log.info(
                        "agent.override_applied",
                        agent=name,
                        drained=override.drained,
                        weight=override.weight,
                        by=override.updated_by,
                    )
            self._overrides[name] = override
            stats = self._stats.get(name) or self._stats.setdefault(name, self._new_stats())
            stats.drained = override.drained
            stats.weight = override.weight
        if changed:
            self._slots.dispatch()  # a resumed (or heavier) agent may take a waiting step now

    async def override(
        self, name: str, by: str, *, drained: bool | None = None, weight: float | None = None
    ) -> AgentOverride:
        """Drain or resume agent ``name`` and/or set its weight, for every replica: kept in the
        store, applied here at once and by the others at their next read. NotFound for an
        agent no replica has registered."""
        if name not in self._links and name not in {
            c.name for c, _, _ in await self._store.agents()
        }:
            raise NotFound(f"no agent named {name!r}", field="name")
        current = self._overrides.get(name) or AgentOverride(name)
        updated = AgentOverride(
            name=name,
            drained=current.drained if drained is None else drained,
            weight=current.weight if weight is None else weight,
            updated_by=by,
            updated_at=datetime.now(UTC),
        )
        await self._store.save_override(updated)
        self._apply_overrides({name: updated})
        return updated

    # -- registration -----------------------------------------------------------------------

    def _learn(self, card: AgentCard) -> None:
        self._known.update(capability.name for capability in card.capabilities)

    async def register(
        self, card: AgentCard, identity: str, *, may_redefine: MayRedefine | None = None
    ) -> None:
        """Open (or keep) a Session with the agent and make it available for matching.

        With ``may_redefine``, a capability another identity's connected agent offers with
        other schemas is refused unless ``may_redefine(name)`` (see
        :mod:`agentmesh.orchestrator.agents.claims`).
        """
        current = self._links.get(card.name)
        if current is not None and current.alive and current.card.endpoint == card.endpoint:
            if current.identity != identity:
                raise PermissionDenied(
                    f"agent {card.name!r} is registered by another identity", field="card.name"
                )
            if may_redefine is not None:
                self._claims.check(card, identity, may_redefine)
            # A re-registration (e.g. after a network blip) with the link still healthy.
            current.card = card
            self._claims.add(current)  # under its new card
            self._learn(card)
            self._slots.dispatch()
            return
        if self._identify is not None:
            served = await self._identify(card.endpoint)
            if served.uri != identity:
                raise PermissionDenied(
                    f"{card.endpoint} serves the certificate of {served}, not of {identity}",
                    field="card.endpoint",
                )
        if may_redefine is not None:
            # Before dialing the agent; checked again when it becomes visible (see below).
            self._claims.check(card, identity, may_redefine)
        link = AgentLink(
            card,
            identity,
            # A callable reads the certificate files afresh: rotation needs no restart.
            self._credentials() if callable(self._credentials) else self._credentials,
            ping_interval=self._settings.ping_interval_seconds,
            timeout=self._settings.agent_timeout_seconds,
            max_message_bytes=self._settings.max_message_bytes,
            max_output_bytes=self._settings.max_output_bytes,
            on_lost=self._lost,
        )
        try:
            now = await self._open(link, current, card, identity, may_redefine)
        except BaseException:
            # Refused, failed, or cancelled (the registrant's deadline passed: it will ask
            # again): a link never published must not live on, its Session open and pinged.
            # Under a registration storm such orphans were four Sessions per agent (a channel
            # and two tasks each) at a thousand agents (issue 9).
            await asyncio.shield(link.close("registration abandoned"))
            raise
        replaced = self._links.get(card.name)
        if replaced is not None:  # the claims mirror the links
            self._claims.remove(replaced)
        self._links[card.name] = link
        self._claims.add(link)
        async with self._registered:
            self._registered.notify_all()
        self._learn(card)
        self._registered_at[card.name] = now
        if card.name not in self._stats:
            self._stats[card.name] = self._new_stats()
        self._circuits.setdefault(
            card.name,
            AgentCircuit(
                card.name,
                fail_max=self._settings.circuit_fail_max,
                reset_seconds=self._settings.circuit_reset_seconds,
            ),
        )
        metrics.AGENTS.set(len(self._links))
        log.info("agent.registered", agent=card.name, endpoint=card.endpoint, identity=identity)
        self._slots.dispatch()

    async def _open(
        self,
        link: AgentLink,
        current: AgentLink | None,
        card: AgentCard,
        identity: str,
        may_redefine: MayRedefine | None,
    ) -> datetime:
        """Open ``link``'s Session and make the agent durable (returns when); the caller
        publishes the link, or closes it when this fails."""
        wait = self._settings.agent_timeout_seconds + 2
        try:
            await link.open(wait=wait)
        except TimeoutError:
            raise AgentUnavailable(
                f"cannot open a Session to {card.endpoint}: no answer on the Session stream"
                f" within {wait:g}s",
                field="card.endpoint",
            ) from None
        except grpc.aio.AioRpcError as exc:
            raise AgentUnavailable(
                f"cannot open a Session to {card.endpoint}: {describe(exc)}", field="card.endpoint"
            ) from None
        if current is not None:
            await current.close("replaced by a new registration")
        now = datetime.now(UTC)
        # Durable (and cached for other replicas) before anyone can see or use the agent.
        await self._store.save_agent(card, identity, now)
        await self._cache_card(link)
        refused: PermissionDenied | None = None
        if may_redefine is not None:
            # Another agent may have registered its own schemas while we were dialing.
            try:
                self._claims.check(card, identity, may_redefine)
            except PermissionDenied as exc:
                refused = exc
        if refused is not None or not link.alive:  # it never becomes visible
            await self._store.delete_agent(card.name)
            await self._cache.delete(self._card_key(card.name))
            if refused is not None:
                await link.close("registration refused")
                raise refused
            raise AgentUnavailable(
                f"the Session to {card.endpoint} ended during registration", field="card.endpoint"
            )
        return now

    async def deregister(self, name: str, identity: str) -> None:
        """Remove an agent at its own request: it gets no new work, and its work in flight
        fails over unless it reports within ``agent_timeout_seconds``."""
        link = self._links.get(name)
        if link is None:
            raise NotFound(f"no agent named {name!r}", field="name")
        if link.identity != identity:
            raise PermissionDenied(f"only {link.identity} may deregister {name!r}", field="name")
        await self._drop(link, "deregistered")
        # An agent's last results travel on its Session, its goodbye on another connection,
        # which may be read first: closing now would lose them and run their steps again.
        # The link gets no new work; it closes once what it runs has reported, the agent
        # ends the Session, or a silence as long as the one that loses an agent has passed.
        self._retiring.add(link)
        self._tasks.spawn(self._retire(link), name=f"retire-{name}")

    async def _retire(self, link: AgentLink) -> None:
        try:
            await link.settle(self._settings.agent_timeout_seconds)
        finally:
            self._retiring.discard(link)
            await link.close("deregistered")

    async def close_identity(self, identity: str, reason: str) -> int:
        """End the Sessions of the agents registered by ``identity`` (e.g. it was revoked);
        their work in flight fails over. Returns how many were closed."""
        links = [link for link in self._links.values() if link.identity == identity]
        for link in links:
            await self._drop(link, reason)
            await link.close(reason)
        return len(links)

    def _lost(self, link: AgentLink, reason: str) -> None:
        if self._links.get(link.name) is link:  # not after a replacement, nor once stopping
            self._tasks.spawn(self._drop(link, reason), name=f"drop-{link.name}")

    async def _drop(self, link: AgentLink, reason: str) -> None:
        if self._links.get(link.name) is not link:
            return
        del self._links[link.name]
        self._claims.remove(link)
        metrics.AGENTS.set(len(self._links))
        log.warning("agent.removed", agent=link.name, reason=reason)
        await self._store.delete_agent(link.name)
        await self._cache.delete(self._card_key(link.name))

    # -- lookup -----------------------------------------------------------------------------

    def statuses(self, capability: str = "") -> list[AgentStatus]:
        """Every live agent, optionally only those offering ``capability``."""
        # Links keep monotonic times (immune to clock jumps); shown as wall-clock here.
        offset = time.time() - time.monotonic()
        result = []
        for name, link in sorted(self._links.items()):
            if capability and link.card.capability(capability) is None:
                continue
            stats = self._stats[name]
            result.append(
                AgentStatus(
                    card=link.card,
                    identity=link.identity,
                    connected=link.alive,
                    draining=link.draining,
                    active=link.active,
                    circuit=self._circuits[name].state,
                    registered_at=self._registered_at[name],
                    last_seen=datetime.fromtimestamp(offset + link.last_seen, UTC),
                    latency=stats.latency,
                    successes=stats.successes,
                    failures=stats.failures,
                    drained=stats.drained,
                    weight=stats.weight,
                )
            )
        return result

    async def mesh_statuses(self, capability: str = "") -> list[AgentStatus]:
        """Every live agent of the mesh: this replica's, and with Redis those connected to
        other replicas (from the cards they keep cached), each with its mesh-wide load."""
        local = self.statuses(capability)
        if not self._cache.available:
            return local
        found = {s.card.name: s for s in local}
        cached = await self._cache.get_many(await self._cache.keys("agents:"))
        now = datetime.now(UTC)
        for value in cached.values():
            remote = _cached_status(value, now)
            if remote is None or remote.card.name in found:
                continue
            if capability and remote.card.capability(capability) is None:
                continue
            found[remote.card.name] = remote
        if self._limits is not None and self._limits.shared_agents:
            loads = await self._limits.counts([f"agent:{name}" for name in found])
            for name, status in found.items():
                shared = loads.get(f"agent:{name}", 0)
                if shared > status.active:
                    found[name] = dataclasses.replace(status, active=shared)
        return [found[name] for name in sorted(found)]

    def capabilities(self) -> Offers:
        """What each connected agent offers, with its own schemas (for plan validation).

        An agent's schemas go with it when it leaves. The names of capabilities offered since
        start-up stay known: steps for them wait for a capable agent to come back instead of
        the plan being refused.
        """
        return Offers(
            (
                Offer(name, capability)
                for name, link in self._links.items()
                if link.alive
                for capability in link.card.capabilities
            ),
            known=self._known,
        )

    async def wait_for_agent(self, name: str, within: float) -> bool:
        """Wait up to ``within`` seconds for agent ``name`` to be live; True if it is."""
        if name in self._links:
            return True
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(within), self._registered:
                await self._registered.wait_for(lambda: name in self._links)
        return name in self._links

    def could_serve(self, requirement: Requirement) -> bool:
        """True when some live agent could take this step once it has room."""
        return any(
            eligible(c, requirement) and c.usable and rejection(c.card, requirement) is None
            for c in self._slots.candidates()
        )

    def record(
        self, agent: str, seconds: float, ok: bool, *, agent_fault: bool, capability: str = ""
    ) -> str:
        """Account an attempt's outcome (of ``capability``) for matching; ``agent_fault``
        counts against its circuit.

        Returns the agent's circuit state afterwards (closed, open or half_open).
        """
        stats = self._stats.get(agent)
        if stats is not None:
            stats.record(seconds, ok, capability)
        circuit = self._circuits.get(agent)
        if circuit is not None and (ok or agent_fault):
            circuit.record(ok)
        self._slots.dispatch()
        return circuit.state if circuit is not None else "closed"

    def slot(
        self,
        requirement: Requirement,
        priority: int = 0,
        on_wait: Callable[[str], None] | None = None,
    ) -> AbstractAsyncContextManager[AgentLink]:
        """Wait for, then hold, one assignment slot on the best matching agent.

        See :meth:`Slots.slot <agentmesh.orchestrator.agents.slots.Slots.slot>`.
        """
        return self._slots.slot(requirement, priority, on_wait)

    async def charge(self, link: AgentLink, capability: str, tokens: int) -> None:
        """Charge the ``tokens`` a run reported to the token windows of the pools it uses."""
        await self._slots.charge(link, capability, tokens)


def _cached_status(value: object, now: datetime) -> AgentStatus | None:
    """The status of an agent another replica keeps cached, or None for a malformed entry."""
    if not isinstance(value, dict):
        return None
    try:
        card = AgentCard.model_validate(value["card"])
        registered = datetime.fromisoformat(str(value["registered_at"]))
        identity = str(value["identity"])
    except (KeyError, ValueError, TypeError):
        return None
    return AgentStatus(
        card=card,
        identity=identity,
        connected=True,
        draining=bool(value.get("draining", False)),
        active=0,
        circuit="closed",
        registered_at=registered,
        # Renewed every third of the cache TTL while connected: seen within that.
        last_seen=now,
    )
