"""One server interceptor: the caller's identity, error-to-status mapping, and RPC logs.

Every handler runs with the verified caller in :func:`current_peer` (identity and the
serial of its certificate), after the :class:`~agentmesh.security.guard.Guard` checked that
the identity is of the mesh's trust domain and that neither is revoked. Requests are decoded
here rather than by gRPC, so that a message protobuf cannot parse (too deeply nested,
malformed) is INVALID_ARGUMENT, not UNKNOWN. Every
:class:`~agentmesh.errors.AgentMeshError` a handler raises becomes the gRPC status that error
names, with ``field: reason`` as the details and the field alone in the
``agentmesh-field-bin`` trailing metadata; refusals for who the caller is (UNAUTHENTICATED,
PERMISSION_DENIED, a concealed task) are logged as ``security.denied``; anything else a handler
raises is a bug, logged as ``rpc.crashed`` and answered INTERNAL without details.
Server streams are tracked by the guard, which closes those of an identity that is revoked.
"""

from __future__ import annotations

import asyncio
import contextvars
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import structlog
from google.protobuf.message import DecodeError

from agentmesh.errors import (
    FIELD_METADATA_KEY,
    RETRY_AFTER_METADATA_KEY,
    AgentMeshError,
    TryLater,
    Unauthenticated,
    ValidationError,
    describe,
)
from agentmesh.logs import exception_fields
from agentmesh.security import Identity, Peer
from agentmesh.security.guard import Guard
from agentmesh.security.policy import Concealed
from agentmesh.security.tls import presented_peer

log = structlog.get_logger(__name__)

Context = grpc.aio.ServicerContext[Any, Any]

#: The verified caller of the RPC being handled.
caller: contextvars.ContextVar[Peer] = contextvars.ContextVar("agentmesh_caller")

#: Services anyone holding a mesh certificate may call without an identity check.
_OPEN_SERVICES = ("/grpc.health.v1.Health/", "/grpc.reflection.")

_SECURITY_CODES = (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED)


def current_peer() -> Peer:
    """The caller of the RPC being handled: identity and certificate serial."""
    return caller.get()


def current_caller() -> Identity:
    """The identity of the caller of the RPC being handled."""
    return caller.get().identity


class MeshInterceptor(grpc.aio.ServerInterceptor):
    """Authenticates callers, decodes requests, maps domain errors to statuses, logs each RPC.

    With ``insecure_identity`` (development mode, plaintext port) every caller without a
    certificate is that identity.
    """

    def __init__(self, guard: Guard, *, insecure_identity: Identity | None = None) -> None:
        self._guard = guard
        self._insecure = None if insecure_identity is None else Peer(insecure_identity, None)

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or method.startswith(_OPEN_SERVICES):
            return handler
        decode = handler.request_deserializer
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                self._unary(method, handler.unary_unary, decode),
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                self._stream(method, handler.unary_stream, decode),
                response_serializer=handler.response_serializer,
            )
        # Fail closed: a client-streaming method added later must be guarded here first.
        return grpc.stream_unary_rpc_method_handler(self._unguarded(method))

    def _peer(self, context: Context) -> Peer:
        # The trust domain is checked by the guard in _authenticate, with the peer already
        # known so that the refusal's log names who was refused.
        if self._insecure is not None and not context.auth_context().get("x509_pem_cert"):
            return self._insecure
        return presented_peer(context)

    def _authenticate(self, peer: Peer) -> None:
        self._guard.authenticate(peer)
        caller.set(peer)

    @staticmethod
    def _decode(decode: Callable[[bytes], Any] | None, raw: Any) -> Any:
        if decode is None:
            return raw
        try:
            return decode(raw)
        except DecodeError as exc:
            raise ValidationError(
                f"cannot be parsed (malformed, or nested too deeply): {describe(exc)}",
                field="request",
            ) from None

    @staticmethod
    async def _fail(context: Context, method: str, peer: Peer | None, exc: BaseException) -> None:
        identity = "" if peer is None else str(peer.identity)
        if isinstance(exc, AgentMeshError):
            if isinstance(exc, Concealed) or exc.code in _SECURITY_CODES:
                log.warning(
                    "security.denied",
                    identity=identity,
                    method=method,
                    code=exc.code.name,
                    reason=exc.reason if isinstance(exc, Concealed) else str(exc),
                )
            else:
                log.info(
                    "rpc.refused",
                    identity=identity,
                    method=method,
                    code=exc.code.name,
                    reason=str(exc),
                )
            # The field also goes separately: a client cannot tell from "a: b: c" alone
            # where a field ends and the message begins. describe() is the last guard: a
            # status message that ends in whitespace is dropped by some clients (Node's
            # HTTP/2 stack rejects such header values).
            metadata: tuple[tuple[str, str | bytes], ...] = ()
            if exc.field:
                metadata += ((FIELD_METADATA_KEY, exc.field.encode()),)
            if isinstance(exc, TryLater):
                metadata += ((RETRY_AFTER_METADATA_KEY, str(round(exc.retry_after * 1000))),)
            await context.abort(exc.code, describe(exc), trailing_metadata=metadata)
        log.error("rpc.crashed", identity=identity, method=method, **exception_fields(exc))
        await context.abort(grpc.StatusCode.INTERNAL, "internal error; see the orchestrator's log")

    def _unary(
        self, method: str, behavior: Callable[..., Any], decode: Callable[[bytes], Any] | None
    ) -> Callable[..., Any]:
        async def wrapped(raw: Any, context: Context) -> Any:
            started = time.perf_counter()
            peer: Peer | None = None
            try:
                peer = self._peer(context)
                self._authenticate(peer)
                response = await behavior(self._decode(decode, raw), context)
            except grpc.aio.AbortError:
                raise
            except Exception as exc:
                await self._fail(context, method, peer, exc)
                raise AssertionError("unreachable: abort raises") from exc
            log.debug(
                "rpc.ok",
                method=method,
                caller=str(peer.identity),
                ms=round((time.perf_counter() - started) * 1000, 2),
            )
            return response

        return wrapped

    def _stream(
        self, method: str, behavior: Callable[..., Any], decode: Callable[[bytes], Any] | None
    ) -> Callable[..., Any]:
        guard = self._guard

        async def wrapped(raw: Any, context: Context) -> AsyncIterator[Any]:
            peer: Peer | None = None
            try:
                peer = self._peer(context)
                self._authenticate(peer)
                request = self._decode(decode, raw)
                with guard.stream(peer, method) as ticket:
                    try:
                        async for response in behavior(request, context):
                            yield response
                    except asyncio.CancelledError:
                        if not ticket.revoked or ticket.task is None:
                            raise
                        # Cancelled by the guard, not by the client: end with a status.
                        ticket.task.uncancel()
                        raise Unauthenticated(ticket.revoked) from None
            except grpc.aio.AbortError:
                raise
            except Exception as exc:
                await self._fail(context, method, peer, exc)

        return wrapped

    @staticmethod
    def _unguarded(method: str) -> Callable[..., Any]:
        async def refuse(requests: Any, context: Context) -> Any:
            log.error("rpc.unguarded", method=method)
            await context.abort(
                grpc.StatusCode.UNIMPLEMENTED, "client-streaming methods are not served"
            )

        return refuse
