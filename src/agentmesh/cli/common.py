"""What every ``agentmesh`` command shares: connection options, output, one-line errors.

A command that talks to an orchestrator builds its body as a coroutine and hands it to
:func:`run`: an :class:`~agentmesh.errors.AgentMeshError` becomes one line on stderr (its
status and message, and for missing certificates the command that creates them) and exit
status 1; ``agentmesh --debug`` shows the traceback instead.
"""

from __future__ import annotations

import asyncio
import enum
import json
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import typer

from agentmesh.client import Client
from agentmesh.errors import AgentMeshError, CertificateError, Unavailable
from agentmesh.models import JSON

T = TypeVar("T")


class Output(enum.StrEnum):
    """How a command prints what it found."""

    TEXT = "text"
    JSON = "json"


Address = Annotated[str, typer.Option(envvar="AGENTMESH_ADDRESS", help="orchestrator host:port")]
Name = Annotated[
    str,
    typer.Option(
        envvar="AGENTMESH_CLIENT_NAME", help="client certificate name (certs/client/NAME.pem)"
    ),
]
CertsDir = Annotated[
    Path, typer.Option("--certs-dir", envvar="AGENTMESH_CERTS_DIR", help="certificates folder")
]
OutputOption = Annotated[
    Output, typer.Option("--output", "-o", help="text for people, json for scripts")
]

DEFAULT_ADDRESS = "localhost:50051"
DEFAULT_NAME = "cli"
DEFAULT_CERTS = Path("certs")

#: Set by ``agentmesh --debug``: errors show their traceback.
debug = False


def plain(value: JSON) -> JSON:
    """``value`` with integral floats as integers: JSON on the wire (protobuf Struct) knows
    only doubles, so a count of 314 arrives as 314.0."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


def dumps(value: JSON, *, indent: int | None = 2) -> str:
    """``value`` as JSON with a stable key order and integers printed as integers."""
    return json.dumps(plain(value), indent=indent, sort_keys=True, ensure_ascii=False)


def echo_json(value: JSON) -> None:
    """Print ``value`` as JSON for scripts."""
    typer.echo(dumps(value))


def _hint(exc: AgentMeshError, certs_dir: Path | None, name: str | None, kind: str) -> str:
    if isinstance(exc, CertificateError) and certs_dir is not None:
        if not (certs_dir / "ca.pem").exists():
            return f"; create them with: agentmesh certs init --dir {certs_dir}"
        return f"; create it with: agentmesh certs issue {kind} {name} --dir {certs_dir}"
    if type(exc) is Unavailable:
        return "; is an orchestrator running there? start one with: agentmesh dev"
    return ""


def one_line(
    exc: AgentMeshError,
    *,
    certs_dir: Path | None = None,
    name: str | None = None,
    kind: str = "client",
) -> str:
    """The error as one line: status, field and message, and what to do when obvious."""
    message = " ".join(str(exc).split())  # a multi-line detail stays one line
    return f"error: {exc.code.name} {message}{_hint(exc, certs_dir, name, kind)}"


def fail(message: str, code: int = 1) -> NoReturn:
    """Print ``message`` on stderr and exit with ``code``."""
    typer.echo(message, err=True)
    raise typer.Exit(code)


def call(
    fn: Callable[[], T],
    *,
    certs_dir: Path | None = None,
    name: str | None = None,
    kind: str = "client",
) -> T:
    """``fn()``, its AgentMeshError turned into a one-line error (a traceback with --debug)."""
    try:
        return fn()
    except AgentMeshError as exc:
        if debug:
            raise
        fail(one_line(exc, certs_dir=certs_dir, name=name, kind=kind))


def run(
    body: Callable[[], Coroutine[Any, Any, T]],
    *,
    certs_dir: Path | None = None,
    name: str | None = None,
    kind: str = "client",
) -> T:
    """Run ``body`` on a fresh event loop; its AgentMeshError becomes a one-line error."""
    return call(lambda: asyncio.run(body()), certs_dir=certs_dir, name=name, kind=kind)


def connect(address: str, certs_dir: Path, name: str) -> Client:
    """A client of the orchestrator at ``address`` as ``client/<name>``."""
    return Client(address, certs_dir, name)


def unexpected(exc: BaseException) -> NoReturn:
    """A bug, not a refusal: one line unless ``--debug``."""
    if debug:
        raise exc
    fail(f"error: {type(exc).__name__}: {exc} (agentmesh --debug … shows the traceback)")


def main_guard(entry: Callable[[], None]) -> None:
    """Call ``entry`` (the typer app) so that no traceback reaches a user without --debug."""
    try:
        entry()
    except SystemExit:
        raise
    except Exception as exc:
        unexpected(exc)
    finally:
        sys.stdout.flush()
