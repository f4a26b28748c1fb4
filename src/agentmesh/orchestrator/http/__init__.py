"""The HTTP/JSON front door: FastAPI routes over the same task service as gRPC, on uvicorn."""

from agentmesh.orchestrator.http.auth import Authenticator
from agentmesh.orchestrator.http.routes import create_api
from agentmesh.orchestrator.http.server import HttpServer

__all__ = ["Authenticator", "HttpServer", "create_api"]
