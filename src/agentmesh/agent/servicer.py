"""The ``Agent`` gRPC service: Session only for orchestrators, Describe for anyone in the mesh."""

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
from agentmesh.security import Identity, IdentityKind, peer_identity

Context = grpc.aio.ServicerContext[Any, Any]


async def authorize(context: Context, *, only: IdentityKind | None = None) -> Identity:
    """The caller's mesh identity; aborts the call when it has none or is not of kind ``only``."""
    try:
        identity = peer_identity(context)
    except AgentMeshError as exc:
        await context.abort(exc.code, exc.message)
    if only is not None and identity.kind != only:
        await context.abort(
            grpc.StatusCode.PERMISSION_DENIED,
            f"only {only} identities may call this; caller is {identity}",
        )
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
        max_message_bytes: int = 4 * 1024 * 1024,
    ) -> None:
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
        peer = await authorize(context, only=IdentityKind.ORCHESTRATOR)
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
        await authorize(context)
        return self._card
