"""The pools file: what it may say, and the clear error a bad one gives at start."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentmesh.config import Settings
from agentmesh.errors import ConfigError
from agentmesh.orchestrator import Orchestrator
from agentmesh.orchestrator.agents.pools import Pool, Pools, load_pools, parse_pools
from agentmesh.orchestrator.store import Claim

GOOD = """
pools:
  "llm:openai/gpt-4o":
    concurrency: 2
    requests_per_second: 5
  "llm:local/slow":
    requests_per_second: 0.5
"""


def test_a_pools_file_sets_each_pools_limits(tmp_path: Path) -> None:
    path = tmp_path / "pools.yaml"
    path.write_text(GOOD)
    pools = load_pools(path)
    assert pools["llm:openai/gpt-4o"] == Pool(concurrency=2, requests_per_second=5)
    claims = Pools(pools, hold_seconds=10).claims(("llm:openai/gpt-4o", "llm:local/slow", "x"))
    assert claims == [
        Claim("pool:llm:openai/gpt-4o:uses", 2, 10),
        Claim("pool:llm:openai/gpt-4o:rate", 5, 1.0, released=False),
        # Half a request per second: one every two seconds.
        Claim("pool:llm:local/slow:rate", 1, 2.0, released=False),
    ]


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        ({"pools": {"p": {"concurency": 2}}}, "pools.p.concurency: Extra inputs are not permitted"),
        ({"pools": {"p": {"concurrency": 0}}}, "pools.p.concurrency: Input should be greater"),
        ({"pools": {"p": {}}}, "a pool needs concurrency or requests_per_second"),
        ({"pools": {"p": {"requests_per_second": 2.5}}}, "must be a whole number"),
        ({"pools": {"bad name": {"concurrency": 1}}}, "'bad name' is not a resource name"),
        ({"pools": {"p": {"tokens_per_minute": 9}}}, "tokens_per_minute is not supported yet"),
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
