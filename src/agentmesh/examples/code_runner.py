"""The ``code-runner`` agent: runs Python programs in the sandbox (``code.run_python``).

Each assignment is a fresh process under :mod:`agentmesh.examples.sandbox`'s limits; a
program stopped by a limit is a normal result (``limit`` says which), so the agent goes on
serving. Limits come from ``AGENTMESH_SANDBOX_*`` environment variables; an input may ask
for less CPU or wall time than those, never more.
"""

from __future__ import annotations

from pydantic import BaseModel, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from agentmesh.agent import Agent, AssignmentContext, capability, run
from agentmesh.errors import StepFailed
from agentmesh.examples import sandbox


class SandboxSettings(BaseSettings):
    """The most one run may use, read from ``AGENTMESH_SANDBOX_*`` environment variables."""

    model_config = SettingsConfigDict(env_prefix="AGENTMESH_SANDBOX_", extra="ignore")

    cpu_seconds: int = Field(default=5, ge=1)
    memory_mb: int = Field(default=512, ge=32)
    wall_seconds: float = Field(default=30.0, gt=0)
    processes: int = Field(default=16, ge=1)
    file_mb: int = Field(default=16, ge=1)
    output_kb: int = Field(default=64, ge=1)
    #: Refuse to run without a network namespace (off: the audit hook alone cuts the network).
    require_network_namespace: bool = True

    def limits(self, cpu_seconds: int | None, wall_seconds: float | None) -> sandbox.Limits:
        """These limits, lowered to what one input asks for."""
        return sandbox.Limits(
            cpu_seconds=min(cpu_seconds or self.cpu_seconds, self.cpu_seconds),
            memory_bytes=self.memory_mb * 1024 * 1024,
            wall_seconds=min(wall_seconds or self.wall_seconds, self.wall_seconds),
            processes=self.processes,
            file_bytes=self.file_mb * 1024 * 1024,
            output_bytes=self.output_kb * 1024,
        )


class RunIn(BaseModel):
    """A program, and text files to put beside it (name → content)."""

    code: str = Field(min_length=1, max_length=1_000_000)
    files: dict[str, str] = Field(default_factory=dict, max_length=64)
    cpu_seconds: int | None = Field(default=None, ge=1)
    wall_seconds: float | None = Field(default=None, gt=0)


class RefusalOut(BaseModel):
    """Something the sandbox's audit hook refused."""

    kind: str
    detail: str


class RunOut(BaseModel):
    """How the program ended and what it printed."""

    exit_code: int
    signal: str | None
    #: The limit that stopped the program: cpu, memory, time, file_size, network, process,
    #: filesystem or escape; null when none did.
    limit: str | None
    stdout: str
    stderr: str
    truncated: bool
    refusals: list[RefusalOut]
    files: dict[str, str]
    network_isolation: str


class CodeRunner(Agent):
    """Runs untrusted Python under CPU, memory, time, process, file and network limits."""

    name = "code-runner"
    version = "1.0.0"
    max_concurrency = 2

    def __init__(self, settings: SandboxSettings | None = None) -> None:
        self.settings = settings or SandboxSettings()
        # Probe for a network namespace now, not on the event loop of the first assignment.
        sandbox.network_namespace_command()

    @capability("code.run_python", tags=("example", "sandbox"))
    async def run_python(self, data: RunIn, ctx: AssignmentContext) -> RunOut:
        """Run a Python program in a sandbox; return its exit status and output."""
        limits = self.settings.limits(data.cpu_seconds, data.wall_seconds)
        await ctx.progress(0.1, f"running (cpu {limits.cpu_seconds}s, wall {limits.wall_seconds}s)")
        try:
            result = await sandbox.run_python(
                data.code,
                files=data.files,
                limits=limits,
                require_network_namespace=self.settings.require_network_namespace,
            )
        except ValueError as exc:
            raise StepFailed(f"files: {exc}", code="invalid_input", retryable=False) from None
        except sandbox.SandboxUnavailable as exc:
            raise StepFailed(str(exc), code="sandbox_unavailable") from None
        return RunOut(
            exit_code=result.exit_code,
            signal=result.signal,
            limit=result.limit,
            stdout=result.stdout,
            stderr=result.stderr,
            truncated=result.truncated,
            refusals=[RefusalOut(kind=r.kind, detail=r.detail) for r in result.refusals],
            files=dict(result.files),
            network_isolation=result.network_isolation,
        )


def main() -> None:
    """Serve the code runner until SIGTERM."""
    run(CodeRunner())


if __name__ == "__main__":  # pragma: no cover - exercised as a subprocess
    main()
