"""Sphinx configuration of the agentmesh documentation.

No autodoc yet: the package is still taking shape and the build runs with -W, so these
pages are written by hand. Two things are read from the source instead, without importing
it: the version (pyproject.toml) and the settings tables (docs/_ext/agentmesh_settings.py).
"""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path

_docs = Path(__file__).resolve().parent
sys.path.insert(0, str(_docs / "_ext"))
_pyproject = tomllib.loads((_docs.parent / "pyproject.toml").read_text())

project = "agentmesh"
author = "the agentmesh authors"
copyright = "the agentmesh authors"
release = _pyproject["project"]["version"]
version = ".".join(release.split(".")[:2])

extensions = ["agentmesh_settings"]
exclude_patterns = ["_build", "_ext"]
root_doc = "index"

html_theme = "alabaster"
html_title = f"agentmesh {release}"
html_theme_options = {
    "description": "A gRPC service mesh for AI agents",
    "fixed_sidebar": True,
}
pygments_style = "sphinx"
