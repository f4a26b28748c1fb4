"""What one gRPC connection costs in memory, each side: ``python -m benchmarks.channel_memory``.

The orchestrator holds one mTLS channel per connected agent (its Session), and served each
agent's registration channel too. This dials ``--count`` servers (in a child process, each
with its own port, as agents are) with one channel each, keeps one server stream open on
every channel (like a Session), and prints the RSS growth per channel on the client side
and per connection on the server side. ``--option name=value`` (repeatable) passes a gRPC
channel argument to the client channels, ``--server-option`` to the servers, to see what
an argument saves; ``--insecure`` drops TLS to see its share.

Measured on grpcio 1.85 (200 channels): 150 KiB per client channel and 99 KiB per server
connection with mTLS, 78 and 46 KiB without TLS; ``grpc.http2.bdp_probe=0``,
``grpc.http2.write_buffer_size``, the ``grpc.experimental.tcp_*read_chunk_size`` arguments
and ``grpc.use_local_subchannel_pool`` changed nothing measurable on idle connections,
``grpc.enable_channelz=0`` with ``grpc.enable_retries=0`` about 10 KiB.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from agentmesh.security import CertFiles, IdentityKind, create_ca, issue
from agentmesh.security.tls import channel_credentials, server_credentials

Options = list[tuple[str, int | str]]


def _rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _options(pairs: list[str]) -> Options:
    options: Options = []
    for pair in pairs:
        name, _, value = pair.partition("=")
        options.append((name, int(value) if value.lstrip("-").isdigit() else value))
    return options


async def _serve(certs: Path, count: int, options: Options, insecure: bool) -> None:
    """The child: ``count`` servers; prints their ports, then (on a line of stdin) its growth."""
    servers = []
    ports = []
    for _ in range(count):
        server = grpc.aio.server(options=options)
        health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)
        if insecure:
            ports.append(server.add_insecure_port("127.0.0.1:0"))
        else:
            files = CertFiles.of(certs, IdentityKind.AGENT, "server")
            ports.append(server.add_secure_port("127.0.0.1:0", server_credentials(files)))
        await server.start()
        servers.append(server)
    before = _rss_mib()
    print(json.dumps(ports), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    grown = (_rss_mib() - before) * 1024 / count
    print(f"server side: {grown:.1f} KiB per connection", flush=True)


async def _dial(
    certs: Path, server: subprocess.Popen[str], options: Options, insecure: bool
) -> None:
    assert server.stdin is not None
    assert server.stdout is not None
    ports = json.loads(server.stdout.readline())
    credentials = channel_credentials(CertFiles.of(certs, IdentityKind.ORCHESTRATOR, "client"))
    before = _rss_mib()
    channels, calls = [], []
    for port in ports:
        target = f"127.0.0.1:{port}"
        channel = (
            grpc.aio.insecure_channel(target, options=options)
            if insecure
            else grpc.aio.secure_channel(target, credentials, options=options)
        )
        call = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest())
        await call.read()  # connected, the stream open
        channels.append(channel)
        calls.append(call)
    grown = (_rss_mib() - before) * 1024 / len(ports)
    print(f"client side: {grown:.1f} KiB per channel ({len(ports)} channels)")
    server.stdin.write("\n")  # measured while every connection is still open
    server.stdin.flush()
    print(server.stdout.readline().strip())
    for channel in channels:
        await channel.close()


def main() -> None:
    """Entry point; see the module docstring."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--option", action="append", default=[], help="client channel arg")
    parser.add_argument("--server-option", action="append", default=[], help="server arg")
    parser.add_argument("--insecure", action="store_true", help="no TLS, to see its share")
    parser.add_argument("--serve", type=Path, help=argparse.SUPPRESS)  # the child's certs
    args = parser.parse_args()
    if args.serve is not None:
        asyncio.run(_serve(args.serve, args.count, _options(args.server_option), args.insecure))
        return
    with tempfile.TemporaryDirectory() as folder:
        certs = Path(folder)
        create_ca(certs, "agentmesh.bench")
        issue(certs, IdentityKind.AGENT, "server")
        issue(certs, IdentityKind.ORCHESTRATOR, "client")
        child = [sys.executable, "-m", "benchmarks.channel_memory", "--serve", str(certs)]
        child += ["--count", str(args.count), *(f"--server-option={o}" for o in args.server_option)]
        child += ["--insecure"] if args.insecure else []
        with subprocess.Popen(
            child, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        ) as server:
            asyncio.run(_dial(certs, server, _options(args.option), args.insecure))


if __name__ == "__main__":
    main()
