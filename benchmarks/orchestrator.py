"""An orchestrator process for the benchmarks: ``python -m benchmarks.orchestrator``.

Configured like ``agentmesh serve`` (``AGENTMESH_*`` variables), but it may listen on
port 0: once serving it writes the bound port to ``AGENTMESH_BENCH_PORT_FILE`` (and that of
the HTTP API, when ``AGENTMESH_HTTP_LISTEN`` is set, to ``AGENTMESH_BENCH_HTTP_PORT_FILE``). With
``AGENTMESH_BENCH_PROFILE=<file>`` it runs under cProfile and writes the stats there
when it stops (SIGTERM or SIGINT). With ``AGENTMESH_BENCH_TRACEMALLOC=<folder>`` it traces
Python allocations (tracemalloc) and, on SIGUSR2, writes where the live memory was allocated
to ``<folder>/tracemalloc-<pid>-<n>.txt``, next to the process's RSS: what tracemalloc does not
see (gRPC C-core, OpenSSL, SQLite) is the difference. With ``AGENTMESH_BENCH_STATEMENTS=<file>``
it counts the SQL statements it runs by verb (SELECT, INSERT, ...; a transaction's COMMIT
counted too) and, on SIGUSR1, writes the counts so far to that file as JSON.
"""

from __future__ import annotations

import asyncio
import cProfile
import gc
import json
import os
import signal
import sys
import tracemalloc
from collections import Counter
from pathlib import Path
from typing import Any

from agentmesh.config import Settings
from agentmesh.logs import configure_logging
from agentmesh.orchestrator import Orchestrator


def _announce_http(port: int) -> None:
    http_port_file = os.environ.get("AGENTMESH_BENCH_HTTP_PORT_FILE", "")
    if http_port_file:
        Path(http_port_file).write_text(str(port))


#: Frames kept per traced allocation: enough to see which of our lines made a gRPC or
#: protobuf object, few enough that tracing does not double the process's memory.
TRACE_FRAMES = 5


def _rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _dump_memory(folder: Path, count: list[int]) -> None:
    """Write where the traced memory lives now: by line, by file and by full traceback."""
    count[0] += 1
    before, _ = tracemalloc.get_traced_memory()
    unreachable = gc.collect()  # what follows is what is alive, not garbage not yet collected
    snapshot = tracemalloc.take_snapshot().filter_traces(
        [tracemalloc.Filter(False, tracemalloc.__file__)]
    )
    traced, peak = tracemalloc.get_traced_memory()
    lines = [
        f"VmRSS {_rss_mib():.1f} MiB; traced {traced / 2**20:.1f} MiB (peak {peak / 2**20:.1f});"
        f" {before / 2**20:.1f} MiB before a full collection freed {unreachable} objects",
        "",
        "== live objects the collector tracks, by type",
    ]
    types = Counter(type(o).__qualname__ for o in gc.get_objects())
    lines += [f"{n:9d} {name}" for name, n in types.most_common(40)]
    lines += ["", "== by file"]
    for stat in snapshot.statistics("filename")[:40]:
        lines.append(f"{stat.size / 2**20:8.2f} MiB {stat.count:9d} {stat.traceback[0].filename}")
    lines += ["", "== by line"]
    for stat in snapshot.statistics("lineno")[:60]:
        frame = stat.traceback[0]
        lines.append(
            f"{stat.size / 2**20:8.2f} MiB {stat.count:9d} {frame.filename}:{frame.lineno}"
        )
    lines += ["", "== by traceback"]
    for stat in snapshot.statistics("traceback")[:25]:
        lines.append(f"{stat.size / 2**20:8.2f} MiB {stat.count:9d}")
        lines += [f"    {line}" for line in stat.traceback.format(most_recent_first=True)]
    out = folder / f"tracemalloc-{os.getpid()}-{count[0]}.txt"
    out.write_text("\n".join(lines) + "\n")


def _count_statements() -> Counter[str]:
    """Count every SQL statement (and commit) any engine of this process runs."""
    # Imported here: only a counting run needs SQLAlchemy's event API.
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    counts: Counter[str] = Counter()

    def executed(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        counts[statement.lstrip().split(None, 1)[0].upper()] += 1

    def committed(_conn: Any) -> None:
        counts["COMMIT"] += 1

    event.listen(Engine, "before_cursor_execute", executed)
    event.listen(Engine, "commit", committed)
    return counts


def _write_atomically(out: Path, text: str) -> None:
    """Write ``out`` whole: the benchmark, polling for it, never reads half a file."""
    partial = out.with_suffix(".partial")
    partial.write_text(text)
    partial.replace(out)


def _write_statements(out: Path, counts: Counter[str]) -> None:
    _write_atomically(out, json.dumps(dict(counts)))


async def serve(port_file: Path) -> None:
    """Serve until SIGTERM/SIGINT, announcing the port through ``port_file``."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    trace_folder = os.environ.get("AGENTMESH_BENCH_TRACEMALLOC", "")
    if trace_folder:
        dumps = [0]
        loop.add_signal_handler(signal.SIGUSR2, _dump_memory, Path(trace_folder), dumps)
    statements_file = os.environ.get("AGENTMESH_BENCH_STATEMENTS", "")
    if statements_file:
        counts = _count_statements()
        loop.add_signal_handler(signal.SIGUSR1, _write_statements, Path(statements_file), counts)
    async with Orchestrator(Settings()) as orchestrator:
        _announce_http(orchestrator.http_port)  # first: the port file says both are there
        _write_atomically(port_file, str(orchestrator.port))
        await stop.wait()


def main() -> None:
    """Entry point; see the module docstring."""
    configure_logging(os.environ.get("AGENTMESH_BENCH_LOG_LEVEL", "info"), stream=sys.stderr)
    port_file = Path(os.environ["AGENTMESH_BENCH_PORT_FILE"])
    profile = os.environ.get("AGENTMESH_BENCH_PROFILE", "")
    trace_folder = os.environ.get("AGENTMESH_BENCH_TRACEMALLOC", "")
    if trace_folder:
        Path(trace_folder).mkdir(parents=True, exist_ok=True)
        tracemalloc.start(TRACE_FRAMES)
    if not profile:
        asyncio.run(serve(port_file))
        return
    profiler = cProfile.Profile()
    profiler.enable()
    try:
        asyncio.run(serve(port_file))
    finally:
        profiler.disable()
        profiler.dump_stats(profile)


if __name__ == "__main__":
    main()
