"""``agentmesh serve`` as a real subprocess: killed with SIGKILL, restarted on its port and DB."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from types import TracebackType

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from agentmesh.security import CertFiles, IdentityKind, channel_credentials, trust_domain_of
from tests.support.network import free_port
from tests.support.waiting import eventually


def _command() -> list[str]:
    script = Path(sys.executable).with_name("agentmesh")
    found = str(script) if script.exists() else shutil.which("agentmesh")
    if found is None:
        raise RuntimeError("the agentmesh console script is not installed")
    return [found, "serve", "--log-level", "info"]


class OrchestratorProcess:
    """An orchestrator subprocess configured only by ``AGENTMESH_*`` environment variables.

    ``async with OrchestratorProcess(...) as orchestrator:`` starts it and waits until it
    serves; :meth:`kill` is a crash (SIGKILL), :meth:`start` brings it back on the same port
    and database. Leaving the block stops it.
    """

    def __init__(self, certs: Path, workdir: Path, database: dict[str, str], **settings: str):
        self.port = free_port()
        self.address = f"localhost:{self.port}"
        self._certs = certs
        self._workdir = workdir
        self._env = {
            **os.environ,
            "AGENTMESH_LISTEN": f"127.0.0.1:{self.port}",
            "AGENTMESH_CERTS_DIR": str(certs),
            "AGENTMESH_TRUST_DOMAIN": trust_domain_of(certs),
            "AGENTMESH_REDIS_URL": "",
            "AGENTMESH_PING_INTERVAL_SECONDS": "0.2",
            "AGENTMESH_AGENT_TIMEOUT_SECONDS": "1.5",
            **{f"AGENTMESH_{key.upper()}": value for key, value in database.items()},
            **{f"AGENTMESH_{key.upper()}": value for key, value in settings.items()},
        }
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def log_path(self) -> Path:
        """Where every run of the orchestrator writes its (JSON) log lines."""
        return self._workdir / "orchestrator.log"

    def log(self) -> str:
        """What the orchestrator logged so far, over all its runs."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    async def start(self, within: float = 20) -> None:
        """Start the process (again) and wait until its health service answers SERVING."""
        assert self.process is None or self.process.poll() is not None, "already running"
        self.process = self._spawn()
        self.starts += 1
        await eventually(self._serving, bool, within=within, interval=0.1)

    def _spawn(self) -> subprocess.Popen[bytes]:
        self._workdir.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            return subprocess.Popen(
                _command(),
                env=self._env,
                # Away from the repository: Settings also reads a .env file in the cwd.
                cwd=self._workdir,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    async def _serving(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(
                f"orchestrator exited with {self.process.returncode}:\n{self.log()}"
            )
        files = CertFiles.of(self._certs, IdentityKind.CLIENT, "alice")
        async with grpc.aio.secure_channel(self.address, channel_credentials(files)) as channel:
            try:
                answer = await health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(), timeout=1
                )
            except grpc.aio.AioRpcError:
                return False
        return answer.status == health_pb2.HealthCheckResponse.SERVING

    def kill(self) -> None:
        """SIGKILL: the orchestrator dies mid-work without a chance to write anything more."""
        assert self.process is not None
        self.process.kill()
        self.process.wait(10)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it lingers."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.kill()

    async def __aenter__(self) -> OrchestratorProcess:
        try:
            await self.start()
        except BaseException:
            self.stop()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
