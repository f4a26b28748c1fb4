"""Real agent processes for tests: start, kill, SIGTERM, read their logs."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path


class AgentProcesses:
    """Agent subprocesses of one test; ``aclose`` ends every one still running.

    Stopping waits off the event loop: an orchestrator served in the test's own process must
    answer each agent's goodbye (DeregisterAgent) while the agent stops. Waited for on the
    loop, the orchestrator could not, and every agent sat out its deregister timeout.
    """

    def __init__(self, certs: Path, logs: Path) -> None:
        self._certs = certs
        self._logs = logs
        self.running: dict[str, subprocess.Popen[bytes]] = {}

    def start(
        self,
        module: str,
        name: str,
        orchestrators: list[str],
        **env: str,
    ) -> subprocess.Popen[bytes]:
        """Run ``python -m module`` as agent ``name`` registering with ``orchestrators``."""
        self._logs.mkdir(parents=True, exist_ok=True)
        environment = {
            **os.environ,
            "AGENTMESH_AGENT_NAME": name,
            "AGENTMESH_AGENT_ORCHESTRATORS": json.dumps(orchestrators),
            "AGENTMESH_AGENT_CERTS_DIR": str(self._certs),
            "AGENTMESH_DEMO_LATENCY": "0.05",
            **env,
        }
        with (self._logs / f"{name}.log").open("ab") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", module],
                env=environment,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.running[name] = process
        return process

    def log(self, name: str) -> str:
        """What agent ``name`` printed so far."""
        return (self._logs / f"{name}.log").read_text(errors="replace")

    def kill(self, name: str) -> None:
        """SIGKILL: the agent dies without a word, as in a crash."""
        process = self.running.pop(name)
        process.kill()
        process.wait(10)

    async def terminate(self, name: str) -> int:
        """SIGTERM and wait: the agent drains and deregisters; returns its exit code."""
        process = self.running.pop(name)
        process.send_signal(signal.SIGTERM)
        return await asyncio.to_thread(process.wait, 20)

    async def aclose(self) -> None:
        """:meth:`stop_all`, waiting off the event loop."""
        await asyncio.to_thread(self.stop_all)

    def stop_all(self) -> None:
        """End every agent still running (SIGTERM, then SIGKILL if it lingers)."""
        # Signal all first so that they drain side by side, not one after another.
        stopping = [p for p in self.running.values() if p.poll() is None]
        self.running.clear()
        for process in stopping:
            process.send_signal(signal.SIGTERM)
        for process in stopping:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
