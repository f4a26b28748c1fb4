"""Certificates, mTLS credentials, workload identities, authorization policy and revocation."""

from agentmesh.security.ca import CertFiles, create_ca, identity_of, issue, trust_domain_of
from agentmesh.security.identity import Identity, IdentityKind
from agentmesh.security.tls import (
    Peer,
    channel_credentials,
    peer_certificate,
    peer_identity,
    server_credentials,
)

__all__ = [
    "CertFiles",
    "Identity",
    "IdentityKind",
    "Peer",
    "channel_credentials",
    "create_ca",
    "identity_of",
    "issue",
    "peer_certificate",
    "peer_identity",
    "server_credentials",
    "trust_domain_of",
]
