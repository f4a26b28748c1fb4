"""The revocation list: identities and certificate serial numbers the mesh no longer trusts.

A YAML (or JSON) file::

    identities:
      - spiffe://agentmesh.local/agent/rogue
    serials:
      - "0x5f3a..."           # hex with 0x, or colon-separated as openssl prints it,
      - 1234567890            # or a decimal number

Revoking an identity refuses every certificate carrying it; revoking a serial refuses one
certificate (useful when a key leaked but the workload keeps its name with a new one).
``agentmesh certs revoke`` edits the file; a running orchestrator picks the change up.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict
from pydantic import ValidationError as PydanticValidationError

from agentmesh.errors import ValidationError
from agentmesh.security.identity import Identity
from agentmesh.security.policy import config_error, read_document
from agentmesh.security.watch import replace_file


def parse_serial(value: int | str) -> int:
    """A certificate serial number from an int, ``0x…`` hex, ``aa:bb:…`` hex or decimal text."""
    if isinstance(value, bool):
        raise ValueError("a serial number is not a boolean")
    if isinstance(value, int):
        serial = value
    else:
        text = value.strip().lower()
        try:
            if text.startswith("0x"):
                serial = int(text[2:], 16)
            elif ":" in text:
                serial = int(text.replace(":", ""), 16)
            else:
                serial = int(text, 10)
        except ValueError:
            raise ValueError(f"{value!r} is not a serial number") from None
    if serial <= 0 or serial.bit_length() > 160:
        raise ValueError(f"{value!r} is not a serial number (1 to 20 bytes)")
    return serial


def _check_uri(uri: str) -> str:
    try:
        Identity.parse(uri)
    except ValidationError as exc:
        raise ValueError(exc.message) from None
    return uri


def _check_serial(serial: int | str) -> int | str:
    parse_serial(serial)
    return serial


class RevocationDocument(BaseModel):
    """The revocation file's contents."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    identities: tuple[Annotated[str, AfterValidator(_check_uri)], ...] = ()
    serials: tuple[Annotated[int | str, AfterValidator(_check_serial)], ...] = ()


@dataclass(frozen=True, slots=True)
class Revocations:
    """What is revoked, ready for lookups."""

    identities: frozenset[str] = frozenset()
    serials: frozenset[int] = frozenset()

    def reason(self, identity: Identity | str, serial: int | None) -> str | None:
        """Why a certificate with ``identity`` and ``serial`` is refused; None when it is not."""
        if str(identity) in self.identities:
            return f"revoked: identity {identity} is on the revocation list"
        if serial is not None and serial in self.serials:
            return f"revoked: certificate serial {serial:#x} is on the revocation list"
        return None

    def to_document(self) -> dict[str, Any]:
        """The file form, sorted so that edits make small diffs."""
        return {
            "identities": sorted(self.identities),
            "serials": [f"{s:#x}" for s in sorted(self.serials)],
        }


def parse_revocations(data: Any, *, source: str) -> Revocations:
    """Revocations from the parsed contents of the file; ConfigError naming the bad entry."""
    if data is None:
        return Revocations()
    try:
        document = RevocationDocument.model_validate(data)
    except PydanticValidationError as exc:
        raise config_error(exc, source) from None
    return Revocations(
        frozenset(document.identities), frozenset(parse_serial(s) for s in document.serials)
    )


def load_revocations(path: Path) -> Revocations:
    """The revocation list in ``path``; ConfigError when it is unreadable or invalid."""
    return parse_revocations(read_document(path), source=str(path))


def revoke(
    path: Path, *, identities: Iterable[Identity] = (), serials: Iterable[int] = ()
) -> Revocations:
    """Add to the revocation list in ``path`` (created when missing); return the new list.

    The file is replaced atomically, so a reader never sees half of it.
    """
    current = load_revocations(path) if path.exists() else Revocations()
    updated = Revocations(
        current.identities | {i.uri for i in identities}, current.serials | set(serials)
    )
    text = "# agentmesh revocation list (edited by `agentmesh certs revoke`)\n" + yaml.safe_dump(
        updated.to_document(), sort_keys=False
    )
    replace_file(path, text, mode=0o644)
    return updated
