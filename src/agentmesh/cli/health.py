"""``agentmesh health``: ask a server's gRPC health service (over mTLS) whether it serves.

For probes (Kubernetes ``exec`` probes, scripts): exit status 0 when the service is
SERVING, 1 with a one-line reason otherwise. Any certificate of the mesh will do: health is
open to every identity of the trust domain.
"""

from __future__ import annotations

from typing import Annotated

import grpc
import typer
from grpc_health.v1 import health_pb2, health_pb2_grpc

from agentmesh.cli import common
from agentmesh.cli.common import DEFAULT_ADDRESS, DEFAULT_CERTS, Address, CertsDir
from agentmesh.errors import describe
from agentmesh.security import CertFiles, IdentityKind, channel_credentials


def health(
    address: Address = DEFAULT_ADDRESS,
    certs_dir: CertsDir = DEFAULT_CERTS,
    kind: Annotated[
        IdentityKind, typer.Option(help="kind of the certificate to call with")
    ] = IdentityKind.CLIENT,
    name: Annotated[str, typer.Option(help="name of the certificate (certs/KIND/NAME.pem)")] = (
        common.DEFAULT_NAME
    ),
    service: Annotated[str, typer.Option(help="a service name; empty: the server")] = "",
    timeout: Annotated[float, typer.Option(help="seconds to wait for the answer", min=0.1)] = 5.0,
) -> None:
    """Exit 0 when the server at ADDRESS answers SERVING, 1 otherwise (for probes)."""
    files = CertFiles.of(certs_dir, kind, name)

    async def body() -> str:
        credentials = channel_credentials(files)
        async with grpc.aio.secure_channel(address, credentials) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            try:
                answer = await stub.Check(
                    health_pb2.HealthCheckRequest(service=service), timeout=timeout
                )
            except grpc.aio.AioRpcError as exc:
                return describe(exc)
        return str(health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status))

    status = common.run(body, certs_dir=certs_dir, name=name, kind=kind.value)
    if status != "SERVING":
        common.fail(f"error: {address} is not serving: {status}")
    typer.echo("SERVING")
