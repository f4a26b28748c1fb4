"""One server interceptor: the caller's identity, error-to-status mapping, and RPC logs.

Every handler runs with the verified caller identity in :data:`caller`, and
every :class:`~agentmesh.errors.AgentMeshError` it raises becomes the gRPC
status that error names, with ``field: reason`` as the details.
"""

from __future__ import annotations

import contextvars
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import structlog

from agentmesh.errors import AgentMeshError
from agentmesh.security import Identity, peer_identity

log = structlog.get_logger(__name__)

#: The verified identity of the caller of the RPC being handled.
caller: contextvars.ContextVar[Identity] = contextvars.ContextVar("agentmesh_caller")

#: Services anyone holding a mesh certificate may call without an identity check.
_OPEN_SERVICES = ("/grpc.health.v1.Health/", "/grpc.reflection.")


def current_caller() -> Identity:
    """The identity of the caller of the RPC being handled."""
    return caller.get()


async def _abort(context: grpc.aio.ServicerContext[Any, Any], exc: AgentMeshError) -> None:
    await context.abort(exc.code, str(exc))


class MeshInterceptor(grpc.aio.ServerInterceptor):
    """Authenticates callers, maps domain errors to statuses and logs each RPC."""

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
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                self._unary(method, handler.unary_unary),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                self._stream(method, handler.unary_stream),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler

    @staticmethod
    def _unary(method: str, behavior: Callable[..., Any]) -> Callable[..., Any]:
        async def wrapped(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            started = time.perf_counter()
            try:
                identity = peer_identity(context)
                caller.set(identity)
                response = await behavior(request, context)
            except AgentMeshError as exc:
                log.info("rpc.refused", method=method, code=exc.code.name, reason=str(exc))
                await _abort(context, exc)
                raise AssertionError("unreachable: abort raises") from exc
            log.debug(
                "rpc.ok",
                method=method,
                caller=str(identity),
                ms=round((time.perf_counter() - started) * 1000, 2),
            )
            return response

        return wrapped

    @staticmethod
    def _stream(method: str, behavior: Callable[..., Any]) -> Callable[..., Any]:
        async def wrapped(
            request: Any, context: grpc.aio.ServicerContext[Any, Any]
        ) -> AsyncIterator[Any]:
            try:
                caller.set(peer_identity(context))
                async for response in behavior(request, context):
                    yield response
            except AgentMeshError as exc:
                log.info("rpc.refused", method=method, code=exc.code.name, reason=str(exc))
                await _abort(context, exc)

        return wrapped
