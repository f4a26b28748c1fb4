"""A real OTLP/gRPC trace collector on 127.0.0.1: what processes export, kept in memory."""

from __future__ import annotations

from dataclasses import dataclass
from types import TracebackType
from typing import Any

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.trace.v1 import trace_pb2

from tests.support.network import free_port


@dataclass(frozen=True)
class CollectedSpan:
    """One exported span, in the terms a test compares (ids as ints, attributes as values)."""

    service: str
    name: str
    kind: str
    trace_id: int
    span_id: int
    parent_id: int
    attributes: dict[str, Any]
    error: bool


def _value(value: Any) -> Any:
    kind = value.WhichOneof("value")
    return getattr(value, kind) if kind else None


class Collector(trace_service_pb2_grpc.TraceServiceServicer):
    """``async with Collector() as collector:`` listens at ``collector.endpoint`` (plain gRPC,
    as OTLP collectors do on loopback); every exported span lands in ``collector.spans``."""

    def __init__(self) -> None:
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.spans: list[CollectedSpan] = []
        self._server: grpc.aio.Server | None = None

    def spans_of(self, trace_id: int) -> list[CollectedSpan]:
        """The spans collected so far of trace ``trace_id``, in the order they arrived."""
        return [s for s in self.spans if s.trace_id == trace_id]

    async def Export(
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: Any
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        for resource_spans in request.resource_spans:
            resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
            for scope in resource_spans.scope_spans:
                for span in scope.spans:
                    self.spans.append(
                        CollectedSpan(
                            service=str(resource.get("service.name", "")),
                            name=span.name,
                            kind=trace_pb2.Span.SpanKind.Name(span.kind),
                            trace_id=int.from_bytes(span.trace_id, "big"),
                            span_id=int.from_bytes(span.span_id, "big"),
                            parent_id=int.from_bytes(span.parent_span_id, "big")
                            if span.parent_span_id
                            else 0,
                            attributes={a.key: _value(a.value) for a in span.attributes},
                            error=span.status.code == trace_pb2.Status.STATUS_CODE_ERROR,
                        )
                    )
        return trace_service_pb2.ExportTraceServiceResponse()

    async def __aenter__(self) -> Collector:
        self._server = grpc.aio.server()
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(self, self._server)
        self._server.add_insecure_port(f"127.0.0.1:{self.port}")
        await self._server.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._server is not None:
            await self._server.stop(None)
