"""Who is calling the HTTP API: a bearer token, or the client certificate of the TLS session.

The certificate comes from the ASGI TLS extension (``scope["extensions"]["tls"]
["client_cert_chain"]``), which :mod:`agentmesh.orchestrator.http.server` fills from the
verified peer certificate of the connection (uvicorn does not). A token, when sent, wins over
the certificate: it is what the caller chose for this request. Either way the identity then
passes the same :meth:`~agentmesh.security.guard.Guard.authenticate` as gRPC callers (trust
domain, revocation list); a token's identity is refused when revoked as an identity, and the
token itself when it is removed from the tokens file.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import HTTPConnection

from agentmesh.errors import Unauthenticated
from agentmesh.security import Identity, Peer
from agentmesh.security.guard import Guard
from agentmesh.security.tls import peer_of_certificate
from agentmesh.security.tokens import Tokens
from agentmesh.security.watch import ReloadingFile


def client_certificate(scope: dict[str, Any] | Any) -> bytes | None:
    """The PEM of the verified client certificate of the request's connection, if any."""
    tls = (scope.get("extensions") or {}).get("tls") or {}
    chain = tls.get("client_cert_chain") or ()
    return chain[0].encode("ascii") if chain else None


class Authenticator:
    """Finds and checks the caller of each request.

    With ``insecure_identity`` (development mode, plaintext) a caller with neither token nor
    certificate is that identity, as on the gRPC port.
    """

    def __init__(
        self,
        guard: Guard,
        tokens: ReloadingFile[Tokens],
        *,
        insecure_identity: Identity | None = None,
    ) -> None:
        self._guard = guard
        self._tokens = tokens
        self._insecure = None if insecure_identity is None else Peer(insecure_identity, None)

    def peer(self, connection: HTTPConnection) -> Peer:
        """The verified caller; Unauthenticated when there is none or it is refused."""
        header = connection.headers.get("authorization")
        pem = client_certificate(connection.scope)
        if header is not None:
            scheme, _, token = header.partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise Unauthenticated("the Authorization header must be 'Bearer <token>'")
            identity = self._tokens.value.identity_of(token.strip())
            if identity is None:
                raise Unauthenticated("unknown or revoked token")
            peer = Peer(identity, None)
        elif pem is not None:
            peer = peer_of_certificate(pem)
        elif self._insecure is not None:
            return self._insecure
        else:
            raise Unauthenticated(
                "a client certificate from the mesh CA or a bearer token is required"
            )
        self._guard.authenticate(peer)
        return peer
