"""Bearer tokens of the HTTP API: secrets bound to identities, kept only as SHA-256 hashes.

A YAML file (``tokens.yaml`` in the certificates folder unless configured)::

    tokens:
      - id: 3f9c2a71                  # public handle, shown by `agentmesh tokens list`
        identity: spiffe://agentmesh.local/client/alice
        sha256: 5e88...               # hash of the whole token; the token itself is not kept
        created: "2026-12-01T10:00:00+00:00"

A token is ``amt_<id>_<secret>``: whoever reads the file learns who holds tokens, not the
tokens. ``agentmesh tokens issue`` adds one (printing the token once), ``agentmesh tokens
revoke ID`` removes it; a running orchestrator picks the change up. Revoking the identity in
the revocation list refuses its tokens too, as it refuses its certificates.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from pydantic import ValidationError as PydanticValidationError

from agentmesh.errors import NotFound, ValidationError
from agentmesh.security.identity import Identity
from agentmesh.security.policy import config_error, read_document
from agentmesh.security.watch import replace_file

PREFIX = "amt_"


def _check_uri(uri: str) -> str:
    try:
        Identity.parse(uri)
    except ValidationError as exc:
        raise ValueError(exc.message) from None
    return uri


class TokenEntry(BaseModel):
    """One issued token as the file keeps it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(pattern=r"^[0-9a-f]{8}$")
    identity: Annotated[str, AfterValidator(_check_uri)]
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    created: str = ""


class TokenDocument(BaseModel):
    """The tokens file's contents."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    tokens: tuple[TokenEntry, ...] = ()


def digest(token: str) -> str:
    """The SHA-256 hex digest a token is stored as."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass(frozen=True, slots=True)
class Tokens:
    """The tokens in force, ready for lookups by hash."""

    entries: tuple[TokenEntry, ...] = ()
    _by_hash: dict[str, TokenEntry] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        self._by_hash.update({e.sha256: e for e in self.entries})

    def identity_of(self, token: str) -> Identity | None:
        """The identity ``token`` was issued to; None for an unknown (or revoked) token."""
        if not token.startswith(PREFIX):
            return None
        entry = self._by_hash.get(digest(token))
        # compare_digest: the lookup already matched, this keeps the check constant-time.
        if entry is None or not secrets.compare_digest(entry.sha256, digest(token)):
            return None
        return Identity.parse(entry.identity)


def parse_tokens(data: Any, *, source: str) -> Tokens:
    """Tokens from the parsed contents of the file; ConfigError naming the bad entry."""
    if data is None:
        return Tokens()
    try:
        document = TokenDocument.model_validate(data)
    except PydanticValidationError as exc:
        raise config_error(exc, source) from None
    return Tokens(document.tokens)


def load_tokens(path: Path) -> Tokens:
    """The tokens in ``path``; ConfigError when it is unreadable or invalid."""
    return parse_tokens(read_document(path), source=str(path))


def _save(path: Path, tokens: Tokens) -> None:
    """Replace the file atomically (a reader never sees half of it), readable by its owner."""
    document = {"tokens": [e.model_dump() for e in tokens.entries]}
    text = "# agentmesh HTTP API tokens (edited by `agentmesh tokens`)\n" + yaml.safe_dump(
        document, sort_keys=False
    )
    replace_file(path, text, mode=0o600)


def issue_token(path: Path, identity: Identity) -> tuple[TokenEntry, str]:
    """Add a token for ``identity`` to the file in ``path``; return its entry and the token.

    The token is returned once and never stored: only its hash is written.
    """
    current = load_tokens(path) if path.exists() else Tokens()
    taken = {e.id for e in current.entries}
    token_id = secrets.token_hex(4)
    while token_id in taken:
        token_id = secrets.token_hex(4)
    token = f"{PREFIX}{token_id}_{secrets.token_urlsafe(32)}"
    entry = TokenEntry(
        id=token_id,
        identity=identity.uri,
        sha256=digest(token),
        created=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    _save(path, Tokens((*current.entries, entry)))
    return entry, token


def revoke_token(path: Path, token_id: str) -> TokenEntry:
    """Remove the token ``token_id`` from the file; NotFound when there is none."""
    current = load_tokens(path) if path.exists() else Tokens()
    kept = tuple(e for e in current.entries if e.id != token_id)
    if len(kept) == len(current.entries):
        raise NotFound(f"no token {token_id!r} in {path}", field="id")
    _save(path, Tokens(kept))
    return next(e for e in current.entries if e.id == token_id)
