"""The orchestrator process: every component wired together behind one mTLS gRPC server."""

from __future__ import annotations

import asyncio
import contextlib
import functools
from pathlib import Path
from types import TracebackType

import grpc
import structlog
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from agentmesh._proto.agentmesh.v1 import orchestrator_pb2, orchestrator_pb2_grpc
from agentmesh.config import Settings
from agentmesh.errors import CertificateError
from agentmesh.orchestrator import tuning
from agentmesh.orchestrator.agents.limits import Limits
from agentmesh.orchestrator.agents.pools import Pools, load_pools
from agentmesh.orchestrator.agents.registry import Registry
from agentmesh.orchestrator.api.interceptors import MeshInterceptor
from agentmesh.orchestrator.api.servicers import OrchestratorServicer, RegistryServicer
from agentmesh.orchestrator.api.tasks import TaskService
from agentmesh.orchestrator.cache import Cache
from agentmesh.orchestrator.engine import Engine
from agentmesh.orchestrator.events import EventBus
from agentmesh.orchestrator.metrics import serving_metrics
from agentmesh.orchestrator.planning import Planner, catalog_of, default_planner
from agentmesh.orchestrator.planning.delegate import AgentPlanner
from agentmesh.orchestrator.store import Store
from agentmesh.security import CertFiles, Identity, IdentityKind, server_credentials
from agentmesh.security.ca import own_identity
from agentmesh.security.guard import Guard
from agentmesh.security.peer_check import endpoint_identity
from agentmesh.security.tls import RotatingChannelCredentials
from agentmesh.security.tokens import Tokens, load_tokens
from agentmesh.security.watch import ReloadingFile

log = structlog.get_logger(__name__)

#: Calls that arrived before the event loop took them up: gRPC core cancels those past its
#: backlog (status CANCELLED, no reason given), by default from 1,000 on, and the loop takes
#: up one call at a time, so a burst of 1,200 submissions to a busy orchestrator lost some.
#: Between the two limits gRPC refuses a growing share of new calls; past the second, all.
#: Each waiting call holds at most its stream's flow-control window (64 KiB at first).
CALL_BACKLOG = (5_000, 10_000)

_SERVICES = (
    orchestrator_pb2.DESCRIPTOR.services_by_name["Orchestrator"].full_name,
    orchestrator_pb2.DESCRIPTOR.services_by_name["Registry"].full_name,
)


class Orchestrator:
    """``async with Orchestrator(settings) as orch:`` serves until the block ends.

    A ``planner`` given here is the caller's to open and close; the default one is entered
    (and closed) with the orchestrator.
    """

    def __init__(self, settings: Settings | None = None, *, planner: Planner | None = None) -> None:
        self.settings = settings or Settings()
        self._planner = planner
        self._stack = contextlib.AsyncExitStack()
        self._server: grpc.aio.Server | None = None
        self.port = 0
        #: Port of the /metrics endpoint, when ``metrics_listen`` is set.
        self.metrics_port = 0
        #: Port of the HTTP API, when ``http_listen`` is set.
        self.http_port = 0

    @property
    def address(self) -> str:
        """host:port the orchestrator listens on (with the real port when 0 was asked for)."""
        host = self.settings.listen.rsplit(":", 1)[0]
        return f"{host}:{self.port}"

    async def __aenter__(self) -> Orchestrator:
        try:
            await self._start()
        except BaseException:
            await self._stack.aclose()
            raise
        return self

    async def _start(self) -> None:
        settings = self.settings
        files = CertFiles.of(settings.certs_dir, IdentityKind.ORCHESTRATOR, settings.cert_name)
        if not files.exists():
            raise CertificateError(
                f"no orchestrator certificate at {files.cert}; run `agentmesh certs init`"
            )
        own_identity(files, settings.trust_domain, setting="AGENTMESH_TRUST_DOMAIN")
        guard = await self._stack.enter_async_context(
            Guard(
                trust_domain=settings.trust_domain,
                policy_file=Path(settings.policy_file) if settings.policy_file else None,
                revocation_file=Path(settings.revocation_file)
                if settings.revocation_file
                else None,
                reload_seconds=settings.security_reload_seconds,
            )
        )
        pools = Pools(
            load_pools(Path(settings.pools_file)) if settings.pools_file else None,
            hold_seconds=settings.lease_seconds,
            token_window_seconds=settings.pool_token_window_seconds,
        )
        store = await self._stack.enter_async_context(
            Store(settings.database_url, schema=settings.database_schema)
        )
        cache = await self._stack.enter_async_context(
            Cache(
                settings.redis_url or None,
                namespace=settings.redis_namespace,
                default_ttl=settings.cache_ttl_seconds,
            )
        )
        bus = await self._stack.enter_async_context(
            EventBus(store, cache, snapshot_seconds=settings.cache_ttl_seconds)
        )
        # Holds outlive a missed renewal or two, and a dead replica's run out like its leases.
        limits = await self._stack.enter_async_context(
            Limits(store, cache, hold_seconds=settings.lease_seconds)
        )
        registry = await self._stack.enter_async_context(
            Registry(
                store,
                cache,
                settings,
                RotatingChannelCredentials(files),
                identify=functools.partial(
                    endpoint_identity, files=files, trust_domain=settings.trust_domain
                ),
                limits=limits,
                pools=pools,
            )
        )
        planner = self._planner
        if planner is None:
            planner = default_planner(
                settings,
                delegate=AgentPlanner(
                    registry, timeout=settings.llm_timeout_seconds, settings=settings
                ),
            )
            # Ours to open and close: an LLM planner keeps one connection pool for our life.
            if isinstance(planner, contextlib.AbstractAsyncContextManager):
                await self._stack.enter_async_context(planner)
        engine = await self._stack.enter_async_context(
            Engine(
                store=store,
                cache=cache,
                bus=bus,
                registry=registry,
                planner=planner,
                settings=settings,
            )
        )
        self.engine, self.registry, self.store, self.guard = engine, registry, store, guard
        guard.close_agents_with(registry.close_identity)

        limit = settings.max_message_bytes
        server = grpc.aio.server(
            interceptors=[MeshInterceptor(guard, insecure_identity=self._insecure_identity())],
            options=[
                ("grpc.max_receive_message_length", limit),
                ("grpc.max_send_message_length", limit),
                ("grpc.keepalive_time_ms", 20_000),
                ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
                ("grpc.max_connection_idle_ms", int(settings.idle_connection_seconds * 1000)),
                ("grpc.server.max_pending_requests", CALL_BACKLOG[0]),
                ("grpc.server.max_pending_requests_hard_limit", CALL_BACKLOG[1]),
            ],
        )
        tasks = TaskService(engine, store, bus, registry, guard, catalog=catalog_of(planner))
        orchestrator_pb2_grpc.add_OrchestratorServicer_to_server(
            OrchestratorServicer(tasks, max_message_bytes=settings.max_message_bytes), server
        )
        orchestrator_pb2_grpc.add_RegistryServicer_to_server(
            RegistryServicer(
                registry,
                settings.ping_interval_seconds,
                guard,
                agent_timeout=settings.agent_timeout_seconds,
            ),
            server,
        )
        health_servicer = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
        reflection.enable_server_reflection(
            (
                *_SERVICES,
                health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                reflection.SERVICE_NAME,
            ),
            server,
        )
        if settings.metrics_listen:
            self.metrics_port = self._stack.enter_context(serving_metrics(settings.metrics_listen))
            log.info("orchestrator.metrics", port=self.metrics_port)
        if settings.insecure:
            log.warning(
                "security.insecure_mode",
                address=settings.listen,
                identity=str(self._insecure_identity()),
                note="plaintext, no client certificates: for development only",
            )
            self.port = server.add_insecure_port(settings.listen)
        else:
            self.port = server.add_secure_port(settings.listen, server_credentials(files))
        await server.start()
        self._server = server
        # Stop accepting calls before the components they use go away.
        self._stack.push_async_callback(self._stop_server)
        for name in ("", *_SERVICES):
            await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
        if settings.http_listen:
            await self._serve_http(tasks, guard, files)
        tuning.settle()
        log.info(
            "orchestrator.started", address=self.address, database=store.url.render_as_string()
        )

    async def _serve_http(self, tasks: TaskService, guard: Guard, files: CertFiles) -> None:
        """The HTTP/JSON API, stopped before the components it uses (like the gRPC server)."""
        # Imported only when served: FastAPI, Starlette and uvicorn are ~6 MiB of an
        # orchestrator's memory that serves gRPC alone (issue 9).
        from agentmesh.orchestrator.http import Authenticator, HttpServer, create_api

        settings = self.settings
        token_file = await self._stack.enter_async_context(
            ReloadingFile(
                settings.tokens_path,
                load_tokens,
                interval=settings.security_reload_seconds,
                missing=Tokens(),
                what="tokens file",
            )
        )
        authenticator = Authenticator(
            guard, token_file, insecure_identity=self._insecure_identity()
        )
        api = create_api(tasks, authenticator)
        if settings.insecure:
            log.warning(
                "security.insecure_mode",
                address=settings.http_listen,
                note="HTTP API in plaintext: for development only",
            )
        http = await self._stack.enter_async_context(
            HttpServer(
                api,
                settings.http_listen,
                None if settings.insecure else files,
                max_body_bytes=settings.max_message_bytes,
            )
        )
        self.http_port = http.port
        log.info("orchestrator.http", port=http.port, tls=not settings.insecure)

    def _insecure_identity(self) -> Identity | None:
        if not self.settings.insecure:
            return None
        return Identity(self.settings.trust_domain, IdentityKind.ADMIN, "insecure-dev")

    async def _stop_server(self) -> None:
        if self._server is not None:
            await self._server.stop(grace=1.0)
            self._server = None

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._stack.aclose()
        log.info("orchestrator.stopped")

    async def wait_closed(self) -> None:
        """Serve until the server stops."""
        if self._server is not None:
            await self._server.wait_for_termination()


async def serve(settings: Settings | None = None, stop: asyncio.Event | None = None) -> None:
    """Run an orchestrator until ``stop`` is set (or forever)."""
    async with Orchestrator(settings) as orchestrator:
        if stop is None:
            await orchestrator.wait_closed()
        else:
            await stop.wait()
