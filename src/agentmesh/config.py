"""Settings, read from ``AGENTMESH_*`` environment variables (and an optional .env file)."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Everything an orchestrator process can be configured with.

    Agents have their own settings, :class:`agentmesh.agent.AgentSettings`
    (``AGENTMESH_AGENT_*``).
    """

    model_config = SettingsConfigDict(env_prefix="AGENTMESH_", env_file=".env", extra="ignore")

    @property
    def replica(self) -> str:
        """The replica name used for task leases."""
        return self.replica_id or f"{socket.gethostname()}/{self.cert_name}/{self.listen}"

    #: SQLAlchemy async URL. SQLite file by default; ``postgresql+asyncpg://...`` in production.
    database_url: str = "sqlite+aiosqlite:///var/agentmesh.db"
    #: PostgreSQL schema to keep the tables in (empty: the server's search_path).
    database_schema: str = ""
    #: Redis URL; empty to run on the in-memory cache alone.
    redis_url: str = ""
    #: Prefix of every Redis key and channel: replicas of one mesh share it, another mesh
    #: on the same Redis takes its own.
    redis_namespace: str = Field(default="agentmesh", min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    #: How long cached agent cards live in Redis (renewed while the agent is connected).
    cache_ttl_seconds: float = Field(default=30.0, gt=0)

    #: Where the orchestrator serves Orchestrator and Registry.
    listen: str = "127.0.0.1:50051"
    #: Folder holding ca.pem and the issued certificates.
    certs_dir: Path = Path("certs")
    #: SPIFFE trust domain of this mesh's identities.
    trust_domain: str = "agentmesh.local"
    #: Certificate and key of this process (relative to certs_dir unless absolute).
    cert_name: str = "orchestrator"
    #: Authorization policy file (YAML, or JSON when it ends in .json), reloaded when it
    #: changes; empty for the built-in policy: agents register as themselves with any
    #: capability that no agent of another identity offers with other schemas, clients and
    #: admins submit, owners see and cancel their own tasks, admins every task, and anyone
    #: lists agents.
    policy_file: str = ""
    #: Revocation list (SPIFFE IDs and certificate serial numbers), reloaded when it changes
    #: and edited by ``agentmesh certs revoke``; empty for none.
    revocation_file: str = ""
    #: How often the policy and revocation files are checked for changes.
    security_reload_seconds: float = Field(default=1.0, gt=0)
    #: Development only: serve plaintext without client certificates; every caller is then
    #: the unauthenticated identity ``spiffe://<trust_domain>/admin/insecure-dev``.
    insecure: bool = False
    #: host:port of the HTTP/JSON API (HTTPS with client certificates or bearer tokens;
    #: plaintext only in insecure mode; port 0: any free port); empty for none.
    http_listen: str = ""
    #: Bearer tokens of the HTTP API, stored as SHA-256 hashes and edited by
    #: ``agentmesh tokens``; reloaded when it changes. Empty: ``tokens.yaml`` in certs_dir.
    tokens_file: str = ""

    @property
    def tokens_path(self) -> Path:
        """Where the HTTP API's bearer tokens are kept."""
        return Path(self.tokens_file) if self.tokens_file else self.certs_dir / "tokens.yaml"

    #: This orchestrator's name among replicas sharing one database; empty: derived from
    #: the host name, certificate and listen address (stable across restarts).
    replica_id: str = ""
    #: How long a replica's claim on a task lasts without renewal; a killed replica's
    #: tasks are taken over by another after at most this long.
    lease_seconds: float = Field(default=10.0, gt=0)

    #: Pools file (YAML, or JSON when it ends in .json): limits on the shared resources
    #: capabilities declare they use (concurrent uses, requests per second, tokens per
    #: minute), held across every agent and replica, in Redis when configured, else in the
    #: database; empty for none. Read at start: a bad file stops the orchestrator, naming the field.
    pools_file: str = ""
    #: The window of a pool's ``tokens_per_minute``: a minute (shorter only in tests).
    pool_token_window_seconds: float = Field(default=60.0, gt=0)

    #: How often the orchestrator pings each agent's Session.
    ping_interval_seconds: float = Field(default=1.0, gt=0)
    #: An agent that answers no ping for this long is dropped and its work failed over.
    agent_timeout_seconds: float = Field(default=3.0, gt=0)
    #: A connection to the orchestrator with no call on it for this long is closed (an HTTP/2
    #: GOAWAY; the peer's channel connects again at its next call). An agent's registration
    #: channel is used only to register and to deregister: held open, each kept ~100 KiB of
    #: TLS and HTTP/2 state in the orchestrator (100 MiB at a thousand agents, issue 9).
    idle_connection_seconds: float = Field(default=10.0, ge=1)
    #: Attempts per step unless the step's retry policy says otherwise.
    default_max_attempts: int = Field(default=3, ge=1)
    #: Timeout of one attempt unless the step says otherwise.
    default_step_timeout_seconds: float = Field(default=60.0, gt=0)

    #: Consecutive agent failures that open its circuit (taking it out of matching).
    circuit_fail_max: int = Field(default=5, ge=1)
    #: How long an open circuit stays open before one probe assignment may go through.
    circuit_reset_seconds: float = Field(default=5.0, gt=0)
    #: How often a replica reads operators' overrides (drain, weight) from the store, to
    #: apply those set through another replica.
    overrides_refresh_seconds: float = Field(default=2.0, gt=0)

    #: How matching picks among the agents with room for a step: ``learned`` (Thompson
    #: sampling over each agent's success and latency per capability), ``recent`` (the
    #: fixed order of before: recent success rate, load, latency) or ``round_robin``.
    matching_strategy: Literal["learned", "recent", "round_robin"] = "learned"
    #: The learner's Beta prior of a new agent's success probability (successes, failures).
    learn_prior_successes: float = Field(default=1.0, gt=0)
    learn_prior_failures: float = Field(default=1.0, gt=0)
    #: Spread (log space) of the learner's latency draw with no evidence; narrows with
    #: attempts.
    learn_latency_spread: float = Field(default=0.5, ge=0)
    #: The learner's evidence halves every this many seconds: an agent that turned slow loses
    #: its good record, a recovered one is tried again.
    learn_half_life_seconds: float = Field(default=60.0, gt=0)
    #: Share of the learner's decisions that take a random agent with room.
    learn_explore: float = Field(default=0.05, ge=0, le=1)
    #: How much slower the learner takes a fully loaded agent to be (0.5: 1.5 times).
    learn_load_penalty: float = Field(default=0.5, ge=0)
    #: host:port of the Prometheus /metrics endpoint (port 0: any free port); empty for none.
    metrics_listen: str = ""

    #: Largest gRPC message accepted, in bytes.
    max_message_bytes: int = Field(default=4 * 1024 * 1024, gt=0)
    #: Largest step output accepted from an agent (wire bytes); a larger one fails its
    #: attempt as ``invalid_output``. A task carries each output twice (in its step and in
    #: the collected result) and must fit in one message to be read: at 256 KiB, seven
    #: steps' outputs at the limit take 3.5 MiB of the default 4 MiB, leaving room for inputs.
    max_output_bytes: int = Field(default=256 * 1024, gt=0)
    #: Folder of workflow specs (YAML/JSON) overlaid on the built-in workflows (same name:
    #: the folder's wins); together they are the catalog.
    workflows_dir: Path | None = None
    #: OpenAI-compatible endpoint (OpenAI, vLLM, Ollama, llama.cpp) that plans goals no
    #: workflow fits; empty for none.
    llm_base_url: str = ""
    #: Model name sent to the LLM endpoint.
    llm_model: str = ""
    #: Bearer token for the LLM endpoint (empty: none).
    llm_api_key: str = ""
    #: How long one planning request (to the LLM or a planning agent) may take.
    llm_timeout_seconds: float = Field(default=60.0, gt=0)
    #: Stream the model's plan and start each step as soon as it is planned and its inputs
    #: are ready, instead of after the whole plan (see docs/planning.rst).
    llm_stream: bool = False
