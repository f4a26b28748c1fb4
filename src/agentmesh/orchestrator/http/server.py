"""The HTTP API's server: uvicorn on the orchestrator's event loop, HTTPS with the mesh CA.

TLS asks for a client certificate but does not demand one (``CERT_OPTIONAL``): browsers and
scripts may come with a bearer token instead. A certificate that is presented must be signed
by the mesh CA, or the handshake fails. uvicorn does not tell the application about the
peer's certificate, so :class:`_PeerCertProtocol` reads it from the connection's SSL object
(``transport.get_extra_info("ssl_object").getpeercert(binary_form=True)``) and hands it to
the application in the ASGI TLS extension, ``scope["extensions"]["tls"]``.

The certificate, key and CA are those of the gRPC port, reloaded the same way when they
change (:func:`~agentmesh.security.tls.server_ssl_context`): a new connection gets the
current files, an open one keeps what it was made with.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Iterator
from types import TracebackType
from typing import Any

import structlog
import uvicorn
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse
from uvicorn.protocols.http.h11_impl import H11Protocol

from agentmesh.errors import ResourceExhausted
from agentmesh.orchestrator.http.errors import error_body
from agentmesh.security import CertFiles
from agentmesh.security.tls import server_ssl_context

log = structlog.get_logger(__name__)

ASGIApp = Any

#: Seconds an idle keep-alive connection stays open (uvicorn's default is 5).
KEEP_ALIVE_SECONDS = 75


def _with_tls(app: ASGIApp, tls: dict[str, Any]) -> ASGIApp:
    async def wrapped(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] in ("http", "websocket"):
            scope = {**scope, "extensions": {**(scope.get("extensions") or {}), "tls": tls}}
        await app(scope, receive, send)

    return wrapped


class _PeerCertProtocol(H11Protocol):
    """uvicorn's h11 protocol, telling the application the verified client certificate."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        ssl_object: ssl.SSLObject | None = transport.get_extra_info("ssl_object")
        if ssl_object is None:
            return
        der = ssl_object.getpeercert(binary_form=True)
        cipher = ssl_object.cipher()
        tls = {
            "server_cert": None,
            "client_cert_chain": [ssl.DER_cert_to_PEM_cert(der)] if der else [],
            "client_cert_name": None,
            "client_cert_error": None,
            "tls_version": None,
            "cipher_suite": None,
            "cipher": cipher[0] if cipher else None,
        }
        self.app = _with_tls(self.app, tls)


def _limit_body(app: ASGIApp, limit: int) -> ASGIApp:
    """Refuse request bodies over ``limit`` bytes (413) before reading more of them."""

    async def limited(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or ())
        declared = headers.get(b"content-length", b"0")
        reason = f"the request body exceeds the limit of {limit} bytes"
        if declared.isdigit() and int(declared) > limit:
            body = error_body(ResourceExhausted.code.name, reason, "body")
            await JSONResponse(body, status_code=413)(scope, receive, send)
            return
        seen = 0

        async def counting() -> Any:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    # Raised into the route's body reading, which lets HTTPException through.
                    raise HTTPException(413, reason)
            return message

        await app(scope, counting, send)

    return limited


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # The orchestrator's process owns its signals; uvicorn must not take them over.
        yield


class HttpServer:
    """``async with HttpServer(app, listen, files)`` serves ``app`` until the block ends.

    ``files`` None serves plaintext (insecure development mode only). ``port`` is the bound
    port (useful with port 0).
    """

    def __init__(
        self,
        app: ASGIApp,
        listen: str,
        files: CertFiles | None,
        *,
        max_body_bytes: int,
    ) -> None:
        host, _, port = listen.rpartition(":")
        context = server_ssl_context(files) if files is not None else None
        config = uvicorn.Config(
            _limit_body(app, max_body_bytes),
            host=host.strip("[]") or "127.0.0.1",
            port=int(port),
            http=_PeerCertProtocol,
            ws="none",
            lifespan="off",
            log_config=None,
            access_log=False,
            server_header=False,
            timeout_graceful_shutdown=1,
            # Longer than clients keep an idle connection (httpx 5 s, Go 90 s is the odd
            # one out): with uvicorn's own 5 s the two timers ran out together, and a POST
            # sent as the server closed failed with "Server disconnected without sending a
            # response" (benchmarks/http_latency on PostgreSQL, 2026-12-05).
            timeout_keep_alive=KEEP_ALIVE_SECONDS,
            # A factory, so that uvicorn uses our context rather than building its own.
            ssl_context_factory=(lambda _config, _default: context) if context else None,
        )
        self._listen = listen
        self._server = _Server(config)
        self._task: asyncio.Task[None] | None = None
        self.port = 0

    async def __aenter__(self) -> HttpServer:
        self._task = asyncio.create_task(self._server.serve(), name="http-server")
        while not self._server.started:
            if self._task.done():
                with contextlib.suppress(SystemExit):  # uvicorn's answer to a bad port
                    await self._task
                raise OSError(f"the HTTP API cannot listen on {self._listen}; see the log")
            await asyncio.sleep(0.01)
        self.port = self._server.servers[0].sockets[0].getsockname()[1]
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._task is None:
            return
        self._server.should_exit = True
        try:
            await self._task
        finally:
            self._task = None
