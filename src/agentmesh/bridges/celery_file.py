"""The Celery bridge's file: which Celery tasks to offer, as which capabilities.

::

    name: billing-bridge            # the agent's name (its certificate: agent/billing-bridge)
    broker: redis://127.0.0.1:6379/0
    backend: redis://127.0.0.1:6379/0
    tasks:
      - task: billing.total         # the Celery task's registered name
        capability: billing.total   # defaults to the task's name
        input_schema: {type: object, properties: {amounts: {type: array}}}
        output_schema: {type: object, properties: {total: {type: number}}}
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from agentmesh.models import JSON, MAX_CAPABILITY_NAME, Capability, is_capability_name
from agentmesh.schemas import validator
from agentmesh.security.policy import config_error, read_document


class CeleryTaskSpec(BaseModel):
    """One Celery task offered as a capability."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: The task's name as the Celery worker registered it.
    task: Annotated[str, Field(min_length=1)]
    #: The capability's name; defaults to ``task`` (which must then be a capability name).
    capability: str = ""
    version: str = "1.0.0"
    description: str = ""
    #: JSON Schema of the input object; its fields become the task's keyword arguments.
    input_schema: dict[str, JSON] = Field(default_factory=lambda: {"type": "object"})
    #: JSON Schema of the output: the task's return value when it is an object, else
    #: ``{"result": value}``.
    output_schema: dict[str, JSON] = Field(default_factory=lambda: {"type": "object"})
    #: The Celery queue to send to; empty means the app's default routing.
    queue: str = ""
    #: Whether the mesh may retry a task that failed in Celery. Off by default: Celery has
    #: already run its own retries (``autoretry_for``, ``self.retry``) when it says FAILURE.
    retryable: bool = False

    @model_validator(mode="after")
    def _named(self) -> CeleryTaskSpec:
        name = self.capability or self.task
        if not is_capability_name(name):
            raise ValueError(
                f"capability {name!r} must be dotted lowercase, at most {MAX_CAPABILITY_NAME}"
                " characters, e.g. 'billing.total' (set `capability` when the task's name is not)"
            )
        return self

    @field_validator("input_schema", "output_schema")
    @classmethod
    def _a_schema(cls, schema: dict[str, JSON]) -> dict[str, JSON]:
        if validator(schema) is None:
            raise ValueError("not a valid JSON Schema (draft 2020-12)")
        return schema

    def as_capability(self) -> Capability:
        """The capability this task is offered as."""
        return Capability(
            name=self.capability or self.task,
            version=self.version,
            description=self.description or f"Celery task {self.task}",
            input_schema=self.input_schema,
            output_schema=self.output_schema,
            tags=("celery",),
        )


class CeleryBridgeFile(BaseModel):
    """The whole file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: The agent's registration name; its certificate must carry it.
    name: Annotated[str, Field(min_length=1)] = "celery-bridge"
    #: Celery's broker URL (``redis://…`` for the Redis transport).
    broker: Annotated[str, Field(min_length=1)]
    #: Celery's result backend; empty means the broker's URL (right for Redis).
    backend: str = ""
    #: Assignments run at once (each waits on Celery, holding no worker of ours).
    max_concurrency: Annotated[int, Field(ge=1)] = 16
    #: How often a running task's state is read from the result backend.
    poll_seconds: Annotated[float, Field(gt=0, le=10)] = 0.2
    tasks: Annotated[list[CeleryTaskSpec], Field(min_length=1)]

    @model_validator(mode="after")
    def _distinct(self) -> CeleryBridgeFile:
        seen: set[str] = set()
        for spec in self.tasks:
            name = spec.as_capability().name
            if name in seen:
                raise ValueError(f"capability {name!r} is offered twice")
            seen.add(name)
        return self


def load_bridge_file(path: Path) -> CeleryBridgeFile:
    """The bridge file at ``path``; ConfigError naming the bad field when it is wrong."""
    data = read_document(path)
    try:
        return CeleryBridgeFile.model_validate(data)
    except ValidationError as exc:
        raise config_error(exc, str(path)) from None
