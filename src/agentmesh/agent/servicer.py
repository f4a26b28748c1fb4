"""The ``Agent`` gRPC service: Session only for orchestrators, Describe for anyone in the mesh
(its trust domain: certificates of the mesh CA for other domains are refused)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
from structlog.typing import FilteringBoundLogger

from agentmesh._proto.agentmesh.v1 import agent_pb2, agent_pb2_grpc, common_pb2
from agentmesh.agent.board import SessionBoard
from agentmesh.agent.executor import Executor
from agentmesh.agent.session import Session
from agentmesh.errors import AgentMeshError
from agentmesh.security import Identity, IdentityKind
from agentmesh.security.identity import require_trust_domain
from agentmesh.security.tls import presented_peer

Context = grpc.aio.ServicerContext[Any, Any]


async def authorize(
    context: Context,
    trust_domain: str,
    log: FilteringBoundLogger,
    *,
    method: str,
    only: IdentityKind | None = None,
) -> Identity:
    """The caller's identity in mesh ``trust_domain``; aborts the call (logging
    ``security.denied``) when it has none, is of another domain or not of kind ``only``."""
    identity: Identity | None = None
    try:
        # In two steps, so that a refusal for the domain logs whom it refused.
        identity = presented_peer(context).identity
        require_trust_domain(identity, trust_domain)
    except AgentMeshError as exc:
        log.warning(
            "security.denied",
            identity="" if identity is None else str(identity),
            method=method,
            code=exc.code.name,
            reason=str(exc),
        )
        await context.abort(exc.code, str(exc))
    if only is not None and identity.kind != only:
        reason = f"only {only} identities may call this; caller is {identity}"
        log.warning(
            "security.denied",
            identity=str(identity),
            method=method,
            code=grpc.StatusCode.PERMISSION_DENIED.name,
            reason=reason,
        )
        await context.abort(grpc.StatusCode.PERMISSION_DENIED, reason)
    return identity


class AgentService(agent_pb2_grpc.AgentServicer):
    """Translates the Agent service to sessions and the card; holds no logic of its own."""

    def __init__(
        self,
        card: common_pb2.AgentCard,
        executor: Executor,
        board: SessionBoard,
        log: FilteringBoundLogger,
        *,
        trust_domain: str,
        max_message_bytes: int = 4 * 1024 * 1024,
    ) -> None:
        self._trust_domain = trust_domain
        self._max_message_bytes = max_message_bytes
        self._card = card
        self._executor = executor
        self._board = board
        self._log = log

    # The generated stub types Session as a response generator; we use the
    # context.write form instead so that the stream's cleanup runs deterministically.
    async def Session(  # type: ignore[override]
        self,
        request_iterator: AsyncIterator[agent_pb2.OrchestratorMessage],
        context: Context,
    ) -> None:
        """Serve one orchestrator's session until it or the agent closes it."""
        peer = await authorize(
            context,
            self._trust_domain,
            self._log,
            method="Session",
            only=IdentityKind.ORCHESTRATOR,
        )
        log = self._log.bind(peer=str(peer))
        session = Session(self._executor, peer, log, max_message_bytes=self._max_message_bytes)
        with self._board.track(session):
            log.info("session.opened")
            try:
                await session.serve(request_iterator, context.write)
            finally:
                log.info("session.closed")

    async def Describe(
        self, request: agent_pb2.DescribeRequest, context: Context
    ) -> common_pb2.AgentCard:
        """The card this agent registers."""
        await authorize(context, self._trust_domain, self._log, method="Describe")
        return self._card
