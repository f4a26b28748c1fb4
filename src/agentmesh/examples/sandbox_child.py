"""The first code a sandboxed program's interpreter runs (``python -I -S sandbox_child.py``).

Started by :mod:`agentmesh.examples.sandbox` in a fresh process, never imported by agentmesh:
it sets the kernel limits, joins the pids cgroup, installs the audit hook, then runs
``main.py`` of its folder. Only the standard library is used, and nothing is imported after the
hook is in place that the program could not import itself.

Argument: a JSON object with ``folder``, ``cpu_seconds``, ``memory_bytes``, ``processes``,
``file_bytes``, ``open_files``, ``cgroup`` (a cgroup folder to join, or "") and ``audit``.
"""

import json
import os
import resource
import sys
from typing import Any

#: Written to stderr before each refusal, so the parent can tell which limit refused.
MARK = "agentmesh-sandbox: refused "

_NETWORK = ("socket.", "ssl.", "urllib.Request", "http.client.", "ftplib.", "smtplib.")
_PROCESS = (
    "os.fork",
    "os.forkpty",
    "os.posix_spawn",
    "os.spawn",
    "os.exec",
    "os.system",
    "subprocess.Popen",
    "os.kill",
    "os.killpg",
    "pty.spawn",
)
#: Ways around the hook: calling C directly, rewriting frames or code, adding hooks.
_ESCAPES = (
    "ctypes.",
    "sys.addaudithook",
    "sys._current_frames",
    "gc.get_objects",
    "gc.get_referrers",
    "gc.get_referents",
    "function.__new__",
    "code.__new__",
    "sys.settrace",
    "sys.setprofile",
)
#: Modules refused outright, and the kind of refusal.
_BLOCKED_IMPORTS = {
    "ctypes": "escape",
    "_ctypes": "escape",
    "_posixsubprocess": "process",
    "socket": "network",
    "_socket": "network",
    "ssl": "network",
    "_ssl": "network",
}
#: os.* events whose arguments at these positions are paths written to.
_WRITES = {
    "os.remove": (0,),
    "os.rename": (0, 1),
    "os.mkdir": (0,),
    "os.rmdir": (0,),
    "os.chmod": (0,),
    "os.chown": (0,),
    "os.symlink": (1,),
    "os.link": (0, 1),
    "os.truncate": (0,),
    "os.utime": (0,),
    "shutil.rmtree": (0,),
}
_READS = {"os.listdir": (0,), "os.scandir": (0,), "os.chdir": (0,), "glob.glob": (0,)}
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC


def _refuse(kind: str, detail: str) -> None:
    os.write(2, f"\n{MARK}{kind}: {detail}\n".encode(errors="replace"))
    raise PermissionError(f"sandbox: {kind} is not allowed ({detail})")


def _inside(path: Any, roots: tuple[str, ...]) -> bool:
    if isinstance(path, int) or path is None:
        return True  # an open descriptor (or the current folder): checked when it was opened
    if isinstance(path, bytes):
        path = os.fsdecode(path)
    real = os.path.realpath(path if isinstance(path, str) else os.fspath(path))
    return any(real == root or real.startswith(root + os.sep) for root in roots)


def install_hook(folder: str, readable: tuple[str, ...]) -> None:
    """Refuse network, new processes, escapes, and file access outside the allowed folders."""
    writable = (folder,)
    readable = (folder, *readable)

    def hook(event: str, args: tuple[Any, ...]) -> None:
        if event.startswith(_NETWORK):
            _refuse("network", event)
        elif event.startswith(_PROCESS):
            _refuse("process", event)
        elif event.startswith(_ESCAPES):
            _refuse("escape", event)
        elif event == "import" and (kind := _BLOCKED_IMPORTS.get(str(args[0]).split(".")[0])):
            _refuse(kind, f"import {args[0]}")
        elif event == "open":
            path, mode, flags = args
            writing = bool(int(flags or 0) & _WRITE_FLAGS) or (
                isinstance(mode, str) and any(c in mode for c in "wax+")
            )
            if not _inside(path, writable if writing else readable):
                _refuse("filesystem", f"{'write' if writing else 'read'} {path}")
        elif event in _WRITES:
            for i in _WRITES[event]:
                if i < len(args) and not _inside(args[i], writable):
                    _refuse("filesystem", f"{event} {args[i]}")
        elif event in _READS:
            for i in _READS[event]:
                if i < len(args) and not _inside(args[i], readable):
                    _refuse("filesystem", f"{event} {args[i]}")

    sys.addaudithook(hook)


def set_limits(config: dict[str, Any]) -> None:
    """The kernel's limits: they hold whatever the program does, the hook or not."""

    def cap(which: int, value: int, hard: int | None = None) -> None:
        resource.setrlimit(which, (value, value if hard is None else hard))

    cpu = int(config["cpu_seconds"])
    # SIGXCPU at the soft limit, SIGKILL one second later if the program ignores it.
    cap(resource.RLIMIT_CPU, cpu, cpu + 1)
    cap(resource.RLIMIT_AS, int(config["memory_bytes"]))
    cap(resource.RLIMIT_FSIZE, int(config["file_bytes"]))
    cap(resource.RLIMIT_NOFILE, int(config["open_files"]))
    cap(resource.RLIMIT_CORE, 0)
    # Binds users other than root only (the kernel exempts root); the cgroup covers root.
    cap(resource.RLIMIT_NPROC, int(config["processes"]))


def main() -> None:
    """Limit this process, then run the program."""
    config = json.loads(sys.argv[1])
    folder = os.path.realpath(str(config["folder"]))
    if config.get("cgroup"):
        with open(os.path.join(str(config["cgroup"]), "cgroup.procs"), "w") as procs:
            procs.write(str(os.getpid()))
    set_limits(config)
    os.chdir(folder)
    readable = tuple(os.path.realpath(p) for p in sys.path if p)
    # This file too: a traceback through exec() below quotes it.
    readable += (
        os.path.realpath(__file__),
        "/dev/null",
        "/dev/urandom",
        "/usr/share/zoneinfo",
        "/etc/localtime",
    )
    sys.argv = ["main.py"]
    sys.path.insert(0, folder)
    with open(os.path.join(folder, "main.py"), encoding="utf-8") as source:
        code = compile(source.read(), "main.py", "exec")
    if config.get("audit", True):
        install_hook(folder, readable)
    del config, source
    exec(code, {"__name__": "__main__", "__file__": "main.py", "__builtins__": __builtins__})


if __name__ == "__main__":
    main()
