"""The package's imports run one way: front doors → engine → agents → store.

Read from the source (every ``import`` statement, wherever it stands), so a new module that
reaches back up a layer fails here before anyone has to untangle it.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "agentmesh"

#: The shared vocabulary: no I/O beyond TLS files, usable by everyone.
SHARED = (
    "models",
    "errors",
    "config",
    "schemas",
    "limits",
    "logs",
    "wire",
    "_tasks",
    "security",
    "_proto",
    "tracing",
)

#: Orchestrator layers, top to bottom; a module may import its own layer and those below.
LAYERS = (
    ("app",),
    ("api", "http"),
    ("engine",),
    ("planning",),
    ("agents",),
    ("events", "live_index", "live_tasks", "store", "cache", "metrics", "tuning"),
)


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> Iterator[str]:
    tree = ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            folder = PACKAGE.parent.joinpath(*node.module.split("."))
            if folder.is_dir():
                # ``from agentmesh.orchestrator import metrics``: what counts is the module.
                yield from (f"{node.module}.{alias.name}" for alias in node.names)
            else:
                yield node.module


def _area(module: str) -> tuple[str, ...]:
    """``agentmesh.orchestrator.engine.run`` → ``("orchestrator", "engine")``."""
    parts = module.split(".")[1:]
    if parts[:1] == ["orchestrator"]:
        return tuple(parts[:2])
    return tuple(parts[:1])


def _layer(area: tuple[str, ...]) -> int | None:
    if area[:1] != ("orchestrator",) or len(area) < 2:
        return None
    for rank, names in enumerate(LAYERS):
        if area[1] in names:
            return rank
    return None


def _allowed(importer: str, imported: str) -> bool:
    source, target = _area(importer), _area(imported)
    if not target or target[0] in SHARED or target == source:
        return True
    if source[0] in SHARED or source[0] in ("client",):
        return False
    if source[0] == "agent":
        return False  # the SDK uses only the shared vocabulary
    if source[0] == "examples":
        return target[0] == "agent"
    if source[0] == "bridges":
        return target[0] in ("agent", "client", "bridges")  # agents and front doors of others
    if source[0] == "orchestrator":
        if target[0] != "orchestrator":
            return False  # never the CLI, the SDK or the client
        mine, theirs = _layer(source), _layer(target)
        return mine is not None and theirs is not None and theirs >= mine
    return True  # the CLI and the package's front page may use anything


def _edges() -> Iterator[tuple[str, str]]:
    for path in sorted(PACKAGE.rglob("*.py")):
        if "_proto" in path.parts:
            continue
        importer = _module_name(path)
        if importer in ("agentmesh", "agentmesh.orchestrator"):
            continue  # package front pages re-export what lies below them
        for imported in _imports(path):
            if imported.startswith("agentmesh.") or imported == "agentmesh":
                yield importer, imported


def test_every_import_runs_down_the_layers() -> None:
    wrong = sorted({(a, b) for a, b in _edges() if b != "agentmesh" and not _allowed(a, b)})
    assert not wrong, "imports that run back up:\n" + "\n".join(f"{a} → {b}" for a, b in wrong)


@pytest.mark.parametrize(
    ("importer", "imported", "allowed"),
    [
        ("agentmesh.orchestrator.engine.run", "agentmesh.orchestrator.agents.registry", True),
        ("agentmesh.orchestrator.agents.registry", "agentmesh.orchestrator.engine.run", False),
        ("agentmesh.client", "agentmesh.orchestrator.store", False),
        ("agentmesh.agent.server", "agentmesh.orchestrator.engine", False),
        ("agentmesh.wire.tasks", "agentmesh.orchestrator.agents.registry", False),
        ("agentmesh.orchestrator.store.database", "agentmesh.cli.run", False),
    ],
)
def test_the_rule_itself_tells_down_from_up(importer: str, imported: str, allowed: bool) -> None:
    assert _allowed(importer, imported) is allowed


def test_importing_the_client_loads_no_server_side_library() -> None:
    import subprocess
    import sys

    code = (
        "import agentmesh.client, sys; "
        "print(sorted({'sqlalchemy', 'redis', 'agentmesh.orchestrator'} & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
