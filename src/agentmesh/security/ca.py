"""The mesh certificate authority: create it and issue workload certificates.

Layout under the certificates folder::

    ca.pem  ca.key                 the mesh CA
    <kind>/<name>.pem  .key        one workload (e.g. agent/summarizer.pem)
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from agentmesh.errors import CertificateError
from agentmesh.security.identity import Identity, IdentityKind, check_name

DEFAULT_HOSTS = ("localhost", "127.0.0.1", "::1")
#: Small backdating so that a certificate issued now is valid on a peer whose clock lags.
_CLOCK_SKEW = timedelta(minutes=5)


@dataclass(frozen=True, slots=True)
class CertFiles:
    """Where one workload's certificate, key and the mesh CA live on disk."""

    ca: Path
    cert: Path
    key: Path

    @classmethod
    def of(cls, certs_dir: Path, kind: IdentityKind | str, name: str) -> CertFiles:
        """The conventional paths of workload ``kind``/``name`` under ``certs_dir``."""
        folder = Path(certs_dir) / str(kind)
        return cls(Path(certs_dir) / "ca.pem", folder / f"{name}.pem", folder / f"{name}.key")

    def exists(self) -> bool:
        """True when all three files are present."""
        return self.ca.exists() and self.cert.exists() and self.key.exists()


def _write_private(path: Path, data: bytes) -> None:
    # Created 0600 from the first byte: never world-readable, not even briefly.
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(path, 0o600)


def _write_public(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def create_ca(certs_dir: Path, trust_domain: str, *, force: bool = False) -> Path:
    """Create the mesh CA in ``certs_dir``; refuses to overwrite one unless ``force``."""
    ca_pem, ca_key = Path(certs_dir) / "ca.pem", Path(certs_dir) / "ca.key"
    if ca_pem.exists() and not force:
        raise CertificateError(f"a CA exists already at {ca_pem}; pass force to replace it")
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "agentmesh"),
            x509.NameAttribute(NameOID.COMMON_NAME, f"agentmesh CA {trust_domain}"),
        ]
    )
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _CLOCK_SKEW)
        .not_valid_after(now + timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.UniformResourceIdentifier(f"spiffe://{trust_domain}")]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    _write_private(ca_key, _key_pem(key))
    _write_public(ca_pem, cert.public_bytes(serialization.Encoding.PEM))
    return ca_pem


def _load_ca(certs_dir: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    ca_pem, ca_key = Path(certs_dir) / "ca.pem", Path(certs_dir) / "ca.key"
    if not ca_pem.exists() or not ca_key.exists():
        raise CertificateError(f"no CA in {certs_dir}; run `agentmesh certs init` first")
    cert = x509.load_pem_x509_certificate(ca_pem.read_bytes())
    key = serialization.load_pem_private_key(ca_key.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise CertificateError(f"{ca_key} is not an EC private key")
    return cert, key


def trust_domain_of(certs_dir: Path) -> str:
    """The trust domain the CA in ``certs_dir`` was made for.

    Reads only ``ca.pem``: agents and clients hold the CA certificate, never its key.
    """
    ca_pem = Path(certs_dir) / "ca.pem"
    try:
        cert = x509.load_pem_x509_certificate(ca_pem.read_bytes())
    except OSError as exc:
        raise CertificateError(f"cannot read {ca_pem}: {exc.strerror}") from None
    except ValueError:
        raise CertificateError(f"{ca_pem} is not a PEM certificate") from None
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        raise CertificateError(f"{ca_pem} names no trust domain (no spiffe:// URI)") from None
    uris = [
        u
        for u in san.get_values_for_type(x509.UniformResourceIdentifier)
        if u.startswith("spiffe://")
    ]
    if not uris:
        raise CertificateError(f"{ca_pem} names no trust domain (no spiffe:// URI)")
    return uris[0].removeprefix("spiffe://")


def issue(
    certs_dir: Path,
    kind: IdentityKind | str,
    name: str,
    *,
    hosts: Iterable[str] = DEFAULT_HOSTS,
    valid_for: timedelta = timedelta(days=365),
    not_before: datetime | None = None,
    foreign_trust_domain: str | None = None,
) -> CertFiles:
    """Issue a certificate for workload ``kind``/``name`` signed by the CA in ``certs_dir``.

    The identity goes into a URI SAN; ``hosts`` into DNS/IP SANs so that the
    workload can also serve TLS. Every workload may act as client and server.
    ``not_before`` exists so tests can make certificates that are already expired, and
    ``foreign_trust_domain`` so they can make ones the mesh must refuse: signed by its CA
    but for another trust domain than the CA's.
    """
    ca_cert, ca_key = _load_ca(certs_dir)
    domain = foreign_trust_domain or trust_domain_of(certs_dir)
    identity = Identity(domain, IdentityKind(kind), check_name(name))
    key = ec.generate_private_key(ec.SECP256R1())
    start = not_before or datetime.now(UTC) - _CLOCK_SKEW
    sans: list[x509.GeneralName] = [x509.UniformResourceIdentifier(identity.uri)]
    for host in hosts:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            sans.append(x509.DNSName(host))
    cert = (
        x509.CertificateBuilder()
        .subject_name(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, "agentmesh"),
                    x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, str(identity.kind)),
                    x509.NameAttribute(NameOID.COMMON_NAME, name),
                ]
            )
        )
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + valid_for)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    files = CertFiles.of(certs_dir, identity.kind, name)
    _write_private(files.key, _key_pem(key))
    _write_public(files.cert, cert.public_bytes(serialization.Encoding.PEM))
    return files


def identity_of(cert_pem: bytes) -> Identity:
    """The workload identity in a PEM certificate's URI SAN."""
    cert = x509.load_pem_x509_certificate(cert_pem)
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        raise CertificateError("certificate has no subject alternative name") from None
    uris = [
        u
        for u in san.get_values_for_type(x509.UniformResourceIdentifier)
        if u.startswith("spiffe://")
    ]
    if len(uris) != 1:
        raise CertificateError(f"certificate must carry exactly one SPIFFE ID, found {len(uris)}")
    return Identity.parse(uris[0])


def own_identity(files: CertFiles, trust_domain: str, *, setting: str) -> Identity:
    """The identity in a process's own certificate; CertificateError unless of ``trust_domain``.

    A process whose certificate is of another domain than the one it enforces would refuse
    every peer and be refused by them; better to say so at start-up, naming the ``setting``
    that decides the domain.
    """
    try:
        pem = files.cert.read_bytes()
    except OSError as exc:
        raise CertificateError(f"cannot read {files.cert}: {exc.strerror}") from None
    identity = identity_of(pem)
    if identity.trust_domain != trust_domain:
        raise CertificateError(
            f"{files.cert} is of trust domain {identity.trust_domain!r}, but this process is "
            f"of {trust_domain!r} ({setting}); issue its certificate from the mesh CA or fix "
            f"{setting}"
        )
    return identity
