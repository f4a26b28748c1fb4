"""structlog configuration: JSON lines for machines, readable lines for people."""

from __future__ import annotations

import logging
import sys
import traceback
from typing import TextIO

import structlog

from agentmesh.tracing import add_trace_ids

#: An exception's message in a log line is cut here (it may quote a whole input).
_ERROR_CHARS = 2000


def configure_logging(
    level: str = "info", *, json: bool = True, stream: TextIO | None = None
) -> None:
    """Route structlog (and stdlib logging) to ``stream`` at ``level``."""
    numeric = logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            add_trace_ids,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(stream or sys.stderr),
        cache_logger_on_first_use=False,
    )
    # Records of libraries (alembic, grpc, httpx ...) come out in the same shape as ours:
    # one JSON object a line, never a bare message among them.
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processor=renderer,
            foreign_pre_chain=[
                structlog.stdlib.add_logger_name,
                structlog.stdlib.add_log_level,
                structlog.processors.TimeStamper(fmt="iso", utc=True),
            ],
        )
    )
    logging.basicConfig(level=numeric, handlers=[handler], force=True)


def exception_fields(exc: BaseException) -> dict[str, str]:
    """Log fields for ``exc``: ``error`` (type and message) and a plain ``exception`` traceback.

    Use these instead of ``exc_info``: structlog's default console renderer draws rich
    tracebacks with every frame's local variables, and with a large input among them that
    held an agent's event loop long enough for its Session to be dropped. A plain traceback
    never shows locals, whatever renderer is configured.
    """
    return {
        "error": f"{type(exc).__name__}: {exc}"[:_ERROR_CHARS],
        "exception": "".join(traceback.format_exception(exc)),
    }
