"""OpenTelemetry traces, named after the GenAI semantic conventions for agents.

One trace follows a task through every process it touches: the client's current span
parents the task's ``invoke_workflow`` span in the orchestrator, which parents ``plan`` and
one ``invoke_agent {agent}`` span per step attempt; the agent SDK runs each handler in an
``execute_tool {capability}`` span below that attempt. W3C trace context
(``traceparent``/``tracestate``) travels in gRPC metadata on calls, and inside each
``Assignment`` on an agent's long-lived Session stream (metadata of a stream is sent once).

Nothing is recorded unless a process calls :func:`configure_tracing` with
``OTEL_EXPORTER_OTLP_ENDPOINT`` set (or an application installs its own tracer provider):
until then the API's no-op tracer makes every span here a shared do-nothing object.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, MutableMapping
from typing import Any, Final

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.propagate import extract, inject
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, Tracer

__all__ = [
    "AGENT_ID",
    "AGENT_NAME",
    "AGENT_VERSION",
    "ATTEMPT",
    "ERROR_TYPE",
    "OPERATION",
    "STEP_ID",
    "TASK_ID",
    "TOOL_NAME",
    "Span",
    "SpanKind",
    "add_trace_ids",
    "attached",
    "carrier",
    "configure_tracing",
    "context_of",
    "enabled",
    "failed",
    "metadata",
    "metadata_context",
    "span",
    "tracer",
]

#: The GenAI conventions' attribute names (and ``error.type`` from the general ones).
OPERATION: Final = "gen_ai.operation.name"
AGENT_NAME: Final = "gen_ai.agent.name"
AGENT_ID: Final = "gen_ai.agent.id"
AGENT_VERSION: Final = "gen_ai.agent.version"
TOOL_NAME: Final = "gen_ai.tool.name"
ERROR_TYPE: Final = "error.type"
#: Ours: which task, step and attempt a span belongs to.
TASK_ID: Final = "agentmesh.task.id"
STEP_ID: Final = "agentmesh.step.id"
ATTEMPT: Final = "agentmesh.attempt"

#: Set on a process whose spans should go to an OTLP collector (the SDK reads the rest of
#: the ``OTEL_EXPORTER_OTLP_*`` variables itself).
ENDPOINT_VARIABLE: Final = "OTEL_EXPORTER_OTLP_ENDPOINT"

_TRACER: Final = trace.get_tracer("agentmesh")


def tracer() -> Tracer:
    """agentmesh's tracer: a proxy that follows whichever provider is installed, no-op until
    one is."""
    return _TRACER


def configure_tracing(service_name: str) -> Callable[[], None]:
    """Export this process's spans over OTLP when ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set.

    Returns the call that flushes and stops the exporter (a no-op when nothing was set up).
    Leaves an already installed provider alone: an application that traces itself keeps its
    own, and agentmesh's spans join it.
    """
    if not os.environ.get(ENDPOINT_VARIABLE) or _provider_installed():
        return _nothing
    # Imported here: a process that does not export never loads the SDK or gRPC exporter.
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    # OTEL_SERVICE_NAME, when set, wins over the default name (the SDK merges it in).
    provider = TracerProvider(resource=Resource.create({SERVICE_NAME: service_name}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    return provider.shutdown


def _provider_installed() -> bool:
    return not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)


_UNKNOWN: Final = object()


def enabled() -> bool:
    """True once a tracer provider is installed (by :func:`configure_tracing` or the program).

    Checked before every span agentmesh would open, so that an untraced process pays
    nothing: even the no-op tracer's spans cost tens of microseconds each (context managers,
    context attach and detach), and ``trace.get_tracer_provider()`` itself several.
    """
    # The API's own global, read directly: the public getter consults the environment on
    # every call. Should a later API version move it, fall back to the public way.
    provider = getattr(trace, "_TRACER_PROVIDER", _UNKNOWN)
    if provider is _UNKNOWN:
        return _provider_installed()
    return provider is not None


def span(
    name: str,
    *,
    kind: SpanKind = SpanKind.INTERNAL,
    parent: Mapping[str, str] | None = None,
    attributes: Callable[[], Mapping[str, str | int | bool]],
) -> contextlib.AbstractContextManager[Span]:
    """The current span ``name`` for a block, or (untraced) a shared do-nothing span.

    Its parent is the context carried by ``parent`` (see :func:`carrier`) when given, else
    the current span. ``attributes`` is called only when the span is recorded. Exceptions
    are not recorded on the span: the caller says what failed with :func:`failed`.
    """
    if not enabled():
        return contextlib.nullcontext(trace.INVALID_SPAN)
    return _TRACER.start_as_current_span(
        name,
        context=context_of(parent or {}),
        kind=kind,
        attributes=attributes(),
        record_exception=False,
    )


def _nothing() -> None:
    return None


def carrier(span: Span | None = None) -> dict[str, str]:
    """The W3C trace context of ``span`` (default: the current one), as text fields;
    empty when there is no recording span."""
    fields: dict[str, str] = {}
    if span is None:
        inject(fields)
    elif span.get_span_context().is_valid:
        inject(fields, context=trace.set_span_in_context(span))
    return fields


def context_of(fields: Mapping[str, str]) -> otel_context.Context | None:
    """The context carried by ``fields`` (see :func:`carrier`); None when they carry none."""
    if not fields:
        return None
    return extract(dict(fields))


def metadata() -> tuple[tuple[str, str], ...]:
    """gRPC metadata carrying the current trace context (empty without one)."""
    return tuple(carrier().items())


def metadata_context(
    pairs: Iterable[tuple[str, str | bytes]] | None,
) -> otel_context.Context | None:
    """The trace context in incoming gRPC metadata; None when it carries none."""
    fields = {
        key: value.decode(errors="replace") if isinstance(value, bytes) else value
        for key, value in pairs or ()
        if key in ("traceparent", "tracestate")
    }
    return context_of(fields)


@contextlib.contextmanager
def attached(context: otel_context.Context | None) -> Iterator[None]:
    """``context`` (when there is one) is the current context inside the block."""
    if context is None:
        yield
        return
    token = otel_context.attach(context)
    try:
        yield
    finally:
        otel_context.detach(token)


def failed(span: Span, error_type: str, message: str = "") -> None:
    """Mark ``span`` as failed with a short, low-cardinality ``error.type``."""
    if not span.is_recording():
        return
    span.set_attribute(ERROR_TYPE, error_type)
    span.set_status(Status(StatusCode.ERROR, message[:500] or None))


def add_trace_ids(
    logger: Any, method: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: the current span's ``trace_id`` and ``span_id``, in hex, on every
    line logged inside one."""
    if not enabled():
        return event
    span_context = trace.get_current_span().get_span_context()
    if span_context.is_valid:
        event.setdefault("trace_id", trace.format_trace_id(span_context.trace_id))
        event.setdefault("span_id", trace.format_span_id(span_context.span_id))
    return event
