"""A bridge command (``agentmesh celery-bridge``, ``a2a-bridge``) as a process of its own."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from agentmesh.orchestrator import Orchestrator


def bridge_process(
    orchestrator: Orchestrator, certs: Path, logs: Path, *arguments: str
) -> subprocess.Popen[bytes]:
    """``agentmesh ARGUMENTS... --orchestrator ... --certs-dir CERTS``, its output in
    ``logs/bridge.log``; stop it with SIGTERM (``terminate()``)."""
    command = Path(sys.executable).parent / "agentmesh"
    with (logs / "bridge.log").open("wb") as log:
        return subprocess.Popen(
            [
                str(command),
                *arguments,
                *("--orchestrator", f"localhost:{orchestrator.port}", "--certs-dir", str(certs)),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
