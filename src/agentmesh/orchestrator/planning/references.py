"""The ``${...}`` reference language of step inputs.

A reference names a value that is known only when a step is about to run:

- ``${input}``, ``${input.a.b}``: the task input, or a path inside it;
- ``${steps.ID.output}``, ``${steps.ID.output.x.0.y}``: a step's output (for a ``for_each``
  step, the list of every instance's output);
- ``${item}``, ``${item.x}``, ``${index}``: inside a ``for_each`` step, the current element and
  its position.

Path segments are object keys, or list positions where the value at hand is a list. A string
that is exactly one reference becomes the referenced value, of whatever JSON type; references
inside a longer string are interpolated as text, non-strings JSON-encoded. ``$$`` stands for a
literal ``$``, so ``$${input}`` is the text ``${input}``. Object keys are never interpreted.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Final, Literal

from agentmesh.errors import ValidationError, field_path
from agentmesh.models import JSON

STEP_ID_PATTERN: Final = re.compile(r"[a-zA-Z][a-zA-Z0-9_-]{0,63}")
"""What a step id looks like; fan-out instances add ``[i]`` to it."""

Root = Literal["input", "steps", "item", "index"]

# "$$" (an escaped dollar), a complete "${...}", or an opening "${" that never closes.
_TOKEN = re.compile(r"\$\$|\$\{([^}]*)\}|\$\{")
_SEGMENT = re.compile(r"[^\s.${}]+")
_FORMS = "${input...}, ${steps.ID.output...}, ${item...} or ${index}"


@dataclass(frozen=True, slots=True)
class Reference:
    """One parsed ``${...}`` expression."""

    root: Root
    #: The referenced step's id when ``root`` is ``"steps"``, else empty.
    step: str = ""
    #: Keys and list positions below the root, still as written.
    path: tuple[str, ...] = ()

    def __str__(self) -> str:
        head = f"steps.{self.step}.output" if self.root == "steps" else self.root
        return "${" + ".".join((head, *self.path)) + "}"


Part = str | Reference
"""A piece of a parsed string: literal text (unescaped) or a reference."""


class _Unbound:
    """Marks ``item``/``index`` as not available (outside a ``for_each`` instance)."""

    def __repr__(self) -> str:
        return "UNBOUND"


UNBOUND: Final = _Unbound()


def parse(text: str, *, field: str = "") -> tuple[Part, ...]:
    """Split ``text`` into literal text and references.

    Raises :class:`~agentmesh.errors.ValidationError` (with ``field``) for a malformed
    expression: an unclosed ``${``, an unknown root, a bad step id or path segment.
    """
    if "$" not in text:
        return (text,) if text else ()
    parts: list[Part] = []
    literal: list[str] = []
    pos = 0
    for match in _TOKEN.finditer(text):
        literal.append(text[pos : match.start()])
        pos = match.end()
        token = match.group(0)
        if token == "$$":
            literal.append("$")
            continue
        if match.group(1) is None:
            raise ValidationError(f"unclosed '${{' in {_excerpt(text)}", field=field)
        pending = "".join(literal)
        if pending:
            parts.append(pending)
        literal.clear()
        parts.append(_parse_expression(match.group(1), field=field))
    literal.append(text[pos:])
    tail = "".join(literal)
    if tail:
        parts.append(tail)
    return tuple(parts)


def _parse_expression(expression: str, *, field: str) -> Reference:
    segments = expression.split(".")
    for segment in segments:
        if not _SEGMENT.fullmatch(segment):
            raise ValidationError(
                f"malformed reference ${{{expression}}}: expected {_FORMS}", field=field
            )
    root, rest = segments[0], tuple(segments[1:])
    if root == "input":
        return Reference(root="input", path=rest)
    if root == "item":
        return Reference(root="item", path=rest)
    if root == "index":
        if rest:
            raise ValidationError(f"${{index}} is a number and has no '.{rest[0]}'", field=field)
        return Reference(root="index")
    if root == "steps":
        if len(rest) < 2 or rest[1] != "output":
            raise ValidationError(
                f"malformed reference ${{{expression}}}: expected ${{steps.ID.output...}}",
                field=field,
            )
        if not STEP_ID_PATTERN.fullmatch(rest[0]):
            raise ValidationError(
                f"malformed reference ${{{expression}}}: {rest[0]!r} is not a step id",
                field=field,
            )
        return Reference(root="steps", step=rest[0], path=rest[2:])
    raise ValidationError(f"unknown reference ${{{expression}}}: expected {_FORMS}", field=field)


def iter_references(value: JSON, *, field: str = "") -> Iterator[tuple[str, Reference]]:
    """Every reference in a nested JSON value, with the field path of the string holding it."""
    for path, text in _strings(value, field):
        for part in parse(text, field=path):
            if isinstance(part, Reference):
                yield path, part


def has_references(value: JSON) -> bool:
    """True when any string in ``value`` holds a reference."""
    return any(True for _ in iter_references(value))


def step_references(value: JSON) -> set[str]:
    """Ids of the steps referenced anywhere in a nested JSON value."""
    return {ref.step for _, ref in iter_references(value) if ref.root == "steps"}


def resolve(
    value: JSON,
    *,
    input: Mapping[str, JSON],
    outputs: Mapping[str, JSON],
    item: JSON = UNBOUND,
    index: int | _Unbound = UNBOUND,
    field: str = "input",
) -> JSON:
    """``value`` with every reference replaced; the result holds no reference any more.

    ``outputs`` maps step ids to outputs (a ``for_each`` step to the list of its instances'
    outputs). Referenced values are shared, not copied. Raises
    :class:`~agentmesh.errors.ValidationError`, its ``field`` the path of the offending string
    under ``field``, for a malformed reference, a missing step output or path, or ``${item}``
    and ``${index}`` outside a ``for_each`` instance.
    """

    def lookup(ref: Reference, where: str) -> JSON:
        if ref.root == "input":
            return _walk(input, ref, where)
        if ref.root == "steps":
            if ref.step not in outputs:
                raise ValidationError(f"{ref}: step {ref.step!r} has no output", field=where)
            return _walk(outputs[ref.step], ref, where)
        bound = item if ref.root == "item" else index
        if isinstance(bound, _Unbound):
            raise ValidationError(f"{ref} is only defined in a for_each step", field=where)
        return _walk(bound, ref, where)

    return _render(value, field, lookup, escape=False)


def bind_item(value: JSON, *, item: JSON, index: int, field: str = "input") -> JSON:
    """``value`` with ``${item}`` and ``${index}`` replaced and every other reference kept.

    Text that came from ``item`` is escaped, so a string in the data that looks like a
    reference stays text when the result is later passed through :func:`resolve`.
    """

    def lookup(ref: Reference, where: str) -> JSON:
        if ref.root == "item":
            return _walk(item, ref, where)
        if ref.root == "index":
            return index
        return _KEEP

    return _render(value, field, lookup, escape=True)


def lookup_path(value: JSON, path: tuple[str, ...] | list[str]) -> JSON:
    """The value at ``path`` inside ``value``; raises ``KeyError`` naming the missing segment.

    Segments are object keys, or list positions where the value at hand is a list.
    """
    for depth, segment in enumerate(path):
        if isinstance(value, Mapping):
            if segment not in value:
                raise KeyError(_missing(path, depth, f"no key {segment!r}"))
            value = value[segment]
        elif isinstance(value, list):
            if not segment.isdigit() or int(segment) >= len(value):
                raise KeyError(
                    _missing(path, depth, f"no position {segment!r} in a list of {len(value)}")
                )
            value = value[int(segment)]
        else:
            raise KeyError(
                _missing(path, depth, f"no {segment!r} in a value of type {type(value).__name__}")
            )
    return value


def _missing(path: tuple[str, ...] | list[str], depth: int, why: str) -> str:
    where = ".".join(path[:depth]) or "the top"
    return f"{why} at {where}"


def _walk(value: JSON, ref: Reference, where: str) -> JSON:
    try:
        return lookup_path(value, ref.path)
    except KeyError as exc:
        raise ValidationError(f"{ref} not found: {exc.args[0]}", field=where) from None


class _Keep:
    """Returned by a lookup to leave a reference in place."""


_KEEP: Final = _Keep()


def _render(
    value: JSON, field: str, lookup: Callable[[Reference, str], JSON], *, escape: bool
) -> JSON:
    if isinstance(value, str):
        return _render_string(value, field, lookup, escape=escape)
    if isinstance(value, Mapping):
        return {
            key: _render(item, field_path(field, key), lookup, escape=escape)
            for key, item in value.items()
        }
    if isinstance(value, list | tuple):
        return [
            _render(item, field_path(field, position), lookup, escape=escape)
            for position, item in enumerate(value)
        ]
    return value


def _render_string(
    text: str, field: str, lookup: Callable[[Reference, str], JSON], *, escape: bool
) -> JSON:
    if "$" not in text:
        return text
    parts = parse(text, field=field)
    if len(parts) == 1 and isinstance(parts[0], Reference):
        found = lookup(parts[0], field)
        if found is _KEEP:
            return text
        return _escape_deep(found) if escape else found
    pieces: list[str] = []
    for part in parts:
        if isinstance(part, str):
            pieces.append(_escape(part) if escape else part)
            continue
        found = lookup(part, field)
        if found is _KEEP:
            pieces.append(str(part))
            continue
        text_value = found if isinstance(found, str) else _to_text(found)
        pieces.append(_escape(text_value) if escape else text_value)
    return "".join(pieces)


def _to_text(value: JSON) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _escape(text: str) -> str:
    return text.replace("$", "$$")


def _escape_deep(value: JSON) -> JSON:
    if isinstance(value, str):
        return _escape(value)
    if isinstance(value, Mapping):
        return {key: _escape_deep(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_escape_deep(item) for item in value]
    return value


def _strings(value: JSON, field: str) -> Iterator[tuple[str, str]]:
    # Iterative, so a pathologically deep value cannot exhaust the interpreter's stack.
    stack: list[tuple[JSON, str]] = [(value, field)]
    while stack:
        current, path = stack.pop()
        if isinstance(current, str):
            yield path, current
        elif isinstance(current, Mapping):
            stack.extend(
                (item, field_path(path, key)) for key, item in reversed(list(current.items()))
            )
        elif isinstance(current, list | tuple):
            stack.extend(
                (item, field_path(path, i)) for i, item in reversed(list(enumerate(current)))
            )


def _excerpt(text: str, limit: int = 60) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "...")
