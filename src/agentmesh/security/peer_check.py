"""Who really serves an endpoint: the identity in the certificate it presents.

gRPC Python does not show a client the server's certificate, so before the
orchestrator trusts an agent's registered endpoint it shakes hands with it once
over plain TLS (same CA, same client certificate, ALPN h2) and reads the SPIFFE
ID. An agent therefore cannot register another agent's endpoint as its own, nor one served
with a certificate of another trust domain (UNAUTHENTICATED, as for such a caller).
"""

from __future__ import annotations

import asyncio
import functools
import os
import ssl

from agentmesh.errors import AgentUnavailable, CertificateError, Unauthenticated, describe
from agentmesh.security.ca import CertFiles, identity_of
from agentmesh.security.identity import Identity


def _split(endpoint: str) -> tuple[str, int]:
    host, _, port = endpoint.rpartition(":")
    if not host or not port.isdigit():
        raise AgentUnavailable(f"not a host:port endpoint: {endpoint!r}", field="card.endpoint")
    return host.strip("[]"), int(port)


def _context(files: CertFiles) -> ssl.SSLContext:
    # One context for every check while the files stay as they are: loading the CA and the
    # key pair took more of the orchestrator's time than anything else while a thousand
    # agents registered (issue 9). A certificate renewed on disk is loaded at the next check.
    stamps = tuple(os.stat(path).st_mtime_ns for path in (files.ca, files.cert, files.key))
    return _loaded(files, stamps)


@functools.lru_cache(maxsize=4)
def _loaded(files: CertFiles, stamps: tuple[int, ...]) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_verify_locations(cafile=files.ca)
    context.load_cert_chain(files.cert, files.key)
    context.set_alpn_protocols(["h2"])
    return context


async def endpoint_identity(
    endpoint: str, files: CertFiles, *, trust_domain: str, within: float = 5.0
) -> Identity:
    """The identity in the certificate served at ``endpoint`` (verified against the mesh CA);
    Unauthenticated when it is not of ``trust_domain``."""
    host, port = _split(endpoint)
    context = await asyncio.to_thread(_context, files)  # file reads stay off the event loop
    try:
        async with asyncio.timeout(within):
            _, writer = await asyncio.open_connection(host, port, ssl=context, server_hostname=host)
    except TimeoutError:  # before OSError, of which it is a kind
        raise AgentUnavailable(
            f"cannot reach {endpoint} over TLS: no TLS handshake within {within:g}s",
            field="card.endpoint",
        ) from None
    except OSError as exc:
        raise AgentUnavailable(
            f"cannot reach {endpoint} over TLS: {describe(exc)}", field="card.endpoint"
        ) from None
    try:
        ssl_object = writer.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True) if ssl_object else None
        if not der:
            raise AgentUnavailable(f"{endpoint} presented no certificate", field="card.endpoint")
        try:
            identity = identity_of(ssl.DER_cert_to_PEM_cert(der).encode())
        except CertificateError as exc:
            raise AgentUnavailable(f"{endpoint}: {exc}", field="card.endpoint") from None
        if identity.trust_domain != trust_domain:
            raise Unauthenticated(
                f"{endpoint} serves the certificate of {identity}, which is not of this mesh's "
                f"trust domain {trust_domain!r}",
                field="card.endpoint",
            )
        return identity
    finally:
        # Aborted, not closed: the peer speaks HTTP/2 past our close_notify, so a graceful
        # TLS shutdown always failed, and the SSLError it left in the stream reader held the
        # connection's 256 KiB buffer in a reference cycle until a full garbage collection,
        # rare in a settled orchestrator (see tuning.py): hundreds of MiB while a thousand
        # agents registered (issue 9). We are done with the connection anyway.
        writer.transport.abort()
