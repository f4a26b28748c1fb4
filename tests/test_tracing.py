"""One connected trace across a client, the orchestrator and two agent processes.

The orchestrator (``agentmesh serve``) and two agents are real subprocesses exporting over
OTLP/gRPC to a collector this test runs (:mod:`tests.support.otlp`); the client's own span
is recorded in memory in this process. The task fans out over three items and has a step
whose first attempt fails and is retried on the other agent.
"""

from __future__ import annotations

import contextlib
import json
import ssl
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import httpx
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from agentmesh.client import Client
from agentmesh.errors import DeadlineExceeded, Unavailable
from agentmesh.models import Plan, RetryPolicy, StepSpec, TaskRecord, TaskState
from agentmesh.orchestrator.store import Store
from agentmesh.security import CertFiles, IdentityKind
from agentmesh.tracing import (
    add_trace_ids,
    carrier,
    configure_tracing,
    context_of,
    enabled,
    metadata_context,
)
from agentmesh.tracing import span as tracing_span
from tests.support.journal import Journal
from tests.support.mesh import wait_for_agents
from tests.support.network import free_port
from tests.support.orchestrator import OrchestratorProcess
from tests.support.otlp import Collector
from tests.support.processes import AgentProcesses
from tests.support.waiting import eventually

T = TypeVar("T")

AGENT = "tests.support.agents"
ITEMS = ["a", "b", "c"]

PLAN = Plan(
    steps=(
        StepSpec(id="items", capability="test.echo", input={"value": ITEMS}),
        StepSpec(
            id="each",
            capability="test.echo",
            for_each="${steps.items.output.value}",
            input={"value": "${item}"},
        ),
        StepSpec(
            id="shaky",
            capability="test.fail_first",
            input={"value": "${steps.items.output.value}"},
            retry=RetryPolicy(max_attempts=3, initial_backoff_seconds=0.05),
        ),
    )
)


def _client_span_tracer() -> tuple[trace.Tracer, InMemorySpanExporter]:
    # A provider of its own, not the global one: other tests in this process stay untraced.
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider.get_tracer("tests.client"), exporter


async def _traced_submit(alice: Client, plan: Plan) -> tuple[str, trace.SpanContext]:
    """Submit ``plan`` inside a client span of the test's own: the task id, and the client
    span's context (the task's spans must join its trace, under it)."""
    tracer, exporter = _client_span_tracer()
    with tracer.start_as_current_span("client.request"):
        task_id = await alice.submit(plan=plan)
    (client_span,) = exporter.get_finished_spans()
    assert client_span.context is not None
    return task_id, client_span.context


@contextlib.asynccontextmanager
async def _traced_orchestrator(
    certs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **settings: str
) -> AsyncIterator[tuple[Collector, OrchestratorProcess]]:
    """An OTLP collector of the test's, and an orchestrator process (on SQLite at
    ``tmp_path / "mesh.db"``) exporting to it, as the agent processes started in the block do
    (they inherit the environment)."""
    async with Collector() as collector:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", collector.endpoint)
        monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "100")
        database = {"database_url": f"sqlite+aiosqlite:///{tmp_path / 'mesh.db'}"}
        async with OrchestratorProcess(
            certs, tmp_path / "orchestrator", database, **settings
        ) as orchestrator:
            yield collector, orchestrator


@pytest.mark.slow
async def test_one_trace_links_the_client_the_orchestrator_and_two_agents(
    certs: Path, agents: AgentProcesses, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with _traced_orchestrator(certs, tmp_path, monkeypatch) as (collector, orchestrator):
        for name in ("echo-1", "echo-2"):
            agents.start(AGENT, name, [orchestrator.address], TEST_AGENT_MAX_CONCURRENCY="4")
        async with Client(orchestrator.address, certs, "alice") as alice:
            await wait_for_agents(alice, "echo-1", "echo-2")
            task_id, client_span = await _traced_submit(alice, PLAN)
            task = await eventually(lambda: alice.get(task_id), lambda t: t.state.final, within=60)
        assert task.state is TaskState.SUCCEEDED, task.error

        # Spans arrive in batches: wait for the task's span (it ends last) and both agents.
        spans = await eventually(
            _sync(lambda: collector.spans_of(client_span.trace_id)),
            lambda found: (
                any(s.name == "invoke_workflow" for s in found)
                and {"echo-1", "echo-2"} <= {s.service for s in found}
                and sum(s.name.startswith("execute_tool") for s in found) >= 6
            ),
            within=30,
        )
        orchestrator_log = orchestrator.log()

    by_id = {s.span_id: s for s in spans}
    (workflow,) = [s for s in spans if s.name == "invoke_workflow"]
    assert workflow.service == "agentmesh-orchestrator"
    assert workflow.parent_id == client_span.span_id
    assert workflow.attributes["gen_ai.operation.name"] == "invoke_workflow"
    assert workflow.attributes["agentmesh.task.id"] == task_id

    (plan,) = [s for s in spans if s.name == "plan"]
    assert plan.parent_id == workflow.span_id
    assert plan.attributes["gen_ai.operation.name"] == "plan"

    attempts = [s for s in spans if s.name.startswith("invoke_agent ")]
    for attempt in attempts:
        assert attempt.parent_id == workflow.span_id
        assert attempt.kind == "SPAN_KIND_CLIENT"
        agent = attempt.attributes["gen_ai.agent.name"]
        assert attempt.name == f"invoke_agent {agent}"
        assert agent in ("echo-1", "echo-2")
        assert attempt.attributes["gen_ai.operation.name"] == "invoke_agent"
        assert attempt.attributes["gen_ai.agent.id"].startswith("spiffe://")
        assert attempt.attributes["gen_ai.agent.version"]
        assert attempt.attributes["agentmesh.task.id"] == task_id
    steps = Counter(a.attributes["agentmesh.step.id"] for a in attempts)
    # The fan-out: one attempt per item; the retry: two attempts, the first one failed.
    assert steps == {"items": 1, "each[0]": 1, "each[1]": 1, "each[2]": 1, "shaky": 2}
    shaky = sorted(
        (a for a in attempts if a.attributes["agentmesh.step.id"] == "shaky"),
        key=lambda a: a.attributes["agentmesh.attempt"],
    )
    assert [a.attributes.get("error.type") for a in shaky] == ["injected", None]
    assert shaky[0].error
    assert not shaky[1].error

    handlers = [s for s in spans if s.name.startswith("execute_tool ")]
    assert len(handlers) == len(attempts)
    for handler in handlers:
        parent = by_id[handler.parent_id]
        assert parent in attempts, "an agent's span hangs below the attempt that sent it"
        assert handler.service == parent.attributes["gen_ai.agent.name"]
        assert handler.kind == "SPAN_KIND_SERVER"
        assert handler.attributes["gen_ai.tool.name"] == handler.name.split(" ", 1)[1]
        assert handler.attributes["agentmesh.step.id"] == parent.attributes["agentmesh.step.id"]
    assert {h.service for h in handlers} == {"echo-1", "echo-2"}
    failed_handler = next(h for h in handlers if h.parent_id == shaky[0].span_id)
    assert failed_handler.attributes["error.type"] == "injected"

    # Connected: every span's parent is in the trace, up to the client's span.
    assert all(s.parent_id in by_id or s.parent_id == client_span.span_id for s in spans)

    # The orchestrator's log lines inside the task's spans carry the trace id.
    hex_id = trace.format_trace_id(client_span.trace_id)
    traced = [
        json.loads(line)
        for line in orchestrator_log.splitlines()
        if line.startswith("{") and hex_id in line
    ]
    assert any(line.get("event") == "step.attempt_failed" for line in traced)
    assert all(line["trace_id"] == hex_id and line["span_id"] for line in traced)


@pytest.mark.slow
async def test_a_run_resumed_after_a_crash_stays_in_the_task_s_trace(
    certs: Path, agents: AgentProcesses, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    journal = Journal(tmp_path / "journal.jsonl")
    gate = tmp_path / "gate"
    database = f"sqlite+aiosqlite:///{tmp_path / 'mesh.db'}"
    plan = Plan(
        steps=(
            StepSpec(
                id="held",
                capability="test.work",
                input={"journal": str(journal), "entry": "held", "gate": str(gate)},
            ),
            StepSpec(id="after", capability="test.echo", input={"value": 1}, needs=("held",)),
        )
    )
    async with _traced_orchestrator(certs, tmp_path, monkeypatch, lease_seconds="3") as (
        collector,
        orchestrator,
    ):
        agents.start(AGENT, "echo-1", [orchestrator.address])
        async with Client(orchestrator.address, certs, "alice") as alice:
            await wait_for_agents(alice, "echo-1")
            task_id, client_span = await _traced_submit(alice, plan)
            await eventually(_sync(lambda: journal.events("start", "held")), bool, within=30)
            orchestrator.kill()  # the first run's task span is never exported
            gate.touch()
            await orchestrator.start()
            task = await eventually(
                lambda: _task_or_none(alice, task_id),
                lambda t: t is not None and t.state.final,
                within=60,
            )
        assert task is not None
        assert task.state is TaskState.SUCCEEDED, task.error
        spans = await eventually(
            _sync(lambda: collector.spans_of(client_span.trace_id)),
            lambda found: any(s.attributes.get("agentmesh.resumed") for s in found),
            within=30,
        )
        await eventually(
            _sync(lambda: collector.spans_of(client_span.trace_id)),
            lambda found: any(s.attributes.get("agentmesh.step.id") == "after" for s in found),
            within=30,
        )
        spans = collector.spans_of(client_span.trace_id)
    async with Store(database) as store:
        stored = await store.get_task(task_id)
    assert stored is not None
    first_span_id = int(stored.trace_context["traceparent"].split("-")[2], 16)
    (resumed,) = [s for s in spans if s.attributes.get("agentmesh.resumed")]
    assert resumed.name == "invoke_workflow"
    assert resumed.parent_id == first_span_id
    (after,) = [
        s
        for s in spans
        if s.attributes.get("agentmesh.step.id") == "after" and s.name.startswith("invoke_agent")
    ]
    assert after.name == "invoke_agent echo-1"
    assert after.parent_id == resumed.span_id


async def _task_or_none(alice: Client, task_id: str) -> TaskRecord | None:
    try:
        return await alice.get(task_id)
    except (Unavailable, DeadlineExceeded):
        return None  # the orchestrator is still coming back


def _sync(check: Callable[[], T]) -> Callable[[], Awaitable[T]]:
    async def probe() -> T:
        return check()

    return probe


def test_trace_context_round_trips_through_text_fields_and_metadata() -> None:
    tracer, _ = _client_span_tracer()
    with tracer.start_as_current_span("outer") as span:
        fields = carrier()
        assert fields["traceparent"].split("-")[1] == trace.format_trace_id(
            span.get_span_context().trace_id
        )
        # No provider is installed in this process (the span's provider is private): an
        # untraced process adds nothing to its log lines, and opens no spans of its own.
        assert not enabled()
        assert "trace_id" not in add_trace_ids(None, "info", {"event": "x"})
        with tracing_span("untraced", attributes=dict) as untraced:
            assert not untraced.is_recording()
            assert carrier(untraced) == {}
    extracted = metadata_context([(k, v.encode()) for k, v in fields.items()] + [("x", "y")])
    assert extracted is not None
    remote = trace.get_current_span(extracted).get_span_context()
    assert remote.trace_id == span.get_span_context().trace_id
    assert context_of({}) is None
    assert metadata_context(None) is None
    assert carrier() == {}  # no current span, nothing to carry


def test_without_an_otlp_endpoint_nothing_is_set_up(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
    stop = configure_tracing("agentmesh-test")
    assert not enabled()
    stop()  # harmless


@pytest.mark.slow
async def test_an_http_submission_s_traceparent_parents_the_task_s_trace(
    certs: Path, agents: AgentProcesses, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    trace_id, parent_id = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    http_port = free_port()
    plan = {"plan": {"steps": [{"id": "a", "capability": "test.echo", "input": {"value": 1}}]}}
    files = CertFiles.of(certs, IdentityKind.CLIENT, "alice")
    context = ssl.create_default_context(cafile=str(certs / "ca.pem"))
    context.load_cert_chain(str(files.cert), str(files.key))
    async with (
        _traced_orchestrator(
            certs, tmp_path, monkeypatch, http_listen=f"127.0.0.1:{http_port}"
        ) as (collector, orchestrator),
        httpx.AsyncClient(base_url=f"https://localhost:{http_port}", verify=context) as api,
    ):
        agents.start(AGENT, "echo-1", [orchestrator.address])
        async with Client(orchestrator.address, certs, "alice") as alice:
            await wait_for_agents(alice, "echo-1")
        answer = await api.post(
            "/v1/tasks", json=plan, headers={"traceparent": f"00-{trace_id}-{parent_id}-01"}
        )
        assert answer.status_code == 201, answer.text
        spans = await eventually(
            _sync(lambda: collector.spans_of(int(trace_id, 16))),
            lambda found: {"invoke_workflow", "invoke_agent echo-1"} <= {s.name for s in found},
            within=30,
        )
        # While the collector still listens: an agent flushes its spans as it stops, and
        # its exporter would retry against a closed port for seconds.
        await agents.aclose()
    # FastAPI traces its own request (``POST /v1/tasks`` and its endpoint's span) below the
    # caller's: the task's span hangs below those, and the chain reaches the caller.
    by_id = {s.span_id: s for s in spans}
    (workflow,) = [s for s in spans if s.name == "invoke_workflow"]
    assert workflow.attributes["agentmesh.task.id"] == answer.json()["task_id"]
    chain = [workflow]
    while chain[-1].parent_id in by_id:
        chain.append(by_id[chain[-1].parent_id])
    assert chain[-1].parent_id == int(parent_id, 16)
    assert chain[-1].name == "POST /v1/tasks"


@pytest.mark.slow
async def test_a_sub_task_joins_the_trace_of_the_step_that_submitted_it(
    certs: Path, agents: AgentProcesses, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plan = Plan(steps=(StepSpec(id="outer", capability="test.delegate", input={"value": 5}),))
    async with _traced_orchestrator(certs, tmp_path, monkeypatch) as (collector, orchestrator):
        agents.start(AGENT, "echo-1", [orchestrator.address], TEST_AGENT_MAX_CONCURRENCY="2")
        async with Client(orchestrator.address, certs, "alice") as alice:
            await wait_for_agents(alice, "echo-1")
            task_id, client_span = await _traced_submit(alice, plan)
            task = await eventually(lambda: alice.get(task_id), lambda t: t.state.final, within=60)
        assert task.state is TaskState.SUCCEEDED, task.error
        spans = await eventually(
            _sync(lambda: collector.spans_of(client_span.trace_id)),
            lambda found: sum(s.name == "invoke_workflow" for s in found) == 2,
            within=30,
        )
        # The agent's spans, flushed as it stops (while the collector still listens).
        await agents.aclose()
        spans = collector.spans_of(client_span.trace_id)

    by_id = {s.span_id: s for s in spans}
    workflows = {s.attributes["agentmesh.task.id"]: s for s in spans if s.name == "invoke_workflow"}
    (child_id,) = set(workflows) - {task_id}
    # The child's task span hangs below the handler that submitted it, in the parent's trace.
    handler = by_id[workflows[child_id].parent_id]
    assert handler.name == "execute_tool test.delegate"
    assert handler.attributes["agentmesh.task.id"] == task_id
    assert workflows[task_id].parent_id == client_span.span_id
