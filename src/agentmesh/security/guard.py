"""The one place that decides who may do what, and acts when the answer changes.

:class:`Guard` holds the authorization policy and the revocation list (both reloaded from
their files when they change), answers the servicers' questions, and keeps track of the open
streams and registered agents of every identity so that revoking one closes them.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import structlog

from agentmesh.errors import PermissionDenied, Unauthenticated
from agentmesh.security.identity import Identity, IdentityKind, require_trust_domain
from agentmesh.security.policy import (
    Action,
    Concealed,
    Policy,
    Scope,
    default_policy,
    load_policy,
)
from agentmesh.security.revocation import Revocations, load_revocations
from agentmesh.security.tls import Peer
from agentmesh.security.watch import ReloadingFile

log = structlog.get_logger(__name__)

#: Closes the Session of the agent with this identity, for this reason.
AgentCloser = Callable[[str, str], Awaitable[object]]


@dataclass(frozen=True, slots=True)
class TaskAccess:
    """What the policy lets one identity do with tasks for one action."""

    identity: Identity
    action: Action
    scope: Scope
    rule: str

    def check(self, task_id: str, owner: str) -> None:
        """Raise :class:`Concealed` (NOT_FOUND) when the task is outside this access."""
        if self.scope is Scope.OWN and owner != self.identity.uri:
            raise Concealed(
                f"no task {task_id!r}",
                field="task_id",
                reason=f"policy rule {self.rule!r} allows {self.identity} to "
                f"{self.action.value.replace('_', ' ')} only of its own; task {task_id} is "
                f"{owner}'s",
            )


@dataclass(slots=True)
class StreamTicket:
    """One open server stream of a peer; ``revoked`` says why it was closed, if it was."""

    peer: Peer
    method: str
    task: asyncio.Task[object] | None
    revoked: str = ""


class Guard:
    """Authorization for the orchestrator: policy decisions, revocation, closing what is revoked.

    ``async with Guard(...)`` loads the policy and revocation files (raising
    :class:`~agentmesh.errors.ConfigError` when one is invalid) and watches them for changes.
    Only identities of ``trust_domain`` are let in, and the policy is read for that domain.
    """

    def __init__(
        self,
        *,
        trust_domain: str,
        policy_file: Path | None = None,
        revocation_file: Path | None = None,
        reload_seconds: float = 1.0,
    ) -> None:
        #: The mesh's trust domain: callers of any other are refused.
        self.trust_domain = trust_domain
        load = functools.partial(load_policy, trust_domain=trust_domain)
        self._policy_file = (
            ReloadingFile(policy_file, load, interval=reload_seconds, what="policy")
            if policy_file is not None
            else None
        )
        self._revocation_file = (
            ReloadingFile(
                revocation_file,
                load_revocations,
                interval=reload_seconds,
                missing=Revocations(),
                what="revocation list",
            )
            if revocation_file is not None
            else None
        )
        self._default = default_policy(trust_domain)
        self._streams: dict[int, StreamTicket] = {}
        #: Registered agents: identity → serial of the certificate it registered with.
        self._agents: dict[str, int | None] = {}
        self._close_agent: AgentCloser | None = None
        self._stack = contextlib.AsyncExitStack()

    async def __aenter__(self) -> Guard:
        async with contextlib.AsyncExitStack() as stack:
            if self._policy_file is not None:
                await stack.enter_async_context(self._policy_file)
                log.info("security.policy_loaded", path=str(self._policy_file.path))
            if self._revocation_file is not None:
                await stack.enter_async_context(self._revocation_file)
                self._revocation_file.on_change(self._revocations_changed)
            self._stack = stack.pop_all()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._stack.aclose()

    @property
    def policy(self) -> Policy:
        """The policy in force now."""
        return self._policy_file.value if self._policy_file is not None else self._default

    @property
    def revocations(self) -> Revocations:
        """The revocation list in force now."""
        return self._revocation_file.value if self._revocation_file is not None else Revocations()

    def close_agents_with(self, closer: AgentCloser) -> None:
        """Use ``closer`` to end the Session of an agent whose identity gets revoked."""
        self._close_agent = closer

    # -- authentication ---------------------------------------------------------------------

    def authenticate(self, peer: Peer) -> None:
        """Raise Unauthenticated when the peer is of another trust domain, or its identity or
        certificate is revoked."""
        require_trust_domain(peer.identity, self.trust_domain)
        reason = self.revocations.reason(peer.identity, peer.serial)
        if reason is not None:
            raise Unauthenticated(reason)

    # -- authorization ----------------------------------------------------------------------

    def require(self, identity: Identity, action: Action) -> None:
        """Raise PermissionDenied unless the policy lets ``identity`` do ``action``."""
        decision = self.policy.allows(identity, action)
        if not decision.allowed:
            raise PermissionDenied(decision.reason)

    def task_access(self, identity: Identity, action: Action) -> TaskAccess:
        """How far ``identity`` may do a task ``action``; PermissionDenied when not at all.

        Asked before the task is looked up, so a caller without any access learns nothing.
        """
        scope, rule = self.policy.scope(identity, action)
        if scope is Scope.NONE:
            raise PermissionDenied(self.policy.denied_scope(identity, action).reason)
        return TaskAccess(identity, action, scope, rule)

    def task_owner_filter(self, identity: Identity) -> str | None:
        """Whose tasks ``identity`` may list: None for everyone's, else its own URI."""
        scope, _ = self.policy.scope(identity, Action.LIST_TASKS)
        if scope is Scope.NONE:
            raise PermissionDenied(self.policy.denied_scope(identity, Action.LIST_TASKS).reason)
        return None if scope is Scope.ANY else identity.uri

    def check_registrant(self, identity: Identity, name: str) -> None:
        """Raise PermissionDenied unless ``identity`` is agent ``name`` itself."""
        if identity.kind is not IdentityKind.AGENT:
            raise PermissionDenied(
                f"{identity} may not register agents: only agent identities register"
            )
        if name != identity.name:
            raise PermissionDenied(
                f"{identity} may register only as {identity.name!r}, not {name!r}",
                field="card.name",
            )

    def check_capabilities(self, identity: Identity, capabilities: Sequence[str]) -> None:
        """Raise PermissionDenied unless the policy lets agent ``identity`` offer all of these."""
        decision = self.policy.allows_capabilities(identity, capabilities)
        if not decision.allowed:
            raise PermissionDenied(decision.reason, field=decision.field)

    async def registered(self, peer: Peer) -> None:
        """Remember an agent that registered, to close its Session should it be revoked.

        Registering takes a while (the orchestrator dials the agent); an agent revoked
        meanwhile has its fresh Session closed here and the call ends UNAUTHENTICATED.
        """
        reason = self.revocations.reason(peer.identity, peer.serial)
        if reason is None:
            self._agents[peer.identity.uri] = peer.serial
            return
        log.warning("security.agent_revoked", identity=str(peer.identity), reason=reason)
        if self._close_agent is not None:
            await self._close_agent(peer.identity.uri, reason)
        raise Unauthenticated(reason)

    def check_deregistration(self, identity: Identity, name: str) -> None:
        """Raise unless ``identity`` is agent ``name`` itself."""
        if identity.kind is not IdentityKind.AGENT or name != identity.name:
            raise PermissionDenied(
                f"{identity} may deregister only itself, not {name!r}", field="name"
            )

    def deregistered(self, identity: Identity) -> None:
        """Forget an agent that left."""
        self._agents.pop(identity.uri, None)

    # -- streams and revocation ---------------------------------------------------------------

    @contextlib.contextmanager
    def stream(self, peer: Peer, method: str) -> Iterator[StreamTicket]:
        """Track the server stream being served by the current task for as long as it runs.

        When the peer is revoked meanwhile, the task is cancelled and ``ticket.revoked`` says
        why; the caller turns that into an UNAUTHENTICATED status.
        """
        task = asyncio.current_task()
        ticket = StreamTicket(peer, method, task)
        key = id(ticket)
        self._streams[key] = ticket
        try:
            yield ticket
        finally:
            self._streams.pop(key, None)

    @property
    def open_streams(self) -> int:
        """Server streams being served now."""
        return len(self._streams)

    async def _revocations_changed(self, revocations: Revocations) -> None:
        for ticket in list(self._streams.values()):
            reason = revocations.reason(ticket.peer.identity, ticket.peer.serial)
            if reason is None or ticket.revoked or ticket.task is None:
                continue
            ticket.revoked = reason
            log.warning(
                "security.stream_closed",
                identity=str(ticket.peer.identity),
                method=ticket.method,
                reason=reason,
            )
            ticket.task.cancel(reason)
        for uri, serial in list(self._agents.items()):
            reason = revocations.reason(uri, serial)
            if reason is None:
                continue
            del self._agents[uri]
            log.warning("security.agent_revoked", identity=uri, reason=reason)
            if self._close_agent is not None:
                await self._close_agent(uri, reason)
