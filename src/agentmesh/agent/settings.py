"""Settings of an agent process, read from ``AGENTMESH_AGENT_*`` environment variables."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from agentmesh.security.ca import trust_domain_of


class AgentSettings(BaseSettings):
    """Where an agent serves, which orchestrators it registers with, and how it shuts down."""

    model_config = SettingsConfigDict(env_prefix="AGENTMESH_AGENT_", extra="ignore")

    #: Orchestrator replicas to register with (``host:port``); in env: comma-separated or JSON.
    orchestrators: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["localhost:50051"]
    )
    #: Where the Agent service listens; port 0 picks a free one.
    listen: str = "127.0.0.1:0"
    #: The endpoint registered with orchestrators; empty means the listen host and bound port.
    advertise: str = ""
    #: Folder holding ca.pem and agent/<name>.pem/.key.
    certs_dir: Path = Path("certs")
    #: Registration name; empty means the Agent class's ``name``.
    name: str = ""
    #: SPIFFE trust domain of the mesh: callers of any other are refused. Empty means the
    #: trust domain of the CA in ``certs_dir`` (``ca.pem``), which is the mesh's.
    trust_domain: str = ""
    #: How long a drain waits for running assignments before handing them back.
    drain_timeout_seconds: float = Field(default=10.0, ge=0)
    #: Re-register when no orchestrator opened a Session this long after registering.
    session_wait_seconds: float = Field(default=3.0, gt=0)
    #: Largest message sent to an orchestrator; a bigger output fails its one assignment
    #: (as ``invalid_output``) instead of breaking the whole Session. Match the orchestrator's
    #: ``AGENTMESH_MAX_MESSAGE_BYTES``.
    max_message_bytes: int = Field(default=4 * 1024 * 1024, gt=1024)
    #: How many finished outcomes are remembered for idempotent re-sends.
    result_cache_size: int = Field(default=1024, ge=0)
    #: Pause before retrying a registration the orchestrator refused (its config may change).
    register_retry_seconds: float = Field(default=30.0, gt=0)

    def resolved_trust_domain(self) -> str:
        """``trust_domain``, or when empty the one the CA in ``certs_dir`` was made for."""
        return self.trust_domain or trust_domain_of(self.certs_dir)

    @field_validator("orchestrators", mode="before")
    @classmethod
    def _split_addresses(cls, value: Any) -> Any:
        # Env vars carry "a:1,b:2" more often than JSON; accept both.
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return json.loads(text)
            return [part.strip() for part in text.split(",") if part.strip()]
        return value
