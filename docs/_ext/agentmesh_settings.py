"""A Sphinx directive that tables the ``AGENTMESH_*`` settings of a pydantic-settings class.

The settings classes change often while the project is young, so the table is made from the
source at build time instead of by hand. The source is parsed, never imported: an import
error anywhere in the package must not break the documentation build.

Usage::

    .. agentmesh-settings:: src/agentmesh/config.py Settings AGENTMESH_
"""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Any

from docutils import nodes
from sphinx.application import Sphinx
from sphinx.util.docutils import SphinxDirective

ROOT = Path(__file__).resolve().parent.parent.parent


def _default(value: ast.expr | None) -> str:
    """How a field's default reads in the table; "" for an empty string."""
    if value is None:
        return "(required)"
    if isinstance(value, ast.Call) and ast.unparse(value.func) == "Field":
        for keyword in value.keywords:
            if keyword.arg == "default":
                return _default(keyword.value)
            if keyword.arg == "default_factory" and isinstance(keyword.value, ast.Lambda):
                return _default(keyword.value.body)
        return "(required)"
    if isinstance(value, ast.Call) and ast.unparse(value.func) == "Path" and value.args:
        return _default(value.args[0])
    if isinstance(value, ast.Constant):
        return "(none)" if value.value is None else str(value.value)
    return ast.unparse(value)


def _inline(text: str) -> list[nodes.Node]:
    """Plain text with ``literal`` parts; no other markup, so no comment can break the build."""
    parts = re.split(r"``(.+?)``", text)
    return [
        nodes.literal(text=part) if index % 2 else nodes.Text(part)
        for index, part in enumerate(parts)
        if part
    ]


def _comment_above(lines: list[str], lineno: int) -> str:
    """The ``#:`` comment lines right above line ``lineno`` (1-based), joined."""
    found: list[str] = []
    index = lineno - 2
    while index >= 0 and lines[index].strip().startswith("#:"):
        found.insert(0, lines[index].strip()[2:].strip())
        index -= 1
    return " ".join(found)


def settings_rows(path: Path, class_name: str, prefix: str) -> list[tuple[str, str, str]]:
    """(variable, default, meaning) of every field of ``class_name`` in ``path``."""
    source = path.read_text()
    lines = source.splitlines()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ClassDef) and node.name == class_name:
            return [
                (
                    f"{prefix}{item.target.id.upper()}",
                    _default(item.value),
                    _comment_above(lines, item.lineno) or "(undocumented)",
                )
                for item in node.body
                if isinstance(item, ast.AnnAssign)
                and isinstance(item.target, ast.Name)
                and item.target.id != "model_config"
            ]
    return []


class SettingsTable(SphinxDirective):
    """``.. agentmesh-settings:: PATH CLASS PREFIX``: a table of that class's settings."""

    required_arguments = 3

    def run(self) -> list[nodes.Node]:
        relative, class_name, prefix = self.arguments
        path = ROOT / relative
        self.env.note_dependency(str(path))
        rows = settings_rows(path, class_name, prefix) if path.exists() else []
        if not rows:
            # Say so on the page rather than fail the -W build over code in flux.
            paragraph = nodes.paragraph()
            paragraph += _inline(f"See ``{relative}`` (class ``{class_name}``) for the settings.")
            return [paragraph]
        group = nodes.tgroup(cols=3)
        for width in (34, 20, 46):
            group += nodes.colspec(colwidth=width)
        group += nodes.thead("", self._row("variable", "default", "meaning", header=True))
        body = nodes.tbody()
        for variable, default, meaning in rows:
            body += self._row(variable, default, meaning)
        group += body
        return [nodes.table("", group)]

    @staticmethod
    def _row(variable: str, default: str, meaning: str, *, header: bool = False) -> nodes.row:
        row = nodes.row()
        cells: list[list[nodes.Node]] = (
            [[nodes.Text(variable)], [nodes.Text(default)], [nodes.Text(meaning)]]
            if header
            else [
                [nodes.literal(text=variable)],
                [nodes.literal(text=default)] if default else [nodes.emphasis(text="empty")],
                _inline(meaning),
            ]
        )
        for content in cells:
            paragraph = nodes.paragraph()
            paragraph += content
            row += nodes.entry("", paragraph)
        return row


def setup(app: Sphinx) -> dict[str, Any]:
    """Register the directive."""
    app.add_directive("agentmesh-settings", SettingsTable)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
