"""The orchestrator's gRPC face: servicers, interceptors and the process that wires them."""

from agentmesh.server.app import Orchestrator, serve

__all__ = ["Orchestrator", "serve"]
