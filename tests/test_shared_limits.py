"""Limits across orchestrator replicas, on real processes: two replicas on one PostgreSQL
schema (with and without Redis), real agent processes registered with both.

- ListAgents on either replica shows the whole mesh (with Redis), with each agent's load;
- an agent's max_concurrency holds across replicas (with Redis);
- a pool's limits hold across agents and replicas, in Redis or else in the database, and a
  step over a limit waits, with the pool named as the reason.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path

import pytest

from agentmesh.client import Client
from agentmesh.models import EventKind, Plan, StepSpec, StepState, TaskRecord, TaskState
from tests.conftest import REDIS_URL
from tests.support.journal import Journal
from tests.support.mesh import submit_when_offered, wait_for_agents
from tests.support.orchestrator import OrchestratorProcess
from tests.support.processes import AgentProcesses
from tests.support.waiting import eventually

#: Starts real processes of its own (see PROCESS_FIXTURES in tests/conftest.py).
pytestmark = pytest.mark.slow

AGENT = "tests.support.agents"
POOL = "llm:test/model"
#: The test agents' capability that uses POOL.
POOLED = "test.pooled"

Replicas = tuple[OrchestratorProcess, OrchestratorProcess]
StartReplicas = Callable[..., AbstractAsyncContextManager[Replicas]]


@pytest.fixture
def replicas(certs: Path, tmp_path: Path, postgres_database: dict[str, str]) -> StartReplicas:
    """Starts two replicas on one PostgreSQL schema: ``replicas(redis=..., pools=...)``.

    2-second leases (and so holds): a hold must be renewed for a longer step to keep it.
    """

    @asynccontextmanager
    async def start(*, redis: bool, pools: str = "") -> AsyncIterator[Replicas]:
        common = {"lease_seconds": "2"}
        if redis:
            # A namespace of their own: other tests' agents and holds stay out of this mesh.
            common.update(redis_url=REDIS_URL, redis_namespace=f"test-{uuid.uuid4().hex}")
        if pools:
            path = tmp_path / "pools.yaml"
            path.write_text(pools)
            common["pools_file"] = str(path)
        a = OrchestratorProcess(certs, tmp_path / "a", postgres_database, replica_id="a", **common)
        b = OrchestratorProcess(certs, tmp_path / "b", postgres_database, replica_id="b", **common)
        async with a, b:
            yield a, b

    return start


@asynccontextmanager
async def _clients(
    a: OrchestratorProcess, b: OrchestratorProcess, certs: Path
) -> AsyncIterator[tuple[Client, Client]]:
    async with Client(a.address, certs, "alice") as on_a, Client(b.address, certs, "alice") as on_b:
        yield on_a, on_b


def _work(
    step: str, journal: Journal, capability: str, delay: float, gate: str = "", pin: str = ""
) -> Plan:
    data = {"journal": str(journal), "entry": step, "delay": delay, "gate": gate}
    return Plan(steps=(StepSpec(id="work", capability=capability, input=data, pin_agent=pin),))


async def _final(client: Client, task_id: str, within: float = 60) -> TaskRecord:
    async def probe() -> TaskRecord:
        return await client.get(task_id)

    return await eventually(probe, lambda task: task.state.final, within=within)


async def _waiting_reasons(client: Client, task_id: str) -> list[str]:
    """The reasons the task's steps were given for waiting, from its events."""
    return [
        e.reason
        async for e in client.watch(task_id)
        if e.kind is EventKind.STEP_STATE and e.state == StepState.WAITING.value
    ]


async def test_list_agents_on_any_replica_shows_every_agent_of_the_mesh_with_its_load(
    replicas: StartReplicas, certs: Path, agents: AgentProcesses
) -> None:
    async with replicas(redis=True) as (a, b):
        agents.start(AGENT, "echo-1", [a.address])
        agents.start(AGENT, "echo-2", [b.address])
        async with (
            Client(a.address, certs, "alice") as on_a,
            Client(b.address, certs, "alice") as on_b,
        ):
            # Each agent is connected to one replica; both replicas list both.
            listed_on_b = await wait_for_agents(on_b, "echo-1", "echo-2")
            await wait_for_agents(on_a, "echo-1", "echo-2")
            echo_1 = next(s for s in listed_on_b if s.card.name == "echo-1")
            pooled = echo_1.card.capability("test.pooled")
            assert echo_1.connected
            assert pooled is not None
            assert pooled.resources == (POOL,)
            plan = Plan(
                steps=(StepSpec(id="wait", capability="test.hang", input={}, pin_agent="echo-1"),)
            )
            task_id = await submit_when_offered(on_a, plan)

            async def load_of_echo_1() -> int:
                listed = await on_b.list_agents("test.hang")
                return next((s.active for s in listed if s.card.name == "echo-1"), -1)

            # Its load, as replica b sees it: the step replica a gave it.
            await eventually(load_of_echo_1, lambda active: active == 1, within=30)
            await on_b.cancel(task_id)
            await eventually(load_of_echo_1, lambda active: active == 0, within=30)


async def test_an_agents_max_concurrency_holds_across_replicas(
    replicas: StartReplicas, certs: Path, agents: AgentProcesses, tmp_path: Path
) -> None:
    journal = Journal(tmp_path / "journal.jsonl")
    async with replicas(redis=True) as (a, b):
        agents.start(AGENT, "echo-1", [a.address, b.address], TEST_AGENT_MAX_CONCURRENCY="2")
        async with (
            Client(a.address, certs, "alice") as on_a,
            Client(b.address, certs, "alice") as on_b,
        ):
            await wait_for_agents(on_a, "echo-1")
            await wait_for_agents(on_b, "echo-1")
            # Longer than a hold (2 s): the holds must be renewed to keep the limit.
            submitted = [
                (
                    client,
                    await submit_when_offered(
                        client, _work(f"{name}-{i}", journal, "test.work", 2.5)
                    ),
                )
                for i in range(3)
                for name, client in (("a", on_a), ("b", on_b))
            ]
            finals = [await _final(client, task_id) for client, task_id in submitted]
    assert [t.state for t in finals] == [TaskState.SUCCEEDED] * len(finals), [
        t.error for t in finals
    ]
    # The agent's own word: never more than 2 at once, and never a refusal (each replica
    # on its own would have sent it 2, and it would have refused the rest as busy).
    assert journal.max_concurrent("echo-1") == 2
    assert [t.steps["work"].attempts for t in finals] == [1] * len(finals)
    assert "already running" not in agents.log("echo-1")


@pytest.mark.parametrize("redis", [True, False], ids=["redis", "database"])
async def test_a_pool_limit_holds_across_two_agents_and_two_replicas(
    redis: bool, replicas: StartReplicas, certs: Path, agents: AgentProcesses, tmp_path: Path
) -> None:
    journal = Journal(tmp_path / "journal.jsonl")
    pools = f'pools:\n  "{POOL}":\n    concurrency: 2\n'
    async with replicas(redis=redis, pools=pools) as (a, b):
        for name in ("echo-1", "echo-2"):
            agents.start(AGENT, name, [a.address, b.address])
        async with (
            Client(a.address, certs, "alice") as on_a,
            Client(b.address, certs, "alice") as on_b,
        ):
            for client in (on_a, on_b):
                await wait_for_agents(client, "echo-1", "echo-2")
            submitted = [
                (
                    client,
                    await submit_when_offered(
                        client, _work(f"{name}-{i}", journal, POOLED, 2.5, pin=agent)
                    ),
                )
                # Pinned half to each agent: the matcher alone may rightly send all to one, and
                # the pool must hold over both (each agent alone would take 4 at once).
                for i, agent in enumerate(("echo-1", "echo-2", "echo-1"))
                for name, client in (("a", on_a), ("b", on_b))
            ]

            async def waiting_for() -> set[str]:
                # On the replica that runs each task (without Redis only it knows).
                tasks = [await client.get(task_id) for client, task_id in submitted]
                return {t.steps["work"].waiting_for for t in tasks} - {""}

            reasons = await eventually(waiting_for, bool, within=30)
            finals = [await _final(client, task_id) for client, task_id in submitted]
            events = [await _waiting_reasons(client, task_id) for client, task_id in submitted]
    assert [t.state for t in finals] == [TaskState.SUCCEEDED] * len(finals), [
        t.error for t in finals
    ]
    expected = f"pool {POOL!r} is at its limit of 2 concurrent uses"
    assert reasons == {expected}
    assert any(expected in reason for reasons_of_task in events for reason in reasons_of_task)
    # The agents' own word: at most 2 runs at once over both agents, both used.
    assert journal.max_concurrent() == 2
    assert {e.agent for e in journal.events("start")} == {"echo-1", "echo-2"}
    assert all(t.steps["work"].waiting_for == "" for t in finals)


async def test_a_waiting_step_shows_the_pool_on_the_other_replica_and_a_rate_limit_holds(
    replicas: StartReplicas, certs: Path, agents: AgentProcesses, tmp_path: Path
) -> None:
    journal = Journal(tmp_path / "journal.jsonl")
    gate = tmp_path / "gate"
    # One use at a time, and one start every 10 seconds.
    pools = f'pools:\n  "{POOL}":\n    concurrency: 1\n    requests_per_second: 0.1\n'
    async with replicas(redis=True, pools=pools) as (a, b):
        agents.start(AGENT, "echo-1", [a.address, b.address])
        async with (
            Client(a.address, certs, "alice") as on_a,
            Client(b.address, certs, "alice") as on_b,
        ):
            for client in (on_a, on_b):
                await wait_for_agents(client, "echo-1")
            first = await submit_when_offered(
                on_a, _work("first", journal, "test.pooled", 0, str(gate))
            )
            await journal.wait_for("start", "first", within=30)
            second = await submit_when_offered(on_a, _work("second", journal, "test.pooled", 0))

            async def second_on_b() -> TaskRecord:
                return await on_b.get(second)

            # Replica b answers from Redis what replica a's run is waiting for. (The step
            # may wait a moment for something else first: for an agent's slot, say.)
            expected = f"pool {POOL!r} is at its limit of 1 concurrent uses"
            waiting = await eventually(
                second_on_b, lambda t: t.steps["work"].waiting_for == expected, within=30
            )
            assert waiting.steps["work"].state is StepState.WAITING
            gate.touch()
            await _final(on_a, first)
            # The use is back, the rate is not: the second start waits for its window.
            finished = await _final(on_b, second, within=60)
            reasons = await _waiting_reasons(on_a, second)
    assert finished.state is TaskState.SUCCEEDED
    assert f"pool {POOL!r} is at its limit of 1 requests per 10s" in reasons
    assert journal.started() == ["first", "second"]


async def test_a_bad_pools_file_stops_the_orchestrator_at_start_saying_why(
    certs: Path, tmp_path: Path
) -> None:
    path = tmp_path / "pools.yaml"
    path.write_text('pools:\n  "llm:x":\n    concurrency: 2\n    tokens_per_minute: 0\n')
    database = {"database_url": f"sqlite+aiosqlite:///{tmp_path / 'mesh.db'}"}
    orchestrator = OrchestratorProcess(certs, tmp_path / "o", database, pools_file=str(path))
    with pytest.raises(AssertionError, match="orchestrator exited"):
        async with orchestrator:
            pass
    assert "pools.llm:x.tokens_per_minute: Input should be greater" in orchestrator.log()
    assert str(path) in orchestrator.log()
