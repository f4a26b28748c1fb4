"""A benchmark mesh: fresh certificates, an orchestrator process and agent processes.

Everything listens on 127.0.0.1 and talks mTLS, as in production. The orchestrator runs
in its own process (``benchmarks.orchestrator``) so that the load generator in this
process neither shares its event loop nor counts towards its memory; agents run as
``python -m benchmarks.agent`` processes.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

from agentmesh.client import Client
from agentmesh.models import EventKind, Plan, StepState, TaskState
from agentmesh.security import IdentityKind, create_ca, issue

ROOT = Path(__file__).resolve().parent.parent
CLIENT = "bench"
AGENT_MODULE = "benchmarks.agent"
#: Runs ``AGENTMESH_BENCH_AGENT_NAMES`` agents in one process (see benchmarks/agent.py).
AGENT_HOST_MODULE = "benchmarks.agent_host"

#: The databases an orchestrator can benchmark on.
DATABASES = ("sqlite", "postgresql")
#: The shared PostgreSQL server (trust auth); each mesh gets a fresh schema in it.
POSTGRES_URL = os.environ.get(
    "AGENTMESH_BENCH_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
)
#: The database of a Mesh that names none; the runner's ``--database`` sets it.
default_database: str = "sqlite"


def use_database(name: str) -> None:
    """Make ``name`` (one of :data:`DATABASES`) the database of every mesh made from now on."""
    global default_database
    if name not in DATABASES:
        raise ValueError(f"unknown database {name!r}; choose from {', '.join(DATABASES)}")
    default_database = name


async def postgres_execute(statement: str) -> None:
    # Imported here: only a PostgreSQL run needs SQLAlchemy in the benchmark's own process.
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    engine = create_async_engine(POSTGRES_URL)
    try:
        async with engine.begin() as conn:
            await conn.execute(text(statement))
    finally:
        await engine.dispose()


Process = asyncio.subprocess.Process


@dataclass(frozen=True, slots=True)
class Profiling:
    """How to profile the orchestrator process, and where the profile goes."""

    kind: Literal["cprofile", "py-spy"]
    output: Path
    #: The py-spy executable (for ``kind="py-spy"``).
    py_spy: str = "py-spy"


@dataclass(frozen=True, slots=True)
class StepTiming:
    """When the agent really ran a step (its own wall clock, same machine)."""

    agent: str
    started: float
    finished: float


@dataclass(slots=True)
class TaskRun:
    """One task as seen by its submitter: wall-clock times and what the agents reported."""

    task_id: str = ""
    submitted: float = 0.0
    accepted: float = 0.0
    finished: float = 0.0
    #: The final state; None until the final event arrived.
    state: TaskState | None = None
    steps: dict[str, StepTiming] = field(default_factory=dict)
    #: Sequence numbers of the events received, in order of arrival.
    sequences: list[int] = field(default_factory=list)

    @property
    def makespan(self) -> float:
        """Seconds from the SubmitTask call to the arrival of the final event."""
        return self.finished - self.submitted

    @property
    def succeeded(self) -> bool:
        """True when the task ended in SUCCEEDED."""
        return self.state is TaskState.SUCCEEDED

    @property
    def complete(self) -> bool:
        """True when the watcher saw events 1, 2, 3... without a gap, up to a final state."""
        return bool(self.finished) and self.sequences == list(range(1, len(self.sequences) + 1))


def _step_timing(output: Any) -> StepTiming | None:
    if isinstance(output, dict) and {"started", "finished"} <= output.keys():
        return StepTiming(str(output.get("agent", "")), output["started"], output["finished"])
    return None


async def run_task(client: Client, plan: Plan, input: dict[str, Any] | None = None) -> TaskRun:
    """Submit ``plan``, watch it to its final event, and return its timings."""
    run = TaskRun(submitted=time.time())
    run.task_id = await client.submit(plan=plan, input=input or {})
    run.accepted = time.time()
    await watch_task(client, run)
    return run


async def watch_task(client: Client, run: TaskRun) -> None:
    """Follow ``run``'s task to its final event, filling in its state, steps and end time."""
    async for event in client.watch(run.task_id):
        run.sequences.append(event.sequence)
        if event.kind is EventKind.STEP_STATE and event.state == StepState.SUCCEEDED:
            timing = _step_timing(event.output)
            if timing is not None:
                run.steps[event.step_id] = timing
        elif event.kind is EventKind.TASK_STATE and TaskState(event.state).final:
            run.finished = time.time()
            run.state = TaskState(event.state)
            return
    raise RuntimeError(f"the watch of task {run.task_id} ended without a final state")


async def task_states(client: Client) -> Counter[TaskState]:
    """How many of the client's tasks are in each state."""
    states: Counter[TaskState] = Counter()
    token = ""
    while True:
        page = await client.list_tasks(page_size=500, page_token=token)
        states.update(t.state for t in page.tasks)
        token = page.next_page_token
        if not token:
            return states


async def settle(client: Client, within: float = 60) -> Counter[TaskState]:
    """Wait until none of the client's tasks is pending or running; their states then."""
    async with asyncio.timeout(within):
        while True:
            states = await task_states(client)
            if not states.keys() & {TaskState.PENDING, TaskState.RUNNING}:
                return states
            await asyncio.sleep(0.2)


def memory_of(pid: int) -> dict[str, float]:
    """Resident memory of process ``pid`` now (VmRSS) and at its peak (VmHWM), in MiB."""
    values: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0]) / 1024  # kB
    return values


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time process ``pid`` has used so far, in seconds."""
    # The command name (field 2) may hold spaces; the fields after its ")" are fixed.
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def log_times(path: Path, *events: str) -> dict[str, float]:
    """Wall-clock time of the first occurrence of each structlog ``event`` in a JSON log."""
    found: dict[str, float] = {}
    for text in path.read_text(errors="replace").splitlines():
        if not text.startswith("{"):
            continue
        record = json.loads(text)
        event = record.get("event")
        if event in events and event not in found:
            stamp = datetime.fromisoformat(record["timestamp"].replace("Z", "+00:00"))
            found[event] = stamp.timestamp()
    return found


async def _stop(
    processes: Sequence[Process], grace: float, sig: signal.Signals = signal.SIGTERM
) -> None:
    """Signal (SIGTERM: agents drain and deregister), then SIGKILL whatever lingers."""
    for process in processes:
        if process.returncode is None:
            process.send_signal(sig)

    async def reap(process: Process) -> None:
        try:
            async with asyncio.timeout(grace):
                await process.wait()
        except TimeoutError:
            process.kill()
            await process.wait()

    await asyncio.gather(*(reap(p) for p in processes))


def _files(folder: Path, pattern: str) -> set[Path]:
    return set(folder.glob(pattern))


class Mesh:
    """``async with Mesh(folder) as mesh:`` an orchestrator process on fresh certificates.

    Agents are started with :meth:`start_agents`; leaving the block stops every process
    this mesh started (agents first, so that they deregister from a live orchestrator).
    """

    def __init__(
        self,
        folder: Path,
        *,
        profiling: Profiling | None = None,
        http: bool = False,
        database: str | None = None,
        settings: Mapping[str, str] | None = None,
    ) -> None:
        self.folder = folder
        #: "sqlite" (a file in ``folder``) or "postgresql" (a fresh schema, dropped after).
        self.database = database or default_database
        if self.database not in DATABASES:
            raise ValueError(f"unknown database {self.database!r}")
        self._schema = ""
        #: More ``AGENTMESH_*`` settings of the orchestrator (e.g. a model planner's, or
        #: longer agent timeouts).
        self._settings = dict(settings or {})
        #: Serve the HTTP API too (on :attr:`http_port`).
        self._http = http
        self.http_port = 0
        self.certs = folder / "certs"
        self._profiling = profiling
        self._orchestrator: Process | None = None
        self._sampler: Process | None = None
        self._agents: dict[str, Process] = {}
        self.port = 0
        self._statements_file = folder / "statements.json"

    @property
    def address(self) -> str:
        """The orchestrator's ``host:port``."""
        return f"127.0.0.1:{self.port}"

    @property
    def orchestrator_pid(self) -> int:
        """Process id of the orchestrator."""
        assert self._orchestrator is not None
        return self._orchestrator.pid

    def agents_cpu_seconds(self) -> float:
        """User plus system CPU time the agent processes have used so far, in seconds."""
        return sum(cpu_seconds(p.pid) for p in self._agents.values() if p.returncode is None)

    async def __aenter__(self) -> Mesh:
        shutil.rmtree(self.folder, ignore_errors=True)
        (self.folder / "logs").mkdir(parents=True)
        create_ca(self.certs, "agentmesh.bench")
        issue(self.certs, IdentityKind.ORCHESTRATOR, "orchestrator")
        issue(self.certs, IdentityKind.CLIENT, CLIENT)
        try:
            if self.database == "postgresql":
                self._schema = f"bench_{uuid.uuid4().hex[:12]}"
                await postgres_execute(f'CREATE SCHEMA "{self._schema}"')
            await self._start_orchestrator()
        except BaseException:
            await self._stop_all()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._stop_all()

    async def _stop_all(self) -> None:
        await _stop(list(self._agents.values()), grace=15)
        self._agents.clear()
        if self._sampler is not None:
            # SIGINT makes py-spy write what it sampled and exit.
            await _stop([self._sampler], grace=30, sig=signal.SIGINT)
            self._sampler = None
        if self._orchestrator is not None:
            await _stop([self._orchestrator], grace=15)
            self._orchestrator = None
        if self._schema:
            await postgres_execute(f'DROP SCHEMA "{self._schema}" CASCADE')
            self._schema = ""

    def _database_env(self) -> dict[str, str]:
        if self.database == "postgresql":
            return {
                "AGENTMESH_DATABASE_URL": POSTGRES_URL,
                "AGENTMESH_DATABASE_SCHEMA": self._schema,
            }
        return {"AGENTMESH_DATABASE_URL": f"sqlite+aiosqlite:///{self.folder / 'mesh.db'}"}

    def _env(self, **extra: str) -> dict[str, str]:
        env = {**os.environ, **extra}
        # Agents and orchestrator find `benchmarks` and `agentmesh` whatever the caller's cwd.
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p
        )
        return env

    async def _start_orchestrator(self) -> None:
        port_file = self.folder / "orchestrator.port"
        env = self._env(
            AGENTMESH_LISTEN="127.0.0.1:0",
            AGENTMESH_CERTS_DIR=str(self.certs),
            AGENTMESH_TRUST_DOMAIN="agentmesh.bench",
            AGENTMESH_REDIS_URL=os.environ.get("AGENTMESH_REDIS_URL", ""),
            AGENTMESH_BENCH_PORT_FILE=str(port_file),
            AGENTMESH_BENCH_STATEMENTS=str(self._statements_file),
            **self._database_env(),
            **self._settings,
        )
        http_port_file = self.folder / "orchestrator.http-port"
        if self._http:
            env["AGENTMESH_HTTP_LISTEN"] = "127.0.0.1:0"
            env["AGENTMESH_BENCH_HTTP_PORT_FILE"] = str(http_port_file)
        profiling = self._profiling
        if profiling is not None and profiling.kind == "cprofile":
            env["AGENTMESH_BENCH_PROFILE"] = str(profiling.output)
        with (self.folder / "logs" / "orchestrator.log").open("wb") as log:
            self._orchestrator = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "benchmarks.orchestrator",
                env=env,
                cwd=ROOT,
                stdout=log,
                stderr=asyncio.subprocess.STDOUT,
            )
        async with asyncio.timeout(30):
            while not port_file.exists():
                if self._orchestrator.returncode is not None:
                    raise RuntimeError(
                        f"the orchestrator exited with {self._orchestrator.returncode}; "
                        f"see {self.folder / 'logs' / 'orchestrator.log'}"
                    )
                await asyncio.sleep(0.05)
        self.port = int(port_file.read_text())
        if self._http:
            self.http_port = int(http_port_file.read_text())
        if profiling is not None and profiling.kind == "py-spy":
            with (self.folder / "logs" / "py-spy.log").open("wb") as log:
                self._sampler = await asyncio.create_subprocess_exec(
                    profiling.py_spy,
                    "record",
                    "--pid",
                    str(self._orchestrator.pid),
                    "--format",
                    "raw",
                    "--rate",
                    "100",
                    "--nonblocking",
                    "--output",
                    str(profiling.output),
                    stdout=log,
                    stderr=asyncio.subprocess.STDOUT,
                )

    async def trace_memory(self, within: float = 120) -> Path | None:
        """Have the orchestrator write where its Python memory is (see benchmarks/orchestrator.py)
        and return that file; None unless ``AGENTMESH_BENCH_TRACEMALLOC`` is set."""
        folder = os.environ.get("AGENTMESH_BENCH_TRACEMALLOC", "")
        if not folder:
            return None
        pattern = f"tracemalloc-{self.orchestrator_pid}-*.txt"
        before = _files(Path(folder), pattern)
        os.kill(self.orchestrator_pid, signal.SIGUSR2)
        async with asyncio.timeout(within):
            while True:
                written = _files(Path(folder), pattern) - before
                if written:
                    return written.pop()
                await asyncio.sleep(0.2)

    async def statements(self, within: float = 60) -> Counter[str]:
        """The SQL statements the orchestrator has run so far, by verb (COMMIT included):
        see benchmarks/orchestrator.py."""
        self._statements_file.unlink(missing_ok=True)
        os.kill(self.orchestrator_pid, signal.SIGUSR1)
        async with asyncio.timeout(within):  # written by another process: poll for it
            while True:
                if self._statements_file.exists():
                    return Counter(json.loads(self._statements_file.read_text()))
                await asyncio.sleep(0.05)

    async def start_agents(self, names: Iterable[str], *, concurrency: int = 64) -> None:
        """Issue certificates for and start one ``benchmarks.agent`` process per name."""
        names = list(names)
        for name in names:
            issue(self.certs, IdentityKind.AGENT, name)
        for name in names:
            env = self._env(
                AGENTMESH_AGENT_NAME=name,
                AGENTMESH_AGENT_ORCHESTRATORS=f'["{self.address}"]',
                AGENTMESH_AGENT_CERTS_DIR=str(self.certs),
                AGENTMESH_AGENT_LISTEN="127.0.0.1:0",
                AGENTMESH_BENCH_CONCURRENCY=str(concurrency),
            )
            await self._spawn_agent(name, AGENT_MODULE, env)

    async def start_agent_hosts(
        self,
        hosts: dict[str, Sequence[str]],
        *,
        concurrency: int,
        env: dict[str, str] | None = None,
    ) -> None:
        """Start one ``benchmarks.agent_host`` process per host, serving its agents' names.

        Every agent still has its own certificate, gRPC server, registration and Session;
        only the process (and its event loop) is shared. ``env`` is added to each process's.
        """
        for names in hosts.values():
            for name in names:
                issue(self.certs, IdentityKind.AGENT, name)
        for host, names in hosts.items():
            host_env = self._env(
                AGENTMESH_BENCH_AGENT_NAMES=",".join(names),
                AGENTMESH_AGENT_ORCHESTRATORS=f'["{self.address}"]',
                AGENTMESH_AGENT_CERTS_DIR=str(self.certs),
                AGENTMESH_AGENT_LISTEN="127.0.0.1:0",
                AGENTMESH_BENCH_CONCURRENCY=str(concurrency),
                **(env or {}),
            )
            await self._spawn_agent(host, AGENT_HOST_MODULE, host_env)

    async def _spawn_agent(self, key: str, module: str, env: dict[str, str]) -> None:
        """``python -m module`` as agent process ``key``, logging to its agent log."""
        with self.agent_log(key).open("wb") as log:
            self._agents[key] = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                module,
                env=env,
                cwd=ROOT,
                stdout=log,
                stderr=asyncio.subprocess.STDOUT,
            )

    async def stop_agents(self, names: Iterable[str]) -> None:
        """SIGTERM the named agents and wait for them to exit."""
        await _stop([self._agents.pop(name) for name in names], grace=15)

    def agent_log(self, name: str) -> Path:
        """Where agent ``name`` logs."""
        return self.folder / "logs" / f"{name}.log"

    def signal_agents(self, sig: signal.Signals) -> None:
        """Send ``sig`` to every running agent (or agent host) process."""
        for process in self._agents.values():
            if process.returncode is None:
                process.send_signal(sig)

    def dead_agents(self) -> list[str]:
        """Agent (or agent host) processes that have exited."""
        return [n for n, p in self._agents.items() if p.returncode is not None]

    def agent_pids(self) -> list[int]:
        """Process ids of the running agents."""
        return [p.pid for p in self._agents.values() if p.returncode is None]

    async def wait_for_agents(self, client: Client, count: int, *, within: float = 60) -> None:
        """Wait until exactly ``count`` agents are listed as connected."""
        async with asyncio.timeout(within):
            while True:
                agents = await client.list_agents()
                if sum(a.connected for a in agents) == count:
                    return
                dead = [n for n, p in self._agents.items() if p.returncode is not None]
                if dead:
                    raise RuntimeError(f"agents exited: {dead}; see {self.folder / 'logs'}")
                await asyncio.sleep(0.05)

    def client(self) -> Client:
        """A client of the orchestrator holding the benchmark client certificate."""
        return Client(self.address, self.certs, CLIENT)
