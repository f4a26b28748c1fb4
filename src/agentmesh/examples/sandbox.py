"""Run a Python program in a separate, limited process: the code runner's engine.

Each run gets a fresh temporary folder (the program's ``main.py`` and input files), and a
new interpreter started by :mod:`agentmesh.examples.sandbox_child` with two layers of limits:

- **the kernel's**, which hold whatever the program does: ``RLIMIT_CPU`` (CPU seconds),
  ``RLIMIT_AS`` (address space), ``RLIMIT_FSIZE`` (largest file written), ``RLIMIT_NOFILE``,
  ``RLIMIT_NPROC`` (processes; the kernel exempts root, so when the agent runs as root the
  run joins a ``pids`` cgroup with ``pids.max`` instead, where one is writable), a new network
  namespace with no interface but a down loopback (``unshare -n``, or ``unshare -rn`` through
  a user namespace when not root; where neither works the run is refused unless
  ``require_network_namespace`` is off), and a wall-clock deadline after which the whole
  process group is killed;
- **the interpreter's**: an audit hook (PEP 578) that refuses sockets, new processes,
  ``ctypes``, and opening files outside the folder (writes) or outside the folder and the
  standard library (reads). PEP 578 hooks are not a security boundary: code that reaches C
  (a crafted extension module, an interpreter bug) gets past them. They make refusals clear
  and early; the kernel layer is what contains a hostile program.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from agentmesh.examples import sandbox_child

#: Where a run's pids cgroup may be made (cgroup v1 ``pids`` hierarchy, or cgroup v2).
CGROUP_ROOTS = (Path("/sys/fs/cgroup/pids"), Path("/sys/fs/cgroup/unified"), Path("/sys/fs/cgroup"))
#: The user the parent's ``nobody`` never is: see ``RLIMIT_NPROC`` above.
_ROOT = 0

Limit = Literal["cpu", "memory", "time", "file_size", "network", "process", "filesystem", "escape"]


#: The audit hook's refusal kinds, as limits.
_HOOK_LIMITS: dict[str, Limit] = {
    "network": "network",
    "process": "process",
    "filesystem": "filesystem",
    "escape": "escape",
}


@dataclass(frozen=True, slots=True)
class Limits:
    """What one run may use."""

    cpu_seconds: int = 5
    memory_bytes: int = 512 * 1024 * 1024
    wall_seconds: float = 30.0
    processes: int = 16
    file_bytes: int = 16 * 1024 * 1024
    open_files: int = 64
    #: Most bytes kept of stdout and of stderr each (the rest is dropped, ``truncated`` set).
    output_bytes: int = 64 * 1024


@dataclass(frozen=True, slots=True)
class Refusal:
    """Something the audit hook refused."""

    kind: str
    detail: str


@dataclass(frozen=True, slots=True)
class RunResult:
    """How a run ended, and what it printed."""

    exit_code: int
    stdout: str
    stderr: str
    #: The signal that ended the program (e.g. ``SIGXCPU``), if one did.
    signal: str | None = None
    #: The limit that stopped the program, when one did.
    limit: Limit | None = None
    refusals: tuple[Refusal, ...] = ()
    truncated: bool = False
    #: Text files the program left in its folder (not main.py, not the inputs).
    files: Mapping[str, str] = field(default_factory=dict)
    #: How the network was cut: ``namespace`` (kernel) or ``audit-hook`` only.
    network_isolation: str = "namespace"


class SandboxUnavailable(RuntimeError):
    """This machine cannot give the isolation that was asked for."""


@functools.cache
def network_namespace_command() -> tuple[str, ...] | None:
    """The ``unshare`` prefix that gives a process a network namespace here, or None."""
    unshare = shutil.which("unshare")
    if unshare is None:
        return None
    for prefix in ((unshare, "-n"), (unshare, "-r", "-n")):
        probe = subprocess.run([*prefix, "true"], capture_output=True, timeout=30, check=False)
        if probe.returncode == 0:
            return prefix
    return None


def _make_cgroup(processes: int) -> Path | None:
    """A fresh pids cgroup allowing ``processes`` tasks, where one can be made (root only)."""
    if os.geteuid() != _ROOT:
        return None
    for root in CGROUP_ROOTS:
        if not (root / "cgroup.procs").exists():
            continue
        group = root / f"agentmesh-sandbox-{uuid.uuid4().hex[:12]}"
        try:
            group.mkdir()
            (group / "pids.max").write_text(str(processes))
        except OSError:
            with contextlib.suppress(OSError):
                group.rmdir()
            continue
        return group
    return None


async def _read_capped(stream: asyncio.StreamReader, cap: int) -> tuple[bytes, bool]:
    kept = bytearray()
    dropped = False
    while chunk := await stream.read(65536):
        room = cap - len(kept)
        kept += chunk[:room]
        dropped = dropped or len(chunk) > room
    return bytes(kept), dropped


def _signal_name(code: int) -> str | None:
    if code >= 0:
        return None
    with contextlib.suppress(ValueError):
        return signal.Signals(-code).name
    return f"signal {-code}"


def _which_limit(
    code: int, timed_out: bool, stderr: str, refusals: tuple[Refusal, ...]
) -> Limit | None:
    if timed_out:
        return "time"
    if code == -signal.SIGXCPU or (code == -signal.SIGKILL and "MemoryError" not in stderr):
        return "cpu"  # SIGKILL: the hard CPU limit, one second after an ignored SIGXCPU
    if code == -signal.SIGXFSZ or "[Errno 27] File too large" in stderr:
        return "file_size"  # Python ignores SIGXFSZ, so the write fails with EFBIG instead
    if refusals:
        return _HOOK_LIMITS.get(refusals[0].kind)
    if "MemoryError" in stderr:
        return "memory"
    if "BlockingIOError" in stderr and "Resource temporarily unavailable" in stderr:
        return "process"  # fork refused by RLIMIT_NPROC or pids.max
    if "[Errno 101] Network is unreachable" in stderr:
        return "network"  # the namespace has no route anywhere
    return None


def _refusals(stderr: str) -> tuple[Refusal, ...]:
    found = []
    for line in stderr.splitlines():
        if line.startswith(sandbox_child.MARK):
            kind, _, detail = line.removeprefix(sandbox_child.MARK).partition(": ")
            found.append(Refusal(kind, detail))
    return tuple(found)


def _left_files(folder: Path, inputs: set[str], cap: int) -> dict[str, str]:
    files: dict[str, str] = {}
    for path in sorted(folder.rglob("*")):
        name = path.relative_to(folder).as_posix()
        if path.is_file() and not path.is_symlink() and name not in inputs and len(files) < 16:
            with contextlib.suppress(UnicodeDecodeError, OSError):
                if path.stat().st_size <= cap:
                    files[name] = path.read_text(encoding="utf-8")
    return files


def _make_folder(code: str, files: Mapping[str, str]) -> Path:
    folder = Path(os.path.realpath(tempfile.mkdtemp(prefix="agentmesh-sandbox-")))
    try:
        for name, text in files.items():
            target = (folder / name).resolve()
            if name == "main.py" or not target.is_relative_to(folder) or target == folder:
                raise ValueError(f"file name {name!r} is not a plain name inside the folder")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text, encoding="utf-8")
        (folder / "main.py").write_text(code, encoding="utf-8")
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return folder


async def run_python(
    code: str,
    *,
    files: Mapping[str, str] | None = None,
    limits: Limits = Limits(),  # frozen: one shared default is safe
    audit: bool = True,
    require_network_namespace: bool = True,
) -> RunResult:
    """Run ``code`` as ``main.py`` in a fresh folder holding ``files`` (name → text).

    Raises :class:`SandboxUnavailable` when no network namespace can be made and
    ``require_network_namespace`` is set, and ``ValueError`` for a file name that would land
    outside the folder. ``audit=False`` leaves the audit hook out, to show the kernel limits
    alone.
    """
    namespace = network_namespace_command()
    if namespace is None and require_network_namespace:
        raise SandboxUnavailable("no network namespace: 'unshare -n' and 'unshare -rn' both fail")
    inputs = dict(files or {})
    folder = _make_folder(code, inputs)
    group = _make_cgroup(limits.processes)
    try:
        config = {
            "folder": str(folder),
            "cpu_seconds": limits.cpu_seconds,
            "memory_bytes": limits.memory_bytes,
            "processes": limits.processes,
            "file_bytes": limits.file_bytes,
            "open_files": limits.open_files,
            "cgroup": str(group or ""),
            "audit": audit,
        }
        command = [
            *(namespace or ()),
            sys.executable,
            "-I",  # no environment variables, no user site, no script folder on sys.path
            "-S",  # no site: only the standard library is importable
            "-B",  # no .pyc writes into the (read-only for it) standard library
            sandbox_child.__file__,
            json.dumps(config),
        ]
        process = await asyncio.create_subprocess_exec(
            *command,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            cwd=folder,
            env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
            start_new_session=True,  # its own process group, killed as one
        )
        assert process.stdout is not None
        assert process.stderr is not None
        reading = asyncio.gather(
            _read_capped(process.stdout, limits.output_bytes),
            _read_capped(process.stderr, limits.output_bytes),
        )
        timed_out = False
        try:
            async with asyncio.timeout(limits.wall_seconds):
                await process.wait()
        except TimeoutError:
            timed_out = True
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)  # the program and anything it forked
            await process.wait()
        (out, out_cut), (err, err_cut) = await reading
        stderr = err.decode(errors="replace")
        refusals = _refusals(stderr)
        code_ = process.returncode if process.returncode is not None else -signal.SIGKILL
        return RunResult(
            exit_code=code_,
            stdout=out.decode(errors="replace"),
            stderr=stderr,
            signal=_signal_name(code_),
            limit=_which_limit(code_, timed_out, stderr, refusals),
            refusals=refusals,
            truncated=out_cut or err_cut,
            files=_left_files(folder, {*inputs, "main.py"}, limits.output_bytes),
            network_isolation="namespace" if namespace else "audit-hook",
        )
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        if group is not None:
            await _remove_cgroup(group)


async def _remove_cgroup(group: Path) -> None:
    # The kernel frees the group only once its last task is reaped; killpg above did that
    # for the process group, stragglers that left it are killed here.
    with contextlib.suppress(OSError):
        for pid in (group / "cgroup.procs").read_text().split():
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid), signal.SIGKILL)
    for _ in range(100):
        try:
            os.rmdir(group)
            return
        except OSError:
            await asyncio.sleep(0.05)
