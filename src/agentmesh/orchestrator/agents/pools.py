"""Shared resource pools: the operator's limits on what capabilities declare they use.

A capability names the resources each run uses (``resources=("llm:openai/gpt-4o",)``); the
pools file (``AGENTMESH_POOLS_FILE``, YAML or JSON) limits each one across every agent and
every orchestrator replica::

    pools:
      "llm:openai/gpt-4o":
        concurrency: 2          # runs using it at once
        requests_per_second: 5  # runs started per second (below 1: one per 1/n seconds)
        tokens_per_minute: 90000  # tokens the runs report, per rolling minute

A resource no pool names is not limited. Tokens are known only once a run is over: a run
starts while its pool's minute is not yet spent, and the tokens it reports (``Result.usage``)
are charged to the pool when its result arrives. The limits are held by
:class:`~agentmesh.orchestrator.agents.limits.Limits`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from agentmesh.models import MAX_RESOURCE_NAME, is_resource_name
from agentmesh.orchestrator.store import Claim
from agentmesh.security.policy import config_error, read_document


class Pool(BaseModel):
    """The limits of one pool; at least one of them."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: Runs using the resource at once, across the mesh.
    concurrency: int | None = Field(default=None, ge=1)
    #: Runs started per second, across the mesh: a whole number, or below 1 for one run
    #: every ``1 / requests_per_second`` seconds.
    requests_per_second: float | None = Field(default=None, gt=0)
    #: Tokens (input and output) the runs using the resource report, per rolling minute,
    #: across the mesh.
    tokens_per_minute: int | None = Field(default=None, ge=1, strict=True)

    @field_validator("requests_per_second")
    @classmethod
    def _whole_or_fraction(cls, value: float | None) -> float | None:
        if value is not None and (not math.isfinite(value) or (value > 1 and value != int(value))):
            raise ValueError("must be a whole number, or a fraction below 1 (e.g. 0.5)")
        return value

    @model_validator(mode="after")
    def _limits_something(self) -> Pool:
        if (self.concurrency, self.requests_per_second, self.tokens_per_minute) == (None,) * 3:
            raise ValueError("a pool needs concurrency, requests_per_second or tokens_per_minute")
        return self


class PoolsDocument(BaseModel):
    """The pools file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    pools: dict[str, Pool] = Field(default_factory=dict)

    @field_validator("pools", mode="before")
    @classmethod
    def _names(cls, value: Any) -> Any:
        if isinstance(value, Mapping):
            for name in value:
                if not isinstance(name, str) or not is_resource_name(name):
                    raise ValueError(
                        f"{name!r} is not a resource name: letters, digits and ._:/@+- (not"
                        f" first), at most {MAX_RESOURCE_NAME} characters"
                    )
        return value


class Pools:
    """The pools of a pools file: which claims a run of a capability makes on them.

    ``token_window_seconds`` is the window of ``tokens_per_minute`` (a minute; shorter in
    tests).
    """

    def __init__(
        self,
        pools: Mapping[str, Pool] | None = None,
        *,
        hold_seconds: float = 10.0,
        token_window_seconds: float = 60.0,
    ):
        self._pools = dict(pools or {})
        self._hold_seconds = hold_seconds
        self._token_window = token_window_seconds

    def __len__(self) -> int:
        return len(self._pools)

    def __iter__(self) -> Iterator[str]:
        return iter(self._pools)

    def claims(self, resources: tuple[str, ...]) -> list[Claim]:
        """The holds a run using ``resources`` needs (none for resources no pool names)."""
        claims = []
        for name in resources:
            pool = self._pools.get(name)
            if pool is None:
                continue
            if pool.concurrency is not None:
                claims.append(Claim(f"pool:{name}:uses", pool.concurrency, self._hold_seconds))
            if (rate := pool.requests_per_second) is not None:
                window, count = (1.0, int(rate)) if rate >= 1 else (1 / rate, 1)
                claims.append(Claim(f"pool:{name}:rate", count, window, released=False))
            if (tokens := pool.tokens_per_minute) is not None:
                # Only a check: the run's tokens are charged when its result arrives.
                key = f"pool:{name}:tokens"
                claims.append(Claim(key, tokens, self._token_window, released=False, weight=0))
        return claims

    def charges(self, resources: tuple[str, ...], tokens: int) -> list[Claim]:
        """The holds charging ``tokens`` a run used to the token windows of ``resources``."""
        if tokens <= 0:
            return []
        return [
            Claim(
                f"pool:{name}:tokens",
                pool.tokens_per_minute,
                self._token_window,
                released=False,
                weight=tokens,
            )
            for name in resources
            if (pool := self._pools.get(name)) is not None and pool.tokens_per_minute
        ]


def pool_of(key: str) -> tuple[str, str] | None:
    """``(pool name, "uses" | "rate" | "tokens")`` of a claim's key, or None for another key."""
    if not key.startswith("pool:"):
        return None
    name, _, kind = key.removeprefix("pool:").rpartition(":")
    return name, kind


def parse_pools(data: Any, *, source: str) -> dict[str, Pool]:
    """The pools in the parsed contents of a pools file; ConfigError naming the bad field."""
    try:
        return PoolsDocument.model_validate(data if data is not None else {}).pools
    except ValidationError as exc:
        raise config_error(exc, source) from None


def load_pools(path: Path) -> dict[str, Pool]:
    """The pools in ``path`` (YAML, or JSON when it ends in .json); ConfigError when invalid."""
    return parse_pools(read_document(path), source=str(path))
