"""The code runner: each limit refuses a hostile program, and the agent goes on serving.

Every program runs in a real sandbox process over a real mTLS Session. The fork bomb is
bounded (children sleep and exit) so that a broken limit cannot take the machine down.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from agentmesh.examples import sandbox
from agentmesh.examples.code_runner import CodeRunner, SandboxSettings
from tests.agent import agent_support
from tests.agent.agent_support import SessionClient, kind_of, output_of
from tests.agent.conftest import OpenSession, StartAgent

pytestmark = pytest.mark.skipif(
    sandbox.network_namespace_command() is None, reason="no network namespace on this machine"
)

FORK_BOMB = """\
import os, time
for _ in range(300):
    if os.fork() == 0:
        time.sleep(5)
        os._exit(0)
print("forked 300 processes")
"""
# bytes(n) comes from calloc, so the pages are never touched: the hog reaches the address-space
# limit in a few hundredths of a CPU second. A bytearray is zeroed page by page, and on a
# busy CI machine those page faults once took longer than the one CPU second the runner
# allows, so the CPU limit stopped the hog before the memory limit could.
MEMORY_HOG = "hog = [bytes(10**7) for _ in range(10_000)]\nprint(len(hog))\n"
ENDLESS_LOOP = "while True:\n    pass\n"
SLEEPER = "import time\ntime.sleep(600)\n"


def _network_program(port: int) -> str:
    return (
        "import socket\n"
        f"socket.create_connection(('127.0.0.1', {port}), timeout=5)\n"
        "print('connected')\n"
    )


def _writer(path: Path) -> str:
    return f"open({str(path)!r}, 'w').write('escaped')\nprint('wrote')\n"


GOOD = (
    "import csv\n"
    "rows = list(csv.DictReader(open('data.csv')))\n"
    "print(sum(int(r['n']) for r in rows))\n"
)


async def _run(session: SessionClient, program: str, **extra: object) -> dict:
    aid = await session.assign("code.run_python", {"code": program, **extra})
    reply = await session.outcome(aid)
    assert kind_of(reply) == "result", reply
    return output_of(reply)


async def _still_serves(session: SessionClient) -> None:
    out = await _run(session, GOOD, files={"data.csv": "n\n1\n2\n39\n"})
    assert out["exit_code"] == 0
    assert out["stdout"] == "42\n"
    assert out["limit"] is None


@pytest.fixture(autouse=True)
def patient_session(monkeypatch: pytest.MonkeyPatch) -> None:
    """A second of CPU can take many seconds of wall time on a busy machine: wait longer
    than the Session helper's default for each reply."""
    monkeypatch.setattr(agent_support, "PATIENCE", 90.0)


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    """A real TCP listener on the host that a sandboxed program must not reach."""
    server = socket.create_server(("127.0.0.1", 0))
    yield server
    server.close()


async def test_each_limit_refuses_and_the_runner_keeps_serving(
    start_agent: StartAgent, open_session: OpenSession, tmp_path: Path, listener: socket.socket
) -> None:
    outside = tmp_path / "escaped.txt"
    runner = CodeRunner(
        SandboxSettings(cpu_seconds=1, memory_mb=256, processes=16, wall_seconds=60)
    )
    port = listener.getsockname()[1]
    async with start_agent(runner, name="code-runner") as server, open_session(server) as session:
        await _still_serves(session)
        found = {}
        for name, program in [
            ("fork bomb", FORK_BOMB),
            ("memory hog", MEMORY_HOG),
            ("endless loop", ENDLESS_LOOP),
            ("network", _network_program(port)),
            ("write outside", _writer(outside)),
        ]:
            found[name] = await _run(session, program)
            await _still_serves(session)
        slept = await _run(session, SLEEPER, wall_seconds=1)
        await _still_serves(session)

    assert {name: out["limit"] for name, out in found.items()} == {
        "fork bomb": "process",
        "memory hog": "memory",
        "endless loop": "cpu",
        "network": "network",
        "write outside": "filesystem",
    }, found
    assert all(out["exit_code"] != 0 for out in found.values())
    assert "forked 300" not in found["fork bomb"]["stdout"]
    assert found["endless loop"]["signal"] in ("SIGXCPU", "SIGKILL")
    assert found["network"]["refusals"][0]["kind"] == "network"
    assert "connected" not in found["network"]["stdout"]
    assert found["write outside"]["refusals"][0] == {
        "kind": "filesystem",
        "detail": f"write {outside}",
    }
    assert not outside.exists()
    assert slept["limit"] == "time"
    assert slept["signal"] == "SIGKILL"


@pytest.mark.parametrize(
    ("program", "limit", "evidence"),
    [
        (FORK_BOMB, "process", "Resource temporarily unavailable"),
        (MEMORY_HOG, "memory", "MemoryError"),
        (ENDLESS_LOOP, "cpu", ""),
        (_network_program(9), "network", "Network is unreachable"),
    ],
)
async def test_the_kernel_limits_hold_without_the_audit_hook(
    program: str, limit: str, evidence: str
) -> None:
    limits = sandbox.Limits(cpu_seconds=2, memory_bytes=256 * 1024 * 1024, processes=16)

    result = await sandbox.run_python(program, limits=limits, audit=False)

    assert result.limit == limit
    assert evidence in result.stderr
    assert not result.refusals


async def test_files_go_in_and_written_files_come_back() -> None:
    program = "text = open('in/words.txt').read()\nopen('out.txt', 'w').write(text.upper())\n"

    result = await sandbox.run_python(program, files={"in/words.txt": "hello"})

    assert result.exit_code == 0
    assert result.files == {"out.txt": "HELLO"}
    assert result.network_isolation == "namespace"


async def test_a_file_name_outside_the_folder_is_refused(
    start_agent: StartAgent, open_session: OpenSession
) -> None:
    async with (
        start_agent(CodeRunner(), name="code-runner") as server,
        open_session(server) as session,
    ):
        aid = await session.assign(
            "code.run_python", {"code": "print(1)", "files": {"../evil.py": "x"}}
        )
        reply = await session.outcome(aid)

    assert kind_of(reply) == "failure"
    assert reply.failure.code == "invalid_input"
    assert "'../evil.py' is not a plain name inside the folder" in reply.failure.message
    assert not reply.failure.retryable


async def test_output_beyond_the_cap_is_cut_and_said_so() -> None:
    limits = sandbox.Limits(output_bytes=1000)

    result = await sandbox.run_python("print('x' * 5000)", limits=limits)

    assert len(result.stdout) == 1000
    assert result.truncated


@pytest.mark.parametrize(
    ("program", "limit", "detail"),
    [
        ("print(open('/etc/hostname').read())", "filesystem", "read /etc/hostname"),
        ("import ctypes", "escape", "import ctypes"),
        ("import subprocess", "process", "import _posixsubprocess"),
        ("import os\nos.system('true')", "process", "os.system"),
        ("import os\nos.remove('/tmp')", "filesystem", "os.remove /tmp"),
    ],
)
async def test_the_audit_hook_refuses_reads_escapes_and_processes(
    program: str, limit: str, detail: str
) -> None:
    result = await sandbox.run_python(program)

    assert result.limit == limit
    assert result.refusals[0].detail == detail
    assert "PermissionError: sandbox:" in result.stderr
    assert result.exit_code == 1
