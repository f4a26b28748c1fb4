"""grpc_floor: what grpcio's asyncio API costs a server per call, with no work behind it.

The floor under every figure of a task's way in and out: a server process serving the
standard health service over mutual TLS, whose ``Check`` (unary) and ``Watch`` (a server
stream, here of three messages) do nothing, called ``CALLS`` times by this process over
``CHANNELS`` channels with at most ``IN_FLIGHT`` calls at once, as the 500 small tasks of
``noop`` call ``SubmitTask`` and ``WatchTask``. Reported: calls per second and the server's
CPU per call (from ``/proc``), best of ``ROUNDS``. A task submitted and watched to its end
is at least one such unary call and one such stream, so ``1 / (unary + stream)`` CPU is how
many tasks a second one core could take in, were the orchestrator free. :mod:`benchmarks.noop`
prints its CPU per task beside that sum, measured in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from agentmesh.security import CertFiles, IdentityKind, create_ca, issue
from agentmesh.security.tls import channel_credentials, server_credentials
from benchmarks.mesh import Profiling, cpu_seconds
from benchmarks.report import Measurement

NAME = "grpc_floor"
CALLS = 3000
CHANNELS = 10
IN_FLIGHT = 500
#: Messages in each server stream. A small task's watch got four in a count of 2026-12-04
#: (286 of 300 tasks); three keeps this a floor under it.
STREAM_MESSAGES = 3
ROUNDS = 2

_SERVING = health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.SERVING)


class _Nothing(health_pb2_grpc.HealthServicer):
    """Answers at once: what is left is gRPC's own work."""

    async def Check(
        self, request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext
    ) -> health_pb2.HealthCheckResponse:
        return _SERVING

    async def Watch(  # type: ignore[override]
        self, request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[health_pb2.HealthCheckResponse]:
        for _ in range(STREAM_MESSAGES):
            yield _SERVING


@dataclass(frozen=True, slots=True)
class Floor:
    """Server CPU per call (ms) and calls per second, unary and streaming."""

    unary_ms: float
    unary_rate: float
    stream_ms: float
    stream_rate: float

    @property
    def task_ms(self) -> float:
        """Server CPU of one unary call and one stream: a task in and watched out."""
        return self.unary_ms + self.stream_ms


async def _serve(certs: Path) -> None:
    """The child: print the port, serve until stdin closes."""
    server = grpc.aio.server()
    health_pb2_grpc.add_HealthServicer_to_server(_Nothing(), server)
    files = CertFiles.of(certs, IdentityKind.ORCHESTRATOR, "floor")
    port = server.add_secure_port("127.0.0.1:0", server_credentials(files))
    await server.start()
    print(port, flush=True)
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.read)
    await server.stop(None)


@contextlib.asynccontextmanager
async def _server() -> AsyncIterator[tuple[int, list[health_pb2_grpc.HealthStub]]]:
    """The server child (its pid) and ``CHANNELS`` connected stubs; it stops on the way out."""
    with tempfile.TemporaryDirectory() as folder:
        certs = Path(folder)
        create_ca(certs, "agentmesh.bench")
        issue(certs, IdentityKind.ORCHESTRATOR, "floor")
        issue(certs, IdentityKind.CLIENT, "floor-client")
        child = await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "benchmarks.grpc_floor", "--serve", str(certs)),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        assert child.stdin is not None
        assert child.stdout is not None
        channels: list[grpc.aio.Channel] = []
        try:
            port = int(await child.stdout.readline())
            files = CertFiles.of(certs, IdentityKind.CLIENT, "floor-client")
            credentials = channel_credentials(files)
            for _ in range(CHANNELS):
                channels.append(grpc.aio.secure_channel(f"127.0.0.1:{port}", credentials))
            stubs = [health_pb2_grpc.HealthStub(channel) for channel in channels]
            for stub in stubs:  # connected before the clock starts
                await stub.Check(health_pb2.HealthCheckRequest())
            yield child.pid, stubs
        finally:
            for channel in channels:
                await channel.close()
            child.stdin.close()  # the child stops at the end of its input
            await child.wait()


async def _round(
    pid: int,
    stubs: list[health_pb2_grpc.HealthStub],
    call: Callable[[health_pb2_grpc.HealthStub], Awaitable[None]],
) -> tuple[float, float]:
    """``CALLS`` calls: the server's CPU ms per call, and calls per second."""
    room = asyncio.Semaphore(IN_FLIGHT)

    async def one(index: int) -> None:
        async with room:
            await call(stubs[index % len(stubs)])

    cpu, started = cpu_seconds(pid), time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(CALLS)))
    wall, cpu = time.perf_counter() - started, cpu_seconds(pid) - cpu
    return cpu / CALLS * 1000, CALLS / wall


async def _unary(stub: health_pb2_grpc.HealthStub) -> None:
    await stub.Check(health_pb2.HealthCheckRequest())


async def _stream(stub: health_pb2_grpc.HealthStub) -> None:
    async for _ in stub.Watch(health_pb2.HealthCheckRequest()):
        pass


async def measure() -> Floor:
    """The floor on this machine now (best of ``ROUNDS`` of each kind, interleaved)."""
    unary: list[tuple[float, float]] = []
    stream: list[tuple[float, float]] = []
    async with _server() as (pid, stubs):
        for _ in range(ROUNDS):
            unary.append(await _round(pid, stubs, _unary))
            stream.append(await _round(pid, stubs, _stream))
    return Floor(
        unary_ms=min(ms for ms, _ in unary),
        unary_rate=max(rate for _, rate in unary),
        stream_ms=min(ms for ms, _ in stream),
        stream_rate=max(rate for _, rate in stream),
    )


async def run(folder: Path, profiling: Profiling | None = None) -> list[Measurement]:
    """Run the benchmark (``folder`` and ``profiling`` are unused: no orchestrator runs)."""
    floor = await measure()
    print(
        f"  unary {floor.unary_rate:.0f} calls/s at {floor.unary_ms:.3f} ms CPU each; stream of "
        f"{STREAM_MESSAGES} {floor.stream_rate:.0f}/s at {floor.stream_ms:.3f} ms"
    )
    return [
        Measurement(NAME, "server CPU per unary call", floor.unary_ms, "ms"),
        Measurement(NAME, "unary calls", floor.unary_rate, "calls/s"),
        Measurement(NAME, f"server CPU per stream of {STREAM_MESSAGES}", floor.stream_ms, "ms"),
        Measurement(NAME, f"streams of {STREAM_MESSAGES}", floor.stream_rate, "calls/s"),
        Measurement(
            NAME,
            "tasks/s that one core of server CPU could take in and watch out",
            1000 / floor.task_ms,
            "tasks/s",
        ),
    ]


def main() -> None:
    """``--serve CERTS``: the server child (the benchmark itself runs from ``run.py``)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serve", type=Path, required=True)
    asyncio.run(_serve(parser.parse_args().serve))


if __name__ == "__main__":
    main()
