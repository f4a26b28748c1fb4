"""Sphinx configuration of the agentmesh documentation.

No autodoc yet: the package is still taking shape and the build runs with -W, so these
pages are written by hand. The version is read from pyproject.toml so it never drifts.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

_pyproject = tomllib.loads((Path(__file__).parent.parent / "pyproject.toml").read_text())

project = "agentmesh"
author = "the agentmesh authors"
copyright = "the agentmesh authors"
release = _pyproject["project"]["version"]
version = ".".join(release.split(".")[:2])

extensions: list[str] = []
exclude_patterns = ["_build"]
root_doc = "index"

html_theme = "alabaster"
html_title = f"agentmesh {release}"
html_theme_options = {
    "description": "A gRPC service mesh for AI agents",
    "fixed_sidebar": True,
}
pygments_style = "sphinx"
