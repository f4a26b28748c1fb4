"""The HTTPS port serves a rotated orchestrator certificate without a restart, as gRPC does."""

from __future__ import annotations

import asyncio
import shutil
import ssl
from pathlib import Path

import pytest
from cryptography import x509

from agentmesh.config import Settings
from agentmesh.orchestrator import Orchestrator
from agentmesh.security import CertFiles, IdentityKind, create_ca, issue
from tests.orchestrator.http.conftest import tls
from tests.support.waiting import eventually


class Connection:
    """One HTTPS connection kept open (HTTP/1.1 keep-alive) across requests."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @property
    def serial(self) -> int:
        """The serial number of the certificate the server presented on this connection."""
        der = self.writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        return x509.load_der_x509_certificate(der).serial_number

    async def healthz(self) -> bytes:
        """GET /healthz on this connection; the status line."""
        self.writer.write(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        await self.writer.drain()
        head = await self.reader.readuntil(b"\r\n\r\n")
        length = next(
            int(line.split(b":", 1)[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        await self.reader.readexactly(length)
        return head.split(b"\r\n", 1)[0]


async def _connect(port: int, context: ssl.SSLContext) -> Connection:
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=context, server_hostname="localhost"
    )
    return Connection(reader, writer)


def _serial(path: Path) -> int:
    return x509.load_pem_x509_certificate(path.read_bytes()).serial_number


async def test_a_rotated_certificate_is_served_to_new_connections_and_open_ones_carry_on(
    http_settings: Settings, certs: Path, tmp_path: Path
) -> None:
    # A certificates folder of the test's own: rotating it leaves the session's alone.
    folder = tmp_path / "certs"
    shutil.copytree(certs, folder)
    files = CertFiles.of(folder, IdentityKind.ORCHESTRATOR, "orchestrator")
    settings = http_settings.model_copy(update={"certs_dir": folder})
    context = tls(folder, "client", "alice")
    async with Orchestrator(settings) as orchestrator:
        port = orchestrator.http_port
        old = _serial(files.cert)
        kept = await _connect(port, context)
        assert kept.serial == old
        assert await kept.healthz() == b"HTTP/1.1 200 OK"

        # The existing tool, writing in place: the key first, then the certificate.
        issue(folder, IdentityKind.ORCHESTRATOR, "orchestrator")
        new = _serial(files.cert)
        assert new != old

        async def served() -> int:
            fresh = await _connect(port, context)
            try:
                assert await fresh.healthz() == b"HTTP/1.1 200 OK"
                return fresh.serial
            finally:
                fresh.writer.close()
                await fresh.writer.wait_closed()

        await eventually(served, lambda serial: serial == new, within=30)
        # The connection opened before the rotation still answers, with what it was made with.
        assert await kept.healthz() == b"HTTP/1.1 200 OK"
        assert kept.serial == old
        # Client certificates are still checked against the mesh CA on the new context.
        foreign = tmp_path / "foreign"
        create_ca(foreign, "agentmesh.test")
        issue(foreign, IdentityKind.CLIENT, "mallory")
        stranger = tls(foreign, "client", "mallory")
        stranger.load_verify_locations(str(folder / "ca.pem"))
        refused = (ssl.SSLError, ConnectionError, asyncio.IncompleteReadError)

        async def handshake_and_call() -> None:
            probe = await _connect(port, stranger)
            await probe.healthz()  # TLS 1.3: the server's verdict arrives with the first read

        with pytest.raises(refused):
            await handshake_and_call()
        kept.writer.close()
        await kept.writer.wait_closed()
