"""``python -m tests.support.health_probe PORT CERTS STOP``: health checks, back to back.

A process of its own, so that only the orchestrator's answering is measured: a prober in
the test's process would share its interpreter lock (and its coverage tracer) with the
orchestrator under test. Prints ``ready`` once connected, then one status name per check
(1 s deadline each) until the file STOP exists.
"""

from __future__ import annotations

import sys
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from agentmesh.security import CertFiles, IdentityKind, channel_credentials


def main(port: str, certs: str, stop: str) -> None:
    credentials = channel_credentials(CertFiles.of(Path(certs), IdentityKind.CLIENT, "bob"))
    with grpc.secure_channel(f"localhost:{port}", credentials) as opened:
        health = health_pb2_grpc.HealthStub(opened)  # type: ignore[no-untyped-call]
        # Connected before the first timed check: a TLS handshake is not what is measured.
        health.Check(health_pb2.HealthCheckRequest(), timeout=30)
        print("ready", flush=True)
        while not Path(stop).exists():
            try:
                answer = health.Check(health_pb2.HealthCheckRequest(), timeout=1.0)
            except grpc.RpcError as exc:
                print(exc.code().name, flush=True)
            else:
                print(health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status), flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:4])
