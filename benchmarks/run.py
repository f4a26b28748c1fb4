"""Run the benchmarks: ``python benchmarks/run.py [--only NAME ...] [--profile KIND]``.

Each benchmark starts its own mesh (an orchestrator process and agent processes on
127.0.0.1, mTLS) under ``--folder``, prints what it measured next to a baseline measured in
the same run, and the summary goes to the console as a Markdown table and to
``<folder>/results.json``. ``--profile cprofile`` or ``--profile py-spy`` profiles each
benchmark's orchestrator into ``<folder>/<name>.prof`` or ``<folder>/<name>.pyspy.txt``.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

if __package__ in (None, ""):
    # Run as a script: make `benchmarks` importable from the repository root.
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import agentmesh
from benchmarks import (
    agents1000,
    commit,
    critical_path,
    grpc_floor,
    http_latency,
    matching,
    noop,
    parallel_speedup,
    scale,
    streaming_plan,
    submit_latency,
)
from benchmarks.mesh import DATABASES, ROOT, Profiling, use_database
from benchmarks.report import Measurement, comparison, line, markdown

Benchmark = Callable[[Path, Profiling | None], Awaitable[list[Measurement]]]

BENCHMARKS: dict[str, Benchmark] = {
    critical_path.NAME: critical_path.run,
    parallel_speedup.NAME: parallel_speedup.run,
    submit_latency.NAME: submit_latency.run,
    http_latency.NAME: http_latency.run,
    scale.NAME: scale.run,
    noop.NAME: noop.run,
    streaming_plan.NAME: streaming_plan.run,
    matching.NAME: matching.run,
    agents1000.NAME: agents1000.run,
    commit.NAME: commit.run,
    grpc_floor.NAME: grpc_floor.run,
}


def _profiling(kind: str, py_spy: str, folder: Path, name: str) -> Profiling | None:
    if kind == "cprofile":
        return Profiling("cprofile", folder / f"{name}.prof")
    if kind == "py-spy":
        return Profiling("py-spy", folder / f"{name}.pyspy.txt", py_spy)
    return None


def _revision() -> str:
    """The agentmesh benchmarked: this checkout's commit (``+dirty`` when src/ has changes),
    or the folder it was imported from when that is not this checkout."""
    source = Path(agentmesh.__file__).resolve().parent.parent
    if source != ROOT / "src":
        return f"agentmesh from {source}"
    try:
        head = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(ROOT), "status", "--porcelain", "--", "src"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"commit {head}" + ("+dirty" if dirty else "")


async def main(
    names: list[str], folder: Path, profile: str, py_spy: str, databases: list[str]
) -> list[Measurement]:
    """Run the named benchmarks one after the other, each on every database in turn;
    return every measurement, marked with its database."""
    measurements: list[Measurement] = []
    for name in names:
        for database in databases:
            use_database(database)
            # One database: the layout of before (var/bench/<name>); both: one folder each.
            where = folder / database if len(databases) > 1 else folder
            load = os.getloadavg()[0]
            busy = f"  (busy machine: load {load:.1f} on {os.cpu_count()} CPUs)" if load > 1 else ""
            print(f"\n== {name} on {database}{busy}", flush=True)
            started = time.perf_counter()
            results = await BENCHMARKS[name](where / name, _profiling(profile, py_spy, where, name))
            for measurement in results:
                print(line(measurement))
            print(f"  ({time.perf_counter() - started:.1f}s)", flush=True)
            measurements.extend(dataclasses.replace(m, database=database) for m in results)
    return measurements


def cli() -> None:
    """Parse arguments, run, print the summary and write results.json."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--only",
        nargs="+",
        choices=list(BENCHMARKS),
        default=list(BENCHMARKS),
        metavar="NAME",
        help=f"run only these, in this order ({', '.join(BENCHMARKS)})",
    )
    parser.add_argument(
        "--folder",
        type=Path,
        default=ROOT / "var" / "bench",
        help="certificates, databases, logs, profiles and results.json (default: var/bench)",
    )
    parser.add_argument(
        "--profile",
        choices=["none", "cprofile", "py-spy"],
        default="none",
        help="profile each orchestrator: cProfile in-process (slows it down a lot), or py-spy "
        "sampling from outside (not installed with the project: pip install py-spy)",
    )
    parser.add_argument(
        "--py-spy",
        default=shutil.which("py-spy") or "py-spy",
        metavar="PATH",
        help="the py-spy executable (default: from PATH)",
    )
    parser.add_argument(
        "--database",
        choices=[*DATABASES, "both"],
        default="sqlite",
        help="the orchestrator's database: a SQLite file, a fresh schema on the PostgreSQL "
        "server of AGENTMESH_BENCH_POSTGRES_URL (default: postgres@127.0.0.1:5432/test, "
        "dropped after), or both one after the other, compared side by side",
    )
    parser.add_argument(
        "--agents",
        type=int,
        default=agents1000.AGENTS,
        help=f"agents of {agents1000.NAME} (default {agents1000.AGENTS})",
    )
    parser.add_argument(
        "--steps",
        type=int,
        default=agents1000.STEPS,
        help=f"steps in flight in {agents1000.NAME} (default {agents1000.STEPS})",
    )
    parser.add_argument(
        "--chain",
        type=int,
        default=noop.CHAIN,
        help=f"steps in the chain of {noop.NAME} (default {noop.CHAIN})",
    )
    args = parser.parse_args()
    if args.agents < 1 or args.steps < 1 or args.chain < 1:
        parser.error("--agents, --steps and --chain must be at least 1")
    agents1000.AGENTS, agents1000.STEPS = args.agents, args.steps
    noop.CHAIN = args.chain
    databases = list(DATABASES) if args.database == "both" else [args.database]
    revision = _revision()
    started = time.perf_counter()
    measurements = asyncio.run(main(args.only, args.folder, args.profile, args.py_spy, databases))
    elapsed = time.perf_counter() - started
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    print(f"\n## Results ({when}, {revision}, {', '.join(databases)}, {elapsed:.0f}s)\n")
    print(markdown(measurements))
    if len(databases) > 1:
        print("\n## PostgreSQL beside SQLite\n")
        print(comparison(measurements))
    args.folder.mkdir(parents=True, exist_ok=True)
    (args.folder / "results.json").write_text(
        json.dumps(
            {
                "date": when,
                "agentmesh": revision,
                "cpus": os.cpu_count(),
                "seconds": round(elapsed, 1),
                "python": platform.python_version(),
                "databases": databases,
                "measurements": [m.as_dict() for m in measurements],
            },
            indent=2,
        )
    )
    failed = [m for m in measurements if m.ok is False]
    if failed:
        print(
            f"\n{len(failed)} target(s) missed: "
            + ", ".join(f"{m.benchmark} {m.metric} ({m.database})" for m in failed)
        )


if __name__ == "__main__":
    cli()
