"""Declaring agents: capabilities from typed methods, cards, settings, and their wire form."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pydantic import BaseModel

from agentmesh._proto.agentmesh.v1 import agent_pb2
from agentmesh.agent import Agent, AgentServer, AgentSettings, AssignmentContext, capability
from agentmesh.agent.convert import assignment_from_pb
from agentmesh.agent.idempotency import OutcomeCache
from agentmesh.agent.work import Assignment
from agentmesh.errors import ValidationError
from agentmesh.models import Outcome
from agentmesh.wire import card_from_proto, card_to_proto, to_struct
from tests.agent.agent_support import EchoIn, EchoOut, Recorder, timestamp
from tests.agent.conftest import StartAgent


class TextIn(BaseModel):
    text: str


class TextOut(BaseModel):
    text: str


class Shouter(Agent):
    name = "shouter"
    version = "1.0.0"
    max_concurrency = 4

    @capability("text.upper", version="1.0.0", description="Upper-cases text")
    async def upper(self, data: TextIn, ctx: AssignmentContext) -> TextOut:
        await ctx.progress(0.5, "halfway")
        return TextOut(text=data.text.upper())


class LoudShouter(Shouter):
    name = "loud"

    @capability("text.upper", version="2.0.0")
    async def louder(self, data: TextIn, ctx: AssignmentContext) -> TextOut:
        return TextOut(text=data.text.upper() + "!")

    @capability("text.echo")
    async def echo(self, data: EchoIn, ctx: AssignmentContext) -> EchoOut:
        return EchoOut(text=data.text)


def test_a_capability_takes_its_schemas_from_the_annotations() -> None:
    card = Shouter().card("host:1")

    assert card.name == "shouter"
    assert card.endpoint == "host:1"
    assert card.max_concurrency == 4
    (upper,) = card.capabilities
    assert (upper.name, upper.version, upper.description) == (
        "text.upper",
        "1.0.0",
        "Upper-cases text",
    )
    assert upper.input_schema == TextIn.model_json_schema()
    assert upper.output_schema == TextOut.model_json_schema()


def test_subclasses_inherit_and_may_redeclare_capabilities() -> None:
    specs = LoudShouter.specs()

    assert sorted(specs) == ["text.echo", "text.upper"]
    assert specs["text.upper"].capability.version == "2.0.0"
    assert specs["text.upper"].method == "louder"
    assert list(Shouter.specs()) == ["text.upper"]
    assert LoudShouter().card("h:1", name="loud-2").name == "loud-2"


def test_the_card_survives_the_round_trip_through_protobuf() -> None:
    card = Recorder().card("localhost:5")

    assert card_from_proto(card_to_proto(card)) == card


def test_a_capability_name_must_be_dotted_lowercase() -> None:
    with pytest.raises(ValueError, match="dotted lowercase"):
        capability("Text Upper")


@pytest.mark.parametrize("name", ["text.upper\n", "t" * 129])
def test_a_capability_name_the_orchestrator_would_refuse_is_refused_at_declaration(
    name: str,
) -> None:
    # The SDK and the orchestrator read the one pattern (and length) of agentmesh.models.
    with pytest.raises(ValueError, match="dotted lowercase"):
        capability(name)


def test_a_capability_must_be_async() -> None:
    with pytest.raises(TypeError, match="async def"):

        @capability("text.sync")
        def sync(self: object, data: TextIn, ctx: AssignmentContext) -> TextOut:
            return TextOut(text=data.text)


def test_a_capability_must_take_self_data_and_ctx() -> None:
    with pytest.raises(TypeError, match=r"\(self, data, ctx\)"):

        @capability("text.short")
        async def short(self: object, data: TextIn) -> TextOut:
            return TextOut(text=data.text)


def test_a_capability_needs_pydantic_models_for_input_and_output() -> None:
    with pytest.raises(TypeError, match="its output"):

        @capability("text.loose")
        async def loose(self: object, data: TextIn, ctx: AssignmentContext) -> dict[str, str]:
            return {}


def test_unresolvable_annotations_are_reported() -> None:
    class Local(BaseModel):
        text: str

    with pytest.raises(TypeError, match="module level"):

        @capability("text.local")
        async def local(self: object, data: Local, ctx: AssignmentContext) -> TextOut:
            return TextOut(text=data.text)


def test_one_class_cannot_declare_a_capability_twice() -> None:
    with pytest.raises(TypeError, match="twice"):

        class Twice(Agent):
            @capability("text.upper")
            async def one(self, data: TextIn, ctx: AssignmentContext) -> TextOut:
                return TextOut(text="")

            @capability("text.upper")
            async def two(self, data: TextIn, ctx: AssignmentContext) -> TextOut:
                return TextOut(text="")


def test_max_concurrency_must_be_positive() -> None:
    with pytest.raises(TypeError, match="max_concurrency"):

        class Lazy(Agent):
            max_concurrency = 0


def test_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENTMESH_AGENT_ORCHESTRATORS", "a:1, b:2")
    monkeypatch.setenv("AGENTMESH_AGENT_NAME", "analyst-3")
    monkeypatch.setenv("AGENTMESH_AGENT_CERTS_DIR", "/etc/mesh")
    monkeypatch.setenv("AGENTMESH_AGENT_DRAIN_TIMEOUT_SECONDS", "2.5")

    settings = AgentSettings()

    assert settings.orchestrators == ["a:1", "b:2"]
    assert settings.name == "analyst-3"
    assert settings.certs_dir == Path("/etc/mesh")
    assert settings.drain_timeout_seconds == 2.5


def test_settings_accept_a_json_list_and_have_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("ORCHESTRATORS", "NAME", "CERTS_DIR", "LISTEN", "DRAIN_TIMEOUT_SECONDS"):
        monkeypatch.delenv(f"AGENTMESH_AGENT_{var}", raising=False)
    assert AgentSettings().orchestrators == ["localhost:50051"]
    assert AgentSettings().listen == "127.0.0.1:0"
    assert AgentSettings().result_cache_size == 1024

    monkeypatch.setenv("AGENTMESH_AGENT_ORCHESTRATORS", '["x:1", "y:2"]')
    assert AgentSettings().orchestrators == ["x:1", "y:2"]


def test_the_server_name_must_be_a_valid_workload_name() -> None:
    with pytest.raises(ValidationError, match="name"):
        AgentServer(Shouter(), AgentSettings(name="Not Valid"))


def test_the_server_has_no_card_before_it_starts() -> None:
    with pytest.raises(RuntimeError, match="not started"):
        _ = AgentServer(Shouter(), AgentSettings()).endpoint


def test_an_assignment_message_becomes_the_domain_assignment() -> None:
    deadline = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
    message = agent_pb2.Assignment(
        assignment_id="a",
        idempotency_key="k",
        task_id="t",
        step_id="s",
        capability="text.upper",
        input=to_struct({"text": "x", "n": 2}),
        attempt=2,
        deadline=timestamp(deadline),
        compensation=True,
    )

    assert assignment_from_pb(message) == Assignment(
        assignment_id="a",
        capability="text.upper",
        input={"text": "x", "n": 2},
        idempotency_key="k",
        task_id="t",
        step_id="s",
        attempt=2,
        deadline=deadline,
        compensation=True,
    )
    assert assignment_from_pb(agent_pb2.Assignment(assignment_id="b")).deadline is None


@pytest.mark.parametrize(
    ("reported", "sent"),
    [(0.5, 0.5), (1.7, 1.0), (-0.2, -1.0), (float("nan"), -1.0), (0.0, 0.0)],
)
async def test_progress_fractions_are_kept_in_range(reported: float, sent: float) -> None:
    seen: list[tuple[float, str]] = []
    ctx = AssignmentContext.of(
        Assignment(assignment_id="a", capability="c"), lambda f, m: seen.append((f, m))
    )

    await ctx.progress(reported, "msg")

    assert seen == [(sent, "msg")]


def test_time_left_counts_down_to_the_deadline() -> None:
    soon = datetime.now(UTC) + timedelta(seconds=60)
    with_deadline = AssignmentContext.of(
        Assignment(assignment_id="a", capability="c", deadline=soon), lambda f, m: None
    )
    without = AssignmentContext.of(Assignment(assignment_id="a", capability="c"), lambda f, m: None)

    left = with_deadline.time_left()
    assert left is not None
    assert 0 < left <= 60
    assert without.time_left() is None


def test_the_outcome_cache_forgets_the_least_recently_used() -> None:
    cache = OutcomeCache(2)
    cache.put("a", Outcome(output={"n": 1}))
    cache.put("b", Outcome(code="x", message="y", retryable=False))
    assert cache.get("a") == Outcome(output={"n": 1})  # "a" is now the most recent

    cache.put("c", Outcome(output={"n": 3}))

    assert cache.get("b") is None
    assert cache.get("a") is not None
    assert cache.get("c") is not None
    assert len(cache) == 2


def test_a_zero_sized_outcome_cache_remembers_nothing() -> None:
    cache = OutcomeCache(0)
    cache.put("a", Outcome(output={}))

    assert cache.get("a") is None


async def test_a_second_agent_cannot_take_a_port_already_in_use(
    start_agent: StartAgent,
) -> None:
    async with start_agent(Recorder()) as first:
        with pytest.raises(RuntimeError):
            async with start_agent(Recorder(), listen=f"127.0.0.1:{first.port}"):
                pass


def test_an_output_too_big_for_one_message_fails_only_its_assignment() -> None:
    from agentmesh.agent.convert import outcome

    big = outcome("a1", Outcome(output={"text": "x" * 5000}), max_bytes=4096)
    small = outcome("a2", Outcome(output={"text": "x"}), max_bytes=4096)
    assert big.WhichOneof("kind") == "failure"
    assert big.failure.code == "invalid_output"
    assert "exceeds the 4096-byte message limit" in big.failure.message
    assert small.WhichOneof("kind") == "result"
