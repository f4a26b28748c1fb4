"""A test agent that misbehaves on its own: run as ``python -m tests.support.faulty``.

It offers every capability of :class:`tests.support.agents.FaultyAgent`, whose faults the
assignment's input asks for. On top of that, this *process* misbehaves in the work
capabilities (``test.echo``, ``test.flaky``, ``test.work``) as its environment says, so a
test can run a fleet of healthy agents next to broken ones:

``AGENTMESH_TEST_FAULTS``
    JSON object; each of ``hang``, ``slow``, ``malformed``, ``garbage`` and ``oversized`` is
    the probability that an assignment suffers that fault (they are tried in that order):

    - ``hang``: never answer (until the orchestrator cancels or the deadline passes);
    - ``slow``: answer after 60% to 130% of the time left before the deadline, so some
      answers arrive just in time and others just too late;
    - ``malformed``: return an output that breaks the capability's output schema, which the
      SDK reports as ``invalid_output``;
    - ``garbage``: return an output that breaks the declared output schema *without* the SDK
      noticing, as an agent written without the SDK could: only the orchestrator can tell;
    - ``oversized``: return an output larger than the orchestrator accepts (5 MiB).

    ``first`` lists faults (by those names) that the process's first work assignments
    suffer, one each, in order, before chance takes over: a test can count on them.

    ``sick_file`` names a file: while it exists every work assignment fails with an
    internal error (``error``, retryable), the kind of failure that opens a circuit.
``TEST_AGENT_MAX_CONCURRENCY``
    Overrides the agent's declared concurrency.
``AGENTMESH_TEST_SEED``
    Seeds the chance (with the agent's name; default ``0``): each agent process draws the
    same sequence on every test run.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from agentmesh.agent import AssignmentContext, run
from agentmesh.agent.capability import CapabilitySpec
from tests.support.agents import Echoed, FaultyAgent, Flaky, Recorded, Value, Work, seeded_random

#: Names of the faults that strike at random, in the order they are tried.
RANDOM_FAULTS = ("hang", "slow", "malformed", "garbage", "oversized")
#: Larger than the orchestrator's default 4 MiB message limit.
OVERSIZED_BYTES = 5 * 1024 * 1024
#: The capabilities that suffer this process's faults.
WORK_CAPABILITIES = ("test.echo", "test.flaky", "test.work")


class Faults(BaseModel):
    """How this process misbehaves (see the module docstring)."""

    model_config = ConfigDict(extra="forbid")

    hang: float = Field(default=0.0, ge=0, le=1)
    slow: float = Field(default=0.0, ge=0, le=1)
    malformed: float = Field(default=0.0, ge=0, le=1)
    garbage: float = Field(default=0.0, ge=0, le=1)
    oversized: float = Field(default=0.0, ge=0, le=1)
    first: list[Literal["hang", "slow", "malformed", "garbage", "oversized"]] = []
    sick_file: str = ""

    def env(self) -> dict[str, str]:
        """The environment that gives an agent process these faults."""
        return {"AGENTMESH_TEST_FAULTS": self.model_dump_json(exclude_defaults=True)}


class _Unchecked(BaseModel):
    """Accepts any object: the SDK's output check, switched off for ``garbage``."""

    model_config = ConfigDict(extra="allow")


def _faults() -> Faults:
    return Faults.model_validate(json.loads(os.environ.get("AGENTMESH_TEST_FAULTS", "{}")))


def _agent_name() -> str:
    return os.environ.get("AGENTMESH_AGENT_NAME", "")


class MisbehavingAgent(FaultyAgent):
    """The test agent, with the faults of its process injected into the work capabilities."""

    faults: Faults = Faults()
    #: Work assignments taken so far (for ``Faults.first``).
    _served = 0
    #: One sequence of draws per agent process, the same on every test run.
    _chance = seeded_random(_agent_name())

    @classmethod
    def specs(cls) -> Mapping[str, CapabilitySpec]:
        specs = dict(super().specs())
        if cls.faults.garbage:
            # The card keeps the declared schemas; only the SDK's own check is bypassed.
            for name in WORK_CAPABILITIES:
                specs[name] = dataclasses.replace(specs[name], output_model=_Unchecked)
        return specs

    async def _misbehave(self, ctx: AssignmentContext, field: str) -> dict[str, Any] | None:
        """Suffer a fault, or not; returns the bad output to answer with, if any.

        ``field`` is a string field of the capability's output, to fill for ``oversized``.
        """
        faults = self.faults
        rng = self._chance
        if faults.sick_file and await asyncio.to_thread(os.path.exists, faults.sick_file):
            raise RuntimeError("the agent is sick (injected)")
        if self._served < len(faults.first):
            name = faults.first[self._served]
            self._served += 1
        else:
            draw = rng.random()
            for name in RANDOM_FAULTS:
                chance: float = getattr(faults, name)
                if draw < chance:
                    break
                draw -= chance
            else:
                return None
        if name == "hang":
            await asyncio.sleep(3600)
        elif name == "slow":
            await asyncio.sleep(rng.uniform(0.6, 1.3) * max(0.0, ctx.time_left() or 1.0))
            return None
        elif name == "oversized":
            return {field: "x" * OVERSIZED_BYTES, "agent": _agent_name()}
        # Wrong types where the schema wants strings: invalid for every work capability.
        return {field: {"not": "a string"}, "agent": {"not": "a string"}}

    async def echo(self, data: Value, ctx: AssignmentContext) -> Echoed:
        bad = await self._misbehave(ctx, "value")
        return bad if bad is not None else await super().echo(data, ctx)  # type: ignore[return-value]

    async def flaky(self, data: Flaky, ctx: AssignmentContext) -> Echoed:
        bad = await self._misbehave(ctx, "value")
        return bad if bad is not None else await super().flaky(data, ctx)  # type: ignore[return-value]

    async def work(self, data: Work, ctx: AssignmentContext) -> Recorded:
        bad = await self._misbehave(ctx, "entry")
        return bad if bad is not None else await super().work(data, ctx)  # type: ignore[return-value]


def main() -> None:
    """Serve the agent with the faults and concurrency its environment asks for."""
    MisbehavingAgent.faults = _faults()
    agent = MisbehavingAgent()
    if "TEST_AGENT_MAX_CONCURRENCY" in os.environ:
        agent.max_concurrency = int(os.environ["TEST_AGENT_MAX_CONCURRENCY"])  # type: ignore[misc]
    run(agent)


if __name__ == "__main__":
    main()
