"""``agentmesh serve``, ``agents`` and ``submit``: run an orchestrator and talk to one."""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path
from typing import Annotated

import typer
import yaml
from pydantic import ValidationError as PydanticValidationError
from rich.console import Console
from rich.table import Table
from rich.text import Text

from agentmesh.cli import common
from agentmesh.cli.common import (
    DEFAULT_ADDRESS,
    DEFAULT_CERTS,
    DEFAULT_NAME,
    Address,
    CertsDir,
    Name,
    Output,
    OutputOption,
    connect,
    echo_json,
)
from agentmesh.cli.tasks import follow
from agentmesh.config import Settings
from agentmesh.errors import ValidationError
from agentmesh.logs import configure_logging
from agentmesh.models import JSON, AgentStatus, Plan, TaskState
from agentmesh.tracing import configure_tracing


def serve(
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error")] = "info",
    pretty: Annotated[bool, typer.Option(help="human-readable logs instead of JSON")] = False,
) -> None:
    """Run the orchestrator (configured by AGENTMESH_* environment variables)."""
    # Imported here, not at the top: the orchestrator (SQLAlchemy, FastAPI, ...) takes most
    # of a second to import, which every other command would pay for nothing.
    from agentmesh.orchestrator import Orchestrator

    configure_logging(log_level, json=not pretty)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        stop_tracing = configure_tracing("agentmesh-orchestrator")
        try:
            async with Orchestrator(Settings()):
                await stop.wait()
        finally:
            stop_tracing()  # flushes the spans still buffered

    settings = Settings()
    common.run(main, certs_dir=settings.certs_dir, name=settings.cert_name)


def agent_json(status: AgentStatus) -> dict[str, JSON]:
    """An agent's status as scripts read it."""
    return {
        "card": status.card.model_dump(mode="json"),
        "identity": status.identity,
        "connected": status.connected,
        "draining": status.draining,
        "active": status.active,
        "circuit": status.circuit,
        "registered_at": status.registered_at.isoformat(),
        "last_seen": status.last_seen.isoformat(),
        "latency_seconds": status.latency,
        "success_rate": status.success_rate,
        "successes": status.successes,
        "failures": status.failures,
        "drained": status.drained,
        "weight": status.weight,
    }


def _latency(status: AgentStatus) -> str:
    seconds = status.latency
    if seconds is None:
        return "—"
    if seconds < 1:
        return "<1 ms" if seconds < 0.0005 else f"{seconds * 1000:.0f} ms"
    return f"{seconds:.1f} s"


def _success(status: AgentStatus) -> str:
    rate = status.success_rate
    if rate is None:
        return "—"
    return f"{rate:.0%} of {status.successes + status.failures}"


def agents(
    capability: Annotated[str, typer.Option(help="only agents offering this")] = "",
    address: Address = DEFAULT_ADDRESS,
    name: Name = DEFAULT_NAME,
    certs_dir: CertsDir = DEFAULT_CERTS,
    output: OutputOption = Output.TEXT,
) -> None:
    """The live agents: endpoint, load, circuit, latency, success rate and capabilities."""

    async def body() -> list[AgentStatus]:
        async with connect(address, certs_dir, name) as client:
            return await client.list_agents(capability)

    statuses = common.run(body, certs_dir=certs_dir, name=name)
    if output is Output.JSON:
        echo_json([agent_json(s) for s in statuses])
        return
    if not statuses:
        typer.echo("no agents" + (f" offer {capability}" if capability else " registered"))
        return
    table = Table(box=None, pad_edge=False)
    for column in ("agent", "endpoint", "load", "circuit", "latency", "success", "capabilities"):
        table.add_column(column)
    for status in statuses:
        card = status.card
        state = status.circuit + (", draining" if status.draining else "")
        state += ", drained" if status.drained else ""
        state += f", weight {status.weight:g}" if status.weight != 1.0 else ""
        table.add_row(
            Text(card.name),
            Text(card.endpoint),
            f"{status.active}/{card.max_concurrency}",
            state,
            _latency(status),
            _success(status),
            Text(", ".join(c.name for c in card.capabilities)),
        )
    Console().print(table)


def _read_plan(path: Path) -> Plan:
    try:
        text = path.read_text(encoding="utf-8")
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
        return Plan.model_validate(data)
    except OSError as exc:
        raise ValidationError(f"cannot read {path}: {exc.strerror}", field="--plan") from None
    except (ValueError, yaml.YAMLError) as exc:
        if isinstance(exc, PydanticValidationError):
            error = ValidationError.from_pydantic(exc, field=str(path))
            raise error from None
        raise ValidationError(f"{path} is not JSON or YAML: {exc}", field="--plan") from None


def submit(
    workflow: Annotated[str, typer.Option(help="catalog workflow name")] = "",
    goal: Annotated[str, typer.Option(help="a goal in words")] = "",
    plan_file: Annotated[
        Path | None, typer.Option("--plan", help="a plan file (YAML or JSON: steps, aggregate)")
    ] = None,
    input_json: Annotated[str, typer.Option("--input", help="task input as JSON")] = "{}",
    priority: Annotated[int, typer.Option(help="higher runs first when agents are scarce")] = 0,
    address: Address = DEFAULT_ADDRESS,
    name: Name = DEFAULT_NAME,
    certs_dir: CertsDir = DEFAULT_CERTS,
    watch: Annotated[
        bool | None,
        typer.Option(help="follow the task live to its end [default: with --output text]"),
    ] = None,
    output: OutputOption = Output.TEXT,
) -> None:
    """Submit a task (a workflow, a goal or a plan file) and, by default, watch it live.

    Ctrl-C while watching detaches (exit 130) and prints how to watch again or cancel.
    """
    try:
        payload = json.loads(input_json)
    except json.JSONDecodeError as exc:
        raise typer.BadParameter(f"not JSON: {exc}", param_hint="--input") from None
    if not isinstance(payload, dict):
        raise typer.BadParameter("must be a JSON object", param_hint="--input")

    async def body() -> str:
        plan = _read_plan(plan_file) if plan_file is not None else None
        async with connect(address, certs_dir, name) as client:
            return await client.submit(
                plan=plan, workflow=workflow, goal=goal, input=payload, priority=priority
            )

    task_id = common.run(body, certs_dir=certs_dir, name=name)
    if output is Output.JSON:
        echo_json({"task_id": task_id})
    else:
        typer.echo(f"submitted task {task_id}")
    if watch if watch is not None else output is Output.TEXT:
        task = follow(
            task_id, after=0, address=address, name=name, certs_dir=certs_dir, output=output
        )
        raise typer.Exit(0 if task.state is TaskState.SUCCEEDED else 1)
