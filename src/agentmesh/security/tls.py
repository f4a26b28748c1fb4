"""mTLS credentials for servers and channels, and the caller's identity from its certificate."""

from __future__ import annotations

import functools
from pathlib import Path

import grpc

from agentmesh.errors import CertificateError, Unauthenticated
from agentmesh.security.ca import CertFiles, identity_of
from agentmesh.security.identity import Identity


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise CertificateError(f"cannot read {path}: {exc.strerror}") from exc


class _RotatingServerConfig:
    """Re-reads the certificate files whenever they change, so rotation needs no restart."""

    def __init__(self, files: CertFiles) -> None:
        self._files = files
        self._stamp = self._mtimes()

    def _mtimes(self) -> tuple[float, ...]:
        return tuple(
            p.stat().st_mtime_ns for p in (self._files.ca, self._files.cert, self._files.key)
        )

    def load(self) -> grpc.ServerCertificateConfiguration:
        return grpc.ssl_server_certificate_configuration(
            [(_read(self._files.key), _read(self._files.cert))],
            root_certificates=_read(self._files.ca),
        )

    def __call__(self) -> grpc.ServerCertificateConfiguration | None:
        # Called by gRPC core on every new handshake; None keeps the current config.
        try:
            stamp = self._mtimes()
        except OSError:
            return None
        if stamp == self._stamp:
            return None
        self._stamp = stamp
        return self.load()


def server_credentials(files: CertFiles) -> grpc.ServerCredentials:
    """Credentials of a server that demands and verifies a client certificate from the mesh CA."""
    config = _RotatingServerConfig(files)
    # gRPC documents that the fetcher may return None ("keep the current config");
    # the typeshed stub does not allow it.
    return grpc.dynamic_ssl_server_credentials(
        config.load(),
        config,  # type: ignore[arg-type]
        require_client_authentication=True,
    )


def channel_credentials(files: CertFiles) -> grpc.ChannelCredentials:
    """Credentials of a client that presents its certificate and trusts only the mesh CA."""
    return grpc.ssl_channel_credentials(
        root_certificates=_read(files.ca),
        private_key=_read(files.key),
        certificate_chain=_read(files.cert),
    )


@functools.lru_cache(maxsize=1024)
def _identity_of_pem(pem: bytes) -> Identity:
    # Parsing X.509 on every call would be waste: peers reuse one certificate.
    return identity_of(pem)


def peer_identity(context: grpc.aio.ServicerContext[object, object]) -> Identity:
    """The verified identity of the caller, from the certificate it presented over mTLS."""
    auth = context.auth_context()
    certs = list(auth.get("x509_pem_cert") or ())
    if not certs:
        raise Unauthenticated("a client certificate from the mesh CA is required")
    try:
        return _identity_of_pem(certs[0])
    except CertificateError as exc:
        raise Unauthenticated(f"client certificate carries no usable identity: {exc}") from exc
