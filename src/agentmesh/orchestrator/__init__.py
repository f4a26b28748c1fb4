"""The orchestrator: the process that plans tasks, matches agents and runs steps.

Layers, top to bottom (an import only ever goes down; ``tests/test_layers.py`` enforces it):
``app`` → ``api``, ``http`` → ``engine`` → ``planning`` → ``agents`` → ``events``, ``store``,
``cache``, ``metrics``, ``tuning``. Every layer may use the shared vocabulary
(``agentmesh.models``, ``errors``, ``config``, ``schemas``, ``limits``, ``wire``, ``security``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from agentmesh.orchestrator.app import Orchestrator, serve

__all__ = ["Orchestrator", "serve"]


def __getattr__(name: str) -> Any:
    # Lazy, so that importing one layer (``agentmesh.orchestrator.store``) does not load the
    # whole orchestrator through ``app``.
    if name in __all__:
        from agentmesh.orchestrator import app

        return getattr(app, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
