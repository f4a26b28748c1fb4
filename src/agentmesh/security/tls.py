"""mTLS credentials for servers and channels, and the caller's identity from its certificate."""

from __future__ import annotations

import functools
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, TypeVar

import grpc
import structlog
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from agentmesh.errors import AgentMeshError, CertificateError, Unauthenticated
from agentmesh.security.ca import CertFiles, identity_of
from agentmesh.security.identity import Identity, require_trust_domain

log = structlog.get_logger(__name__)

T = TypeVar("T")


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise CertificateError(f"cannot read {path}: {exc.strerror}") from exc


class _Rotation(Generic[T]):
    """What is built from a workload's certificate files (CA, certificate, key), built afresh
    whenever one of them changes, so rotation needs no restart.

    Both server doors use it: gRPC core asks at every new handshake (a fetcher of
    :func:`server_credentials`), the HTTP API's TLS context at every ClientHello
    (:func:`server_ssl_context`). A pair caught half-written is not taken: the current one
    stays until the files match again.
    """

    def __init__(self, files: CertFiles, build: Callable[[bytes, bytes, bytes], T]) -> None:
        self._files = files
        self._build = build
        try:
            # Taken before the files are read: a change while they are read is seen later.
            self._stamp: tuple[int, ...] = self._mtimes()
        except OSError:
            self._stamp = ()
        self.current = self._load()  # a missing or bad file is a CertificateError at start

    def _mtimes(self) -> tuple[int, ...]:
        return tuple(
            p.stat().st_mtime_ns for p in (self._files.ca, self._files.cert, self._files.key)
        )

    def _load(self) -> T:
        key, cert = _read(self._files.key), _read(self._files.cert)
        _check_pair(cert, key, self._files)
        return self._build(_read(self._files.ca), cert, key)

    def changed(self) -> T | None:
        """The value built from the files if they changed since the last one; else None."""
        try:
            stamp = self._mtimes()
        except OSError:
            return None
        if stamp == self._stamp:
            return None
        try:
            value = self._load()
        except CertificateError as exc:
            # Caught between writing the key and the certificate, or a bad file: keep serving
            # the current pair and look again at the next handshake.
            log.warning("tls.rotation_deferred", cert=str(self._files.cert), error=str(exc))
            return None
        self._stamp, self.current = stamp, value
        log.info("tls.certificate_rotated", cert=str(self._files.cert))
        return value


def _check_pair(cert_pem: bytes, key_pem: bytes, files: CertFiles) -> None:
    """Raise CertificateError unless ``key_pem`` is the private key of ``cert_pem``."""
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
        key = serialization.load_pem_private_key(key_pem, password=None)
    except ValueError as exc:
        # The message names the file, never its contents: a key must not reach the logs.
        raise CertificateError(f"{files.cert} or {files.key} is not valid PEM") from exc
    public = serialization.PublicFormat.SubjectPublicKeyInfo
    encoding = serialization.Encoding.DER
    if cert.public_key().public_bytes(encoding, public) != key.public_key().public_bytes(
        encoding, public
    ):
        raise CertificateError(f"{files.key} is not the key of {files.cert}")


def _grpc_config(ca: bytes, cert: bytes, key: bytes) -> grpc.ServerCertificateConfiguration:
    return grpc.ssl_server_certificate_configuration([(key, cert)], root_certificates=ca)


def server_credentials(files: CertFiles) -> grpc.ServerCredentials:
    """Credentials of a server that demands and verifies a client certificate from the mesh CA."""
    rotation = _Rotation(files, _grpc_config)
    # Called by gRPC core on every new handshake; None keeps the current config. gRPC
    # documents that the fetcher may return None; the typeshed stub does not allow it.
    return grpc.dynamic_ssl_server_credentials(
        rotation.current,
        rotation.changed,  # type: ignore[arg-type]
        require_client_authentication=True,
    )


def _ssl_context(files: CertFiles, ca: bytes) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cadata=ca.decode("ascii"))
    try:
        # ssl loads a pair from files only: these were just read and checked as a pair; one
        # replaced since is seen by the next stamp check (or refused here if half-written).
        context.load_cert_chain(str(files.cert), str(files.key))
    except (OSError, ssl.SSLError) as exc:
        raise CertificateError(f"cannot load {files.cert} with {files.key}: {exc}") from exc
    context.verify_mode = ssl.CERT_OPTIONAL
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def server_ssl_context(files: CertFiles) -> ssl.SSLContext:
    """A server context with the workload's certificate that asks for (optional) client
    certificates from the mesh CA, and serves rotated files from the next handshake on.

    Every connection starts from the returned context; at each ClientHello (``sni_callback``,
    called with or without a server name) a connection is moved onto the context of the
    current files. Connections already open keep the context they were made with.
    """
    rotation = _Rotation(files, lambda ca, _cert, _key: _ssl_context(files, ca))
    first = rotation.current

    def on_hello(
        connection: ssl.SSLSocket | ssl.SSLObject, _server_name: str | None, _: ssl.SSLContext
    ) -> None:
        rotation.changed()
        if rotation.current is not first:
            connection.context = rotation.current

    first.sni_callback = on_hello
    return first


def channel_credentials(files: CertFiles) -> grpc.ChannelCredentials:
    """Credentials of a client that presents its certificate and trusts only the mesh CA."""
    return grpc.ssl_channel_credentials(
        root_certificates=_read(files.ca),
        private_key=_read(files.key),
        certificate_chain=_read(files.cert),
    )


class RotatingChannelCredentials:
    """Channel credentials read afresh whenever the certificate files change.

    gRPC reads a channel's credentials once, when the channel is made; calling this for each
    new channel (as the registry does for each agent it dials) picks up a rotated
    certificate without a restart.
    """

    def __init__(self, files: CertFiles) -> None:
        self._files = files
        self._stamp: tuple[int, ...] = ()
        self._credentials: grpc.ChannelCredentials | None = None

    def __call__(self) -> grpc.ChannelCredentials:
        try:
            stamp = tuple(
                p.stat().st_mtime_ns for p in (self._files.ca, self._files.cert, self._files.key)
            )
        except OSError:
            stamp = self._stamp
        if self._credentials is None or stamp != self._stamp:
            key, cert = _read(self._files.key), _read(self._files.cert)
            try:
                _check_pair(cert, key, self._files)
            except CertificateError as exc:
                if self._credentials is None:
                    raise
                log.warning("tls.rotation_deferred", cert=str(self._files.cert), error=str(exc))
                return self._credentials
            self._credentials = grpc.ssl_channel_credentials(
                root_certificates=_read(self._files.ca), private_key=key, certificate_chain=cert
            )
            self._stamp = stamp
        return self._credentials


@dataclass(frozen=True, slots=True)
class Peer:
    """A verified caller: its identity and the serial number of the certificate it presented.

    ``serial`` is None only for the unauthenticated development identity of insecure mode.
    """

    identity: Identity
    serial: int | None


@functools.lru_cache(maxsize=1024)
def _peer_of_pem(pem: bytes) -> Peer:
    # Parsing X.509 on every call would be waste: peers reuse one certificate.
    serial = x509.load_pem_x509_certificate(pem).serial_number
    return Peer(identity_of(pem), serial)


def peer_of_certificate(pem: bytes) -> Peer:
    """The identity and serial in a verified client certificate (PEM), of whatever trust
    domain; Unauthenticated when it carries no usable identity. For front doors other than
    gRPC (the HTTP API), which get the peer's certificate from their TLS layer."""
    try:
        return _peer_of_pem(pem)
    except (AgentMeshError, ValueError) as exc:
        raise Unauthenticated(f"client certificate carries no usable identity: {exc}") from exc


def peer_certificate(context: grpc.aio.ServicerContext[object, object], trust_domain: str) -> Peer:
    """The caller's identity and certificate serial, from the certificate it presented.

    Unauthenticated unless the identity is of ``trust_domain``: the CA's signature proves
    the certificate genuine, not that its holder belongs to this mesh.
    """
    peer = presented_peer(context)
    require_trust_domain(peer.identity, trust_domain)
    return peer


def presented_peer(context: grpc.aio.ServicerContext[object, object]) -> Peer:
    """The identity and serial in the caller's certificate, of whatever trust domain.

    Only for callers that check the domain themselves (the orchestrator's interceptor asks
    the :class:`~agentmesh.security.guard.Guard`, which logs whom it refused);
    everyone else uses :func:`peer_certificate`.
    """
    auth = context.auth_context()
    certs = list(auth.get("x509_pem_cert") or ())
    if not certs:
        raise Unauthenticated("a client certificate from the mesh CA is required")
    try:
        return _peer_of_pem(certs[0])
    except (AgentMeshError, ValueError) as exc:
        raise Unauthenticated(f"client certificate carries no usable identity: {exc}") from exc


def peer_identity(context: grpc.aio.ServicerContext[object, object], trust_domain: str) -> Identity:
    """The verified identity of the caller (of ``trust_domain``), from its mTLS certificate."""
    return peer_certificate(context, trust_domain).identity
