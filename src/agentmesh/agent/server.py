"""Serving an agent: the gRPC server, its registrations, and the drain on the way out."""

from __future__ import annotations

import asyncio
import signal
from contextlib import AsyncExitStack
from types import TracebackType

import grpc
import structlog
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from structlog.typing import FilteringBoundLogger

from agentmesh._proto.agentmesh.v1 import agent_pb2, agent_pb2_grpc
from agentmesh._tasks import TaskSet
from agentmesh.agent.base import Agent
from agentmesh.agent.board import SessionBoard
from agentmesh.agent.executor import Executor
from agentmesh.agent.registration import RegistrationKeeper, RegistrationTiming
from agentmesh.agent.servicer import AgentService
from agentmesh.agent.settings import AgentSettings
from agentmesh.agent.subtasks import SubTasks
from agentmesh.models import AgentCard
from agentmesh.security import CertFiles, IdentityKind, server_credentials
from agentmesh.security.ca import own_identity
from agentmesh.security.identity import check_name
from agentmesh.tracing import configure_tracing
from agentmesh.wire import card_to_proto

AGENT_SERVICE = agent_pb2.DESCRIPTOR.services_by_name["Agent"].full_name
#: How long session streams get to flush their last replies when the server stops.
_STOP_GRACE_SECONDS = 2.0


def _advertised(listen: str, port: int) -> str:
    host = listen.rsplit(":", 1)[0]
    if host in ("", "0.0.0.0", "[::]", "::"):  # a wildcard is not dialable
        host = "localhost"
    return f"{host}:{port}"


class AgentServer:
    """Serves ``agent`` over mTLS and keeps it registered with the orchestrators.

    ``async with AgentServer(agent, settings) as server:`` is serving on exit of
    ``__aenter__`` (registration goes on in the background and never delays
    serving); leaving the block drains it (see :meth:`drain`).
    """

    def __init__(self, agent: Agent, settings: AgentSettings | None = None) -> None:
        self._agent = agent
        self._settings = settings or AgentSettings()
        self.name = check_name(self._settings.name or agent.name, "name")
        self._log: FilteringBoundLogger = structlog.get_logger("agentmesh.agent").bind(
            agent=self.name
        )
        self._board = SessionBoard()
        self._subtasks = SubTasks(self._settings.orchestrators, self._settings.certs_dir, self.name)
        self._executor = Executor(
            agent,
            cache_size=self._settings.result_cache_size,
            log=self._log,
            name=self.name,
            subtasks=self._subtasks,
        )
        self._keepers: list[RegistrationKeeper] = []
        self._keeper_tasks = TaskSet()
        self._health = health.aio.HealthServicer()
        self._stack: AsyncExitStack | None = None
        self._card: AgentCard | None = None
        self._port = 0
        self._drain_lock = asyncio.Lock()
        self._closed = asyncio.Event()

    @property
    def port(self) -> int:
        """The port the Agent service listens on."""
        return self._port

    @property
    def endpoint(self) -> str:
        """The ``host:port`` registered with orchestrators."""
        return self.card.endpoint

    @property
    def card(self) -> AgentCard:
        """The card registered with orchestrators and returned by Describe."""
        if self._card is None:
            raise RuntimeError("the agent server has not started")
        return self._card

    async def __aenter__(self) -> AgentServer:
        settings = self._settings
        files = CertFiles.of(settings.certs_dir, IdentityKind.AGENT, self.name)
        trust_domain = settings.resolved_trust_domain()
        own_identity(files, trust_domain, setting="AGENTMESH_AGENT_TRUST_DOMAIN")
        async with AsyncExitStack() as stack:
            await stack.enter_async_context(self._subtasks)  # closed after the executor
            await stack.enter_async_context(self._executor)
            # gRPC enables SO_REUSEPORT by default: a second agent on the same fixed
            # port would silently share it instead of failing to start.
            server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
            self._port = server.add_secure_port(settings.listen, server_credentials(files))
            self._card = self._agent.card(
                settings.advertise or _advertised(settings.listen, self._port), name=self.name
            )
            card_pb = card_to_proto(self._card)
            agent_pb2_grpc.add_AgentServicer_to_server(
                AgentService(
                    card_pb,
                    self._executor,
                    self._board,
                    self._log,
                    trust_domain=trust_domain,
                    max_message_bytes=self._settings.max_message_bytes,
                ),
                server,
            )
            health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
            await self._health.set(AGENT_SERVICE, health_pb2.HealthCheckResponse.SERVING)
            reflection.enable_server_reflection(
                [AGENT_SERVICE, health.SERVICE_NAME, reflection.SERVICE_NAME], server
            )
            await server.start()
            stack.push_async_callback(server.stop, _STOP_GRACE_SECONDS)
            timing = RegistrationTiming(
                refused_retry=settings.register_retry_seconds,
                session_wait=settings.session_wait_seconds,
            )
            for address in settings.orchestrators:
                keeper = RegistrationKeeper(address, card_pb, files, self._board, self._log, timing)
                self._keepers.append(await stack.enter_async_context(keeper))
            stack.push_async_callback(self._keeper_tasks.aclose)
            for keeper in self._keepers:
                self._keeper_tasks.spawn(keeper.run(), name=f"register-{keeper.address}")
            self._stack = stack.pop_all()
        self._log.info("agent.serving", endpoint=self.endpoint, port=self._port)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.drain()

    async def drain(self) -> None:
        """Shut down gracefully; safe to call more than once.

        Sends ``Draining`` on every session and refuses new assignments, waits up
        to ``drain_timeout_seconds`` for running ones, hands the rest back as
        retryable ``draining`` failures, deregisters, and stops the server.
        """
        async with self._drain_lock:
            if self._stack is None or self._closed.is_set():
                return
            self._log.info("agent.draining", running=self._executor.active)
            self._executor.stop_accepting()
            self._board.drain()
            await self._health.enter_graceful_shutdown()
            # No re-registering while going away.
            await self._keeper_tasks.aclose()
            await self._executor.drain(self._settings.drain_timeout_seconds)
            await asyncio.gather(*(keeper.deregister() for keeper in self._keepers))
            self._board.close_all()
            await self._stack.aclose()
            self._closed.set()
            self._log.info("agent.stopped")

    async def wait_closed(self) -> None:
        """Return once the server has drained and stopped."""
        await self._closed.wait()


async def serve_until_signalled(agent: Agent, settings: AgentSettings | None = None) -> None:
    """Serve ``agent`` until SIGTERM or SIGINT arrives, then drain and return."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    signals = (signal.SIGTERM, signal.SIGINT)
    for sig in signals:
        loop.add_signal_handler(sig, stop.set)
    server = AgentServer(agent, settings)
    stop_tracing = configure_tracing(server.name)
    try:
        async with server:
            await stop.wait()
    finally:
        stop_tracing()  # flushes the spans still buffered
        # Only now: a second signal during the drain must not kill it half-way.
        for sig in signals:
            loop.remove_signal_handler(sig)


def run(agent: Agent, settings: AgentSettings | None = None) -> None:
    """Serve ``agent`` in this process until SIGTERM/SIGINT; returns once drained (exit 0)."""
    asyncio.run(serve_until_signalled(agent, settings))
