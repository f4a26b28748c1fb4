"""``agentmesh agent run MODULE[:CLASS]``: serve an agent class from a module or file."""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import sys
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Annotated

import typer

from agentmesh.cli import common
from agentmesh.errors import ValidationError
from agentmesh.logs import configure_logging

if TYPE_CHECKING:
    # Imported where used: the SDK takes a third of a second to import, which the commands
    # that serve no agent would pay for nothing.
    from agentmesh.agent import Agent, AgentSettings

app = typer.Typer(help="Run agents.", no_args_is_help=True)

Orchestrators = Annotated[
    list[str] | None,
    typer.Option("--orchestrator", help="orchestrator host:port [AGENTMESH_AGENT_ORCHESTRATORS]"),
]
CertsDir = Annotated[
    Path | None,
    typer.Option("--certs-dir", help="certificates folder [AGENTMESH_AGENT_CERTS_DIR]"),
]
LogLevel = Annotated[str, typer.Option(help="debug, info, warning or error")]


def agent_settings(
    name: str, orchestrator: list[str] | None, certs_dir: Path | None
) -> AgentSettings:
    """The SDK settings of an agent served from the command line: the environment's, with
    the options given on top (an empty ``name`` leaves the environment's or the class's)."""
    from agentmesh.agent import AgentSettings

    overrides: dict[str, object] = {"name": name} if name else {}
    if orchestrator:
        overrides["orchestrators"] = orchestrator
    if certs_dir is not None:
        overrides["certs_dir"] = certs_dir
    return AgentSettings(**overrides)  # type: ignore[arg-type]


def _module(target: str) -> ModuleType:
    path = Path(target)
    if target.endswith(".py"):
        if not path.is_file():
            raise ValidationError(f"no file {target}", field="MODULE")
        spec = importlib.util.spec_from_file_location(path.stem, path)
        assert spec is not None
        assert spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[path.stem] = module
        spec.loader.exec_module(module)
        return module
    # Like ``python -m``: a module in the current folder is found.
    sys.path.insert(0, str(Path.cwd()))
    try:
        return importlib.import_module(target)
    except ModuleNotFoundError as exc:
        raise ValidationError(f"no module {exc.name!r}", field="MODULE") from None


def load_agent_class(target: str) -> type[Agent]:
    """The Agent subclass ``MODULE[:CLASS]`` names; without CLASS, the one the module
    defines. MODULE is a dotted module name or a ``.py`` file."""
    from agentmesh.agent import Agent

    module_name, _, class_name = target.partition(":")
    module = _module(module_name)
    if class_name:
        found = getattr(module, class_name, None)
        if not (inspect.isclass(found) and issubclass(found, Agent)):
            raise ValidationError(f"{module_name} has no Agent class {class_name!r}", field="CLASS")
        return found
    defined = [
        value
        for value in vars(module).values()
        if inspect.isclass(value)
        and issubclass(value, Agent)
        and value is not Agent
        and value.__module__ == module.__name__
    ]
    if len(defined) != 1:
        names = ", ".join(sorted(c.__name__ for c in defined)) or "none"
        raise ValidationError(
            f"{module_name} defines {len(defined)} Agent classes ({names}); "
            f"name one as {module_name}:CLASS",
            field="MODULE",
        )
    return defined[0]


@app.command("run")
def run_agent(
    target: Annotated[
        str, typer.Argument(metavar="MODULE[:CLASS]", help="e.g. shouter or shouter.py:Shouter")
    ],
    name: Annotated[str, typer.Option(help="register as this name [default: the class's]")] = "",
    orchestrator: Orchestrators = None,
    certs_dir: CertsDir = None,
    log_level: LogLevel = "info",
) -> None:
    """Serve an agent until Ctrl-C or SIGTERM (then it drains and deregisters)."""
    from agentmesh.agent.server import serve_until_signalled

    configure_logging(log_level, json=False)
    cls = common.call(lambda: load_agent_class(target))
    settings = agent_settings(name, orchestrator, certs_dir)
    agent = cls()
    common.run(
        lambda: serve_until_signalled(agent, settings),
        certs_dir=settings.certs_dir,
        name=settings.name or agent.name,
        kind="agent",
    )
