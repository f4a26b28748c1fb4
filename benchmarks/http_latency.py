"""http_latency: how long ``POST /v1/tasks`` takes to answer, beside gRPC ``SubmitTask``.

The plan of :mod:`benchmarks.submit_latency` (three ``bench.work`` steps, a fan-in),
submitted ``N`` times over HTTPS with the client's mesh certificate (as the gRPC calls are
made over mTLS), first by one caller one at a time, then by ``CLIENTS`` callers at once (each
its own connection). gRPC ``SubmitTask`` on the same orchestrator is measured the same way in
the same run, as is ``GET /healthz``: what HTTP, TLS, uvicorn and FastAPI cost before any
agentmesh code runs. The tasks really run on agents meanwhile.
"""

from __future__ import annotations

import ssl
from pathlib import Path

import grpc
import httpx

from agentmesh.models import TaskState
from agentmesh.security import CertFiles, IdentityKind, channel_credentials
from benchmarks.mesh import CLIENT, Mesh, Profiling, settle
from benchmarks.report import Measurement, percentile
from benchmarks.submit_latency import PLAN, Call, Caller, _concurrently, _timed

NAME = "http_latency"
N = 300
CLIENTS = 20
WARM_UP = 20
AGENTS = ("hl-1", "hl-2")
TARGET_MS = 200.0

BODY = {"plan": PLAN.model_dump(mode="json")}


class HttpCaller:
    """One HTTPS connection (keep-alive) presenting the client's certificate."""

    def __init__(self, base_url: str, context: ssl.SSLContext) -> None:
        self.client = httpx.AsyncClient(base_url=base_url, verify=context, timeout=30)

    async def submit(self) -> object:
        """One POST /v1/tasks."""
        answer = await self.client.post("/v1/tasks", json=BODY)
        answer.raise_for_status()
        return answer

    async def check(self) -> object:
        """One GET /healthz."""
        return (await self.client.get("/healthz")).raise_for_status()


def _context(certs: Path) -> ssl.SSLContext:
    files = CertFiles.of(certs, IdentityKind.CLIENT, CLIENT)
    context = ssl.create_default_context(cafile=str(files.ca))
    context.load_cert_chain(str(files.cert), str(files.key))
    return context


def _ms(durations: list[float], p: float) -> float:
    return percentile(durations, p) * 1000


async def run(folder: Path, profiling: Profiling | None = None) -> list[Measurement]:
    """Run the benchmark; return its measurements."""
    async with Mesh(folder, profiling=profiling, http=True) as mesh:
        await mesh.start_agents(AGENTS, concurrency=64)
        async with mesh.client() as client:
            await mesh.wait_for_agents(client, len(AGENTS))
        context = _context(mesh.certs)
        base_url = f"https://localhost:{mesh.http_port}"
        https = [HttpCaller(base_url, context) for _ in range(CLIENTS)]
        credentials = channel_credentials(CertFiles.of(mesh.certs, IdentityKind.CLIENT, CLIENT))
        grpcs = [Caller(grpc.aio.secure_channel(mesh.address, credentials)) for _ in range(CLIENTS)]
        try:
            for http_caller, grpc_caller in zip(https, grpcs, strict=True):
                await _timed(http_caller.check, 2)  # connect and warm up every caller
                await _timed(grpc_caller.check, 2)
            await _timed(https[0].submit, WARM_UP)
            await _timed(grpcs[0].submit, WARM_UP)
            calls: dict[str, list[Call]] = {
                "HTTP POST /v1/tasks": [c.submit for c in https],
                "gRPC SubmitTask": [c.submit for c in grpcs],
                "HTTP GET /healthz": [c.check for c in https],
            }
            results: dict[tuple[str, str], list[float]] = {}
            for what, callers in calls.items():
                results[(what, "1 client")] = await _timed(callers[0], N)
                results[(what, f"{CLIENTS} clients")], _ = await _concurrently(callers, N)
        finally:
            for http_caller in https:
                await http_caller.client.aclose()
            for grpc_caller in grpcs:
                await grpc_caller.channel.close()
        async with mesh.client() as client:
            states = await settle(client)
    submitted = sum(states.values())
    succeeded = states.get(TaskState.SUCCEEDED, 0)
    print(f"  the {submitted} tasks submitted ended: { {str(s): n for s, n in states.items()} }")
    measurements = []
    for mode in ("1 client", f"{CLIENTS} clients"):
        http, rpc = results[("HTTP POST /v1/tasks", mode)], results[("gRPC SubmitTask", mode)]
        health = results[("HTTP GET /healthz", mode)]
        for p in (50, 99):
            measurements.append(
                Measurement(
                    NAME,
                    f"HTTP POST /v1/tasks p{p}, {mode}",
                    _ms(http, p),
                    "ms",
                    _ms(rpc, p),
                    "gRPC SubmitTask",
                    target=f"< {TARGET_MS:.0f} ms" if p == 99 else "",
                    ok=_ms(http, p) < TARGET_MS if p == 99 else None,
                )
            )
            measurements.append(
                Measurement(
                    NAME, f"HTTP GET /healthz p{p}, {mode}", _ms(health, p), "ms", target=""
                )
            )
    measurements.append(
        Measurement(
            NAME,
            "submitted tasks that succeeded",
            100 * succeeded / submitted,
            "%",
            target="= 100%",
            ok=succeeded == submitted,
        )
    )
    return measurements
