"""Errors of the HTTP API: each :class:`~agentmesh.errors.AgentMeshError` as an HTTP status.

The answer's body is always :class:`~agentmesh.orchestrator.http.models.ErrorView`: the gRPC
status name (``code``), the offending ``field`` and the ``reason``, as the gRPC API sends them
in its status and trailing metadata. Refusals for who the caller is are logged as
``security.denied`` (a concealed task with the reason the caller never sees), like the gRPC
interceptor does; anything else a route raises is a bug, logged as ``http.crashed`` and
answered 500 without details.
"""

from __future__ import annotations

from typing import Any

import grpc
import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from agentmesh.errors import AgentMeshError, describe, field_path
from agentmesh.security.policy import Concealed

log = structlog.get_logger(__name__)

Code = grpc.StatusCode

#: HTTP status of each gRPC status code (Google's HTTP mapping, except FAILED_PRECONDITION:
#: 409, as the target's state is what conflicts; and CANCELLED: 503, as only a shutdown
#: cancels a call here).
HTTP_STATUS: dict[grpc.StatusCode, int] = {
    Code.INVALID_ARGUMENT: 400,
    Code.OUT_OF_RANGE: 400,
    Code.UNAUTHENTICATED: 401,
    Code.PERMISSION_DENIED: 403,
    Code.NOT_FOUND: 404,
    Code.ALREADY_EXISTS: 409,
    Code.ABORTED: 409,
    Code.FAILED_PRECONDITION: 409,
    Code.RESOURCE_EXHAUSTED: 429,
    Code.CANCELLED: 503,
    Code.UNAVAILABLE: 503,
    Code.DEADLINE_EXCEEDED: 504,
}

#: The statuses any route of the API may answer (for the OpenAPI schema).
ERROR_STATUSES = (400, 401, 403, 404, 409, 413, 429, 503, 504)

_SECURITY = (Code.UNAUTHENTICATED, Code.PERMISSION_DENIED)


def error_body(code: str, reason: str, field: str | None = None) -> dict[str, str]:
    """The JSON of an error answer."""
    return {"code": code, "field": field or "", "reason": reason}


def error_response(exc: AgentMeshError) -> JSONResponse:
    """The answer to a request refused with ``exc``."""
    status = HTTP_STATUS.get(exc.code, 500)
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    reason = exc.message.strip() or exc.code.name.lower()
    return JSONResponse(
        error_body(exc.code.name, reason, exc.field), status_code=status, headers=headers
    )


def _who(request: Request) -> str:
    peer = getattr(request.state, "peer", None)
    return "" if peer is None else str(peer.identity)


async def _refused(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, AgentMeshError)
    method = f"{request.method} {request.url.path}"
    if isinstance(exc, Concealed) or exc.code in _SECURITY:
        log.warning(
            "security.denied",
            identity=_who(request),
            method=method,
            code=exc.code.name,
            reason=exc.reason if isinstance(exc, Concealed) else str(exc),
        )
    else:
        log.info("http.refused", identity=_who(request), method=method, code=exc.code.name)
    return error_response(exc)


def _field(location: tuple[Any, ...]) -> str:
    # ("body", "plan", "steps", 0, "id") → plan.steps[0].id; ("query", "page_size") → page_size
    where = ""
    for key in location[1:] if location and location[0] in ("body", "query", "path") else location:
        where = field_path(where, key)
    return where or (str(location[0]) if location else "request")


async def _malformed(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = sorted(exc.errors(), key=lambda e: e.get("type") != "extra_forbidden")
    first = errors[0] if errors else {"loc": (), "msg": "malformed request"}
    location = tuple(first.get("loc", ()))
    if location == ("header", "last-event-id"):
        location = ("Last-Event-ID",)
    body = error_body(Code.INVALID_ARGUMENT.name, str(first.get("msg")), _field(location))
    return JSONResponse(body, status_code=400)


async def _http(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    code = {
        401: Code.UNAUTHENTICATED,
        404: Code.NOT_FOUND,
        405: Code.UNIMPLEMENTED,
        413: Code.RESOURCE_EXHAUSTED,
    }.get(exc.status_code, Code.INVALID_ARGUMENT)
    field = "body" if exc.status_code == 413 else None
    return JSONResponse(
        error_body(code.name, str(exc.detail), field),
        status_code=exc.status_code,
        headers=exc.headers,
    )


async def _crashed(request: Request, exc: Exception) -> JSONResponse:
    log.error(
        "http.crashed",
        identity=_who(request),
        method=f"{request.method} {request.url.path}",
        error=describe(exc),
        exc_info=exc,
    )
    body = error_body(Code.INTERNAL.name, "internal error; see the orchestrator's log")
    return JSONResponse(body, status_code=500)


def install(app: FastAPI) -> None:
    """Answer every error of ``app``'s routes as an :class:`ErrorView`."""
    app.add_exception_handler(AgentMeshError, _refused)
    app.add_exception_handler(RequestValidationError, _malformed)
    app.add_exception_handler(HTTPException, _http)
    app.add_exception_handler(Exception, _crashed)
