"""Certificates, mTLS credentials and workload identities."""

from agentmesh.security.ca import CertFiles, create_ca, identity_of, issue, trust_domain_of
from agentmesh.security.identity import Identity, IdentityKind
from agentmesh.security.tls import channel_credentials, peer_identity, server_credentials

__all__ = [
    "CertFiles",
    "Identity",
    "IdentityKind",
    "channel_credentials",
    "create_ca",
    "identity_of",
    "issue",
    "peer_identity",
    "server_credentials",
    "trust_domain_of",
]
