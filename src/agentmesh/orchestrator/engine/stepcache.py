"""The step cache: a step with ``cache`` reuses an earlier successful output instead of running.

An output is reusable by a step of the same capability, run by the same capability version,
on the same resolved input: the key is a hash of the three. The version is the one the
agent that produced the output declares, so an upgraded capability never answers with its
predecessor's output: a lookup tries the versions connected agents offer now (those the
step's version prefix and placement allow). Entries live in the store, across tasks,
restarts and replicas; a lookup takes the newest entry no older than the step's
``ttl_seconds``. A step with a compensation is never cached (refused at validation), nor an
output that grew the plan (its follow-ups are not kept).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import structlog

from agentmesh.limits import MAX_CACHE_TTL_SECONDS
from agentmesh.models import JSON, Outcome, StepSpec, version_matches
from agentmesh.orchestrator.agents.registry import Registry
from agentmesh.orchestrator.store import Store, StoredOutput

log = structlog.get_logger(__name__)


def cache_key(capability: str, version: str, payload: JSON) -> str:
    """sha256 (hex) of the capability, its version and the resolved input, canonically."""
    canonical = json.dumps(
        [capability, version, payload], sort_keys=True, separators=(",", ":"), ensure_ascii=False
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


class StepCache:
    """Finds reusable outputs for a task's cached steps, and keeps the ones they produce."""

    def __init__(
        self,
        store: Store,
        registry: Registry,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._store = store
        self._registry = registry
        self._clock = clock

    def _versions(self, spec: StepSpec) -> set[str]:
        offers = self._registry.capabilities().serving(
            spec.capability, pin=spec.pin_agent, exclude=spec.exclude_agents
        )
        return {
            offer.capability.version
            for offer in offers
            if not spec.version or version_matches(spec.version, offer.capability.version)
        }

    async def lookup(self, spec: StepSpec, payload: JSON) -> Outcome | None:
        """An earlier output ``spec`` may reuse on ``payload`` (its message says whose)."""
        if spec.cache is None or spec.compensation:
            return None
        keys = {cache_key(spec.capability, v, payload) for v in self._versions(spec)}
        since = self._clock() - timedelta(seconds=spec.cache.ttl_seconds)
        try:
            found = await self._store.find_output(keys, since=since)
        except Exception as exc:  # the cache only saves work: without it the step runs
            log.warning("step_cache.lookup_failed", capability=spec.capability, error=repr(exc))
            return None
        if found is None or not isinstance(found.output, dict):
            return None
        source = f"from the cache: step {found.step_id} of task {found.task_id}"
        return Outcome(output=found.output, message=source, version=found.version, cached=True)

    async def keep(
        self, spec: StepSpec, payload: JSON, outcome: Outcome, *, task_id: str, step_id: str
    ) -> None:
        """Keep the output of a cached step's successful run for later steps to reuse."""
        if spec.cache is None or spec.compensation or outcome.cached or not outcome.ok:
            return
        if outcome.follow_ups or not outcome.version:
            return  # a reused output would not grow the plan the way this one did
        stored_at = self._clock()
        entry = StoredOutput(
            key=cache_key(spec.capability, outcome.version, payload),
            version=outcome.version,
            output=outcome.output,
            task_id=task_id,
            step_id=step_id,
            stored_at=stored_at,
        )
        try:
            await self._store.keep_output(
                entry,
                spec.capability,
                older=stored_at - timedelta(seconds=MAX_CACHE_TTL_SECONDS),
            )
        except Exception as exc:  # the step succeeded all the same; the next one runs too
            log.warning("step_cache.keep_failed", capability=spec.capability, error=repr(exc))
