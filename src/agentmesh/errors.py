"""The one error hierarchy of agentmesh; each error knows its gRPC status code."""

from __future__ import annotations

import json
import re
from typing import Any

import grpc
from pydantic import ValidationError as PydanticValidationError

from agentmesh.models import FailureCode

_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")


def field_path(base: str, key: str | int) -> str:
    """``base.key`` for plain keys, ``base["odd key"]`` otherwise, ``base[3]`` for positions."""
    if isinstance(key, int):
        return f"{base}[{key}]"
    if _PLAIN_KEY.fullmatch(key):
        return f"{base}.{key}" if base else key
    return f"{base}[{json.dumps(key)}]"


def describe(exc: BaseException) -> str:
    """What went wrong, as text that is never empty nor ends in whitespace.

    A bare ``TimeoutError()`` reads as ``""``, which left messages ending in ``": "`` (and a
    status message ending in a space is dropped whole by Node's HTTP/2 stack). A gRPC error
    reads as its code and details rather than its multi-line debug text.
    """
    if isinstance(exc, grpc.aio.AioRpcError):
        return f"{exc.code().name} {exc.details() or ''}".strip()
    return str(exc).strip() or type(exc).__name__


class AgentMeshError(Exception):
    """Root of every error agentmesh raises on purpose."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL

    def __init__(self, message: str, *, field: str | None = None) -> None:
        self.message = message
        self.field = field
        super().__init__(f"{field}: {message}" if field else message)


class ValidationError(AgentMeshError):
    """A request or plan is malformed; ``field`` names the offending part."""

    code = grpc.StatusCode.INVALID_ARGUMENT

    @classmethod
    def from_pydantic(cls, exc: PydanticValidationError, *, field: str = "") -> ValidationError:
        """The most telling of ``exc``'s errors, its location appended to ``field``.

        An unknown key comes first: it is usually a misspelling, and the "missing" error for
        the intended key is its consequence.
        """
        errors: list[Any] = sorted(exc.errors(), key=lambda e: e["type"] != "extra_forbidden")
        first = errors[0]
        where = field
        for key in first["loc"]:
            where = field_path(where, key)
        return cls(first["msg"], field=where)


class NotFound(AgentMeshError):
    """The named task, step or agent does not exist (or is not visible to the caller)."""

    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(AgentMeshError):
    """Something with that name or key exists already."""

    code = grpc.StatusCode.ALREADY_EXISTS


class Unauthenticated(AgentMeshError):
    """The caller presented no usable identity."""

    code = grpc.StatusCode.UNAUTHENTICATED


class PermissionDenied(AgentMeshError):
    """The caller's identity may not do this."""

    code = grpc.StatusCode.PERMISSION_DENIED


class FailedPrecondition(AgentMeshError):
    """The request is valid but the target's state does not allow it now."""

    code = grpc.StatusCode.FAILED_PRECONDITION


class Unavailable(AgentMeshError):
    """Something needed is unreachable: the orchestrator (seen by a client) or an agent."""

    code = grpc.StatusCode.UNAVAILABLE


class AgentUnavailable(Unavailable):
    """No capable agent can take the work (none registered, all busy or broken)."""


class DeadlineExceeded(AgentMeshError):
    """A call did not finish within its deadline."""

    code = grpc.StatusCode.DEADLINE_EXCEEDED


class ResourceExhausted(AgentMeshError):
    """A limit was hit: a message too large, too many requests or streams."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class TryLater(ResourceExhausted):
    """Too busy to take the call now: come back in about ``retry_after`` seconds (sent as
    trailing metadata ``agentmesh-retry-after-ms`` too)."""

    def __init__(self, message: str, *, retry_after: float, field: str | None = None) -> None:
        super().__init__(message, field=field)
        self.retry_after = retry_after


class OutOfRange(AgentMeshError):
    """A position (a page token, a sequence number) lies outside what exists."""

    code = grpc.StatusCode.OUT_OF_RANGE


class Cancelled(AgentMeshError):
    """The call was cancelled before it finished (e.g. the orchestrator is shutting down)."""

    code = grpc.StatusCode.CANCELLED


class StepFailed(AgentMeshError):
    """An agent reported a failure for an assignment."""

    code = grpc.StatusCode.ABORTED

    def __init__(
        self, message: str, *, code: str = FailureCode.FAILED, retryable: bool = True
    ) -> None:
        super().__init__(message)
        self.failure_code = code
        self.retryable = retryable


class ConfigError(AgentMeshError):
    """A configuration file (policy, revocation list, ...) is missing or invalid."""

    code = grpc.StatusCode.FAILED_PRECONDITION


class CertificateError(AgentMeshError):
    """A certificate or key is missing, malformed or does not fit the mesh."""

    code = grpc.StatusCode.FAILED_PRECONDITION


#: Trailing metadata key carrying an error's ``field`` (UTF-8), so that a client need not
#: guess where the field ends in ``field: message`` details.
FIELD_METADATA_KEY = "agentmesh-field-bin"
#: Trailing metadata key of a :class:`TryLater`: in how many milliseconds to come back.
RETRY_AFTER_METADATA_KEY = "agentmesh-retry-after-ms"

_CLASS_OF_CODE: dict[grpc.StatusCode, type[AgentMeshError]] = {
    cls.code: cls
    for cls in (
        ValidationError,
        NotFound,
        AlreadyExists,
        Unauthenticated,
        PermissionDenied,
        FailedPrecondition,
        Unavailable,
        DeadlineExceeded,
        ResourceExhausted,
        OutOfRange,
        Cancelled,
    )
}


def error_from_status(
    code: grpc.StatusCode, details: str, *, field: str | None = None
) -> AgentMeshError:
    """The error a gRPC status stands for: the inverse of each class's ``code``.

    ``details`` is what the server's interceptor sent (``field: message`` when the error
    named a field); with ``field`` given, that prefix is taken off again. A code no class
    claims (INTERNAL, UNKNOWN, ABORTED, ...) gives an :class:`AgentMeshError` carrying it.
    """
    message = details or code.name.lower()
    if field and message.startswith(f"{field}: "):
        message = message[len(field) + 2 :]
    cls = _CLASS_OF_CODE.get(code)
    if cls is None:
        error = AgentMeshError(message, field=field or None)
        error.code = code
        return error
    return cls(message, field=field or None)
