"""The pools file: what it may say, and the clear error a bad one gives at start."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest
from pydantic import BaseModel

from agentmesh.agent import Agent, AgentServer, AgentSettings, AssignmentContext, capability
from agentmesh.config import Settings
from agentmesh.errors import ConfigError
from agentmesh.models import Plan, StepSpec, StepState, TaskState
from agentmesh.orchestrator import Orchestrator, metrics
from agentmesh.orchestrator.agents.pools import Pool, Pools, load_pools, parse_pools
from agentmesh.orchestrator.store import Claim
from tests.conftest import REDIS_URL
from tests.support.events import step_events, watch_all
from tests.support.mesh import client, wait_for_agents

GOOD = """
pools:
  "llm:openai/gpt-4o":
    concurrency: 2
    requests_per_second: 5
    tokens_per_minute: 9000
  "llm:local/slow":
    requests_per_second: 0.5
"""


def test_a_pools_file_sets_each_pools_limits(tmp_path: Path) -> None:
    path = tmp_path / "pools.yaml"
    path.write_text(GOOD)
    pools = load_pools(path)
    assert pools["llm:openai/gpt-4o"] == Pool(
        concurrency=2, requests_per_second=5, tokens_per_minute=9000
    )
    claims = Pools(pools, hold_seconds=10).claims(("llm:openai/gpt-4o", "llm:local/slow", "x"))
    assert claims == [
        Claim("pool:llm:openai/gpt-4o:uses", 2, 10),
        Claim("pool:llm:openai/gpt-4o:rate", 5, 1.0, released=False),
        # The window is only checked when a run starts: its tokens are charged after.
        Claim("pool:llm:openai/gpt-4o:tokens", 9000, 60.0, released=False, weight=0),
        # Half a request per second: one every two seconds.
        Claim("pool:llm:local/slow:rate", 1, 2.0, released=False),
    ]
    charges = Pools(pools).charges(("llm:openai/gpt-4o", "llm:local/slow"), 120)
    assert charges == [
        Claim("pool:llm:openai/gpt-4o:tokens", 9000, 60.0, released=False, weight=120)
    ]
    assert Pools(pools).charges(("llm:openai/gpt-4o",), 0) == []


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        ({"pools": {"p": {"concurency": 2}}}, "pools.p.concurency: Extra inputs are not permitted"),
        ({"pools": {"p": {"concurrency": 0}}}, "pools.p.concurrency: Input should be greater"),
        ({"pools": {"p": {}}}, "a pool needs concurrency, requests_per_second or tokens_per"),
        ({"pools": {"p": {"requests_per_second": 2.5}}}, "must be a whole number"),
        ({"pools": {"bad name": {"concurrency": 1}}}, "'bad name' is not a resource name"),
        ({"pools": {"p": {"tokens_per_minute": 0}}}, "pools.p.tokens_per_minute: Input should be"),
        ({"pools": {"p": {"tokens_per_minute": 1.5}}}, "pools.p.tokens_per_minute: Input should"),
        ({"pools": {"p": {"tokens_per_minute": "9k"}}}, "pools.p.tokens_per_minute: Input should"),
        ({"pool": {}}, "pool: Extra inputs are not permitted"),
    ],
)
def test_a_bad_pools_file_is_refused_naming_the_field(document: object, expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_pools(document, source="pools.yaml")
    assert str(caught.value).startswith("pools.yaml: ")
    assert expected in str(caught.value)


async def test_an_orchestrator_with_a_bad_pools_file_does_not_start(
    settings: Settings, tmp_path: Path
) -> None:
    path = tmp_path / "pools.yaml"
    path.write_text("pools:\n  llm:\n    concurrency: -1\n")
    with pytest.raises(ConfigError, match=r"pools\.yaml: pools\.llm\.concurrency: Input should"):
        async with Orchestrator(settings.model_copy(update={"pools_file": str(path)})):
            pass
    path.write_text("pools: [unclosed\n")
    with pytest.raises(ConfigError, match="is not valid YAML"):
        async with Orchestrator(settings.model_copy(update={"pools_file": str(path)})):
            pass


class Prompt(BaseModel):
    text: str


class Answer(BaseModel):
    text: str


class TokenSpender(Agent):
    """One model call per run: 80 tokens, through the pool ``llm:test/tokens``."""

    name = "echo-1"
    version = "1.0.0"

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    @capability("test.spend", description="A model call.", resources=("llm:test/tokens",))
    async def spend(self, data: Prompt, ctx: AssignmentContext) -> Answer:
        self.calls.append(data.text)
        ctx.report_usage(input_tokens=50, output_tokens=30)
        return Answer(text=data.text)


def _ask(text: str) -> Plan:
    return Plan(steps=(StepSpec(id="ask", capability="test.spend", input={"text": text}),))


@pytest.mark.parametrize("redis", [True, False], ids=["redis", "database"])
async def test_tokens_a_step_reported_make_the_next_step_of_the_pool_wait_for_the_window(
    redis: bool, settings: Settings, certs: Path, tmp_path: Path
) -> None:
    path = tmp_path / "pools.yaml"
    path.write_text('pools:\n  "llm:test/tokens":\n    tokens_per_minute: 50\n')
    update: dict[str, object] = {"pools_file": str(path), "pool_token_window_seconds": 5.0}
    if redis:
        update.update(redis_url=REDIS_URL, redis_namespace=f"test-{uuid.uuid4().hex}")
    agent = TokenSpender()
    charged = _pool_tokens("llm:test/tokens")
    async with Orchestrator(settings.model_copy(update=update)) as orchestrator:
        server = AgentServer(
            agent,
            AgentSettings(
                certs_dir=certs, name="echo-1", orchestrators=[f"localhost:{orchestrator.port}"]
            ),
        )
        async with server, client(orchestrator, certs) as alice:
            await wait_for_agents(alice, "echo-1")
            # The window has room: the first step starts, and its 80 tokens spend it.
            first = await alice.submit(plan=_ask("first"))
            async with asyncio.timeout(60):
                await watch_all(alice, first)
            second = await alice.submit(plan=_ask("second"))
            async with asyncio.timeout(60):
                events = await watch_all(alice, second)
            done = await alice.get(second)
    assert done.state is TaskState.SUCCEEDED, done.error
    waited = [e.reason for e in step_events(events, "ask") if e.state == StepState.WAITING.value]
    assert "pool 'llm:test/tokens' used its 50 tokens per minute" in waited
    # It ran once the first step's tokens were a window old.
    assert agent.calls == ["first", "second"]
    assert done.steps["ask"].waiting_for == ""
    # The metrics show what the pool was charged: 80 tokens per run.
    assert _pool_tokens("llm:test/tokens") - charged == 160


def _pool_tokens(pool: str) -> float:
    return metrics.REGISTRY.get_sample_value("agentmesh_pool_tokens_total", {"pool": pool}) or 0.0
