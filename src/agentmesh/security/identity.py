"""Workload identities: SPIFFE-style URIs carried in certificates' URI SANs."""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

from agentmesh.errors import Unauthenticated, ValidationError

_NAME = re.compile(r"^[a-z0-9](?:[a-z0-9._-]{0,62}[a-z0-9])?$")


class IdentityKind(enum.StrEnum):
    """The roles a workload can hold in the mesh."""

    ORCHESTRATOR = "orchestrator"
    AGENT = "agent"
    CLIENT = "client"
    ADMIN = "admin"


def check_name(name: str, field: str = "name") -> str:
    """Return ``name`` if it is a valid workload name, else raise ValidationError."""
    if not _NAME.match(name):
        raise ValidationError(
            "must be 1-64 characters of lowercase letters, digits, '.', '_' or '-', "
            "starting and ending with a letter or digit",
            field=field,
        )
    return name


@dataclass(frozen=True, slots=True)
class Identity:
    """Who a peer is: ``spiffe://<trust_domain>/<kind>/<name>``."""

    trust_domain: str
    kind: IdentityKind
    name: str

    @property
    def uri(self) -> str:
        """The SPIFFE ID written into certificates."""
        return f"spiffe://{self.trust_domain}/{self.kind}/{self.name}"

    def __str__(self) -> str:
        return self.uri

    @classmethod
    def parse(cls, uri: str) -> Identity:
        """Read an identity from its SPIFFE ID; ValidationError when it is not one of ours."""
        prefix = "spiffe://"
        if not uri.startswith(prefix):
            raise ValidationError(f"not a SPIFFE ID: {uri!r}", field="identity")
        parts = uri[len(prefix) :].split("/")
        if len(parts) != 3 or not parts[0]:
            raise ValidationError(
                f"expected spiffe://<trust-domain>/<kind>/<name>, got {uri!r}", field="identity"
            )
        domain, kind, name = parts
        try:
            identity_kind = IdentityKind(kind)
        except ValueError:
            raise ValidationError(f"unknown identity kind {kind!r}", field="identity") from None
        return cls(domain, identity_kind, check_name(name, "identity"))


def require_trust_domain(
    identity: Identity, trust_domain: str, *, field: str | None = None
) -> Identity:
    """``identity`` when it belongs to ``trust_domain``, else Unauthenticated.

    The mesh CA may sign identities of several trust domains (or be shared with another
    mesh); a valid certificate alone therefore says nothing about membership of this one.
    """
    if identity.trust_domain != trust_domain:
        raise Unauthenticated(
            f"{identity} is not of this mesh's trust domain {trust_domain!r}", field=field
        )
    return identity
