"""Each ``agentmesh`` command's output, as text and as JSON, and its one-line errors."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from agentmesh.cli import app
from agentmesh.models import Plan, StepSpec, TaskState
from tests.cli.conftest import Mesh
from tests.security.helpers import RawAgent
from tests.support.mesh import client, wait_for_agent_gone
from tests.support.waiting import eventually

#: A well-formed task id no orchestrator ever issued.
NEVER_ISSUED = "00000000-0000-4000-8000-000000000000"

PLAN = """\
steps:
  - id: count
    capability: test.echo
    input: {value: {words: 314, ratio: 0.5, name: "${input.name}"}, progress: 1}
  - id: again
    capability: test.echo
    input: {value: "${steps.count.output.value.name}, again"}
aggregate: {strategy: pick, step: count, field: value}
"""


async def _submitted(mesh: Mesh, tmp_path: Path) -> str:
    plan = tmp_path / "plan.yaml"
    plan.write_text(PLAN)
    submitted = await mesh.cli(
        "submit", "--plan", str(plan), "--input", '{"name": "[splitter]"}', "-o", "json"
    )
    assert submitted.exit_code == 0, submitted.output
    task_id: str = json.loads(submitted.stdout)["task_id"]
    async with client(mesh.orchestrator, mesh.certs) as alice:
        await eventually(lambda: alice.get(task_id), lambda t: t.state.final)
    return task_id


async def test_a_task_is_listed_shown_and_its_result_printed_as_text_and_json(
    mesh: Mesh, tmp_path: Path
) -> None:
    task_id = await _submitted(mesh, tmp_path)

    listed = await mesh.cli("tasks", "list", "-o", "json")
    assert listed.exit_code == 0, listed.output
    assert [(t["id"], t["state"]) for t in json.loads(listed.stdout)] == [(task_id, "succeeded")]
    text = await mesh.cli("tasks", "list", "--state", "succeeded")
    assert text.exit_code == 0, text.output
    assert f"{task_id}  succeeded" in text.stdout
    assert (
        "no tasks in state failed" in (await mesh.cli("tasks", "list", "--state", "failed")).stdout
    )

    result = await mesh.cli("tasks", "result", task_id)
    assert result.exit_code == 0, result.output
    # Integers print as integers (the wire has only doubles), keys sorted, markup literal.
    assert json.loads(result.stdout) == {"name": "[splitter]", "ratio": 0.5, "words": 314}
    assert '"words": 314\n' in result.stdout
    assert result.stdout.index('"name"') < result.stdout.index('"ratio"')

    shown = await mesh.cli("tasks", "show", task_id)
    assert shown.exit_code == 0, shown.output
    lines = shown.stdout.splitlines()
    assert lines[0].startswith(
        f"task {task_id}  succeeded  by spiffe://agentmesh.test/client/alice"
    )
    assert any(
        line.split()[:5] == ["count", "test.echo", "succeeded", "echo-1", "1"] for line in lines
    )
    assert '"name": "[splitter]"' in shown.stdout

    as_json = json.loads((await mesh.cli("tasks", "show", task_id, "-o", "json")).stdout)
    assert as_json["id"] == task_id
    assert as_json["steps"]["count"]["output"]["value"]["words"] == 314
    assert as_json["steps"]["again"]["output"]["value"] == "[splitter], again"


async def test_watching_a_finished_task_replays_its_events_and_exits_with_its_outcome(
    mesh: Mesh, tmp_path: Path
) -> None:
    task_id = await _submitted(mesh, tmp_path)

    watched = await mesh.cli("tasks", "watch", task_id, "-o", "json")
    assert watched.exit_code == 0, watched.output
    events = [json.loads(line) for line in watched.stdout.splitlines()]
    assert [e["sequence"] for e in events] == list(range(1, len(events) + 1))
    assert (events[-1]["kind"], events[-1]["state"]) == ("task_state", "succeeded")

    resumed = await mesh.cli(
        "tasks", "watch", task_id, "--after", str(len(events) - 1), "-o", "json"
    )
    assert [json.loads(line)["sequence"] for line in resumed.stdout.splitlines()] == [len(events)]

    live = await mesh.cli("tasks", "watch", task_id)
    assert live.exit_code == 0, live.output
    assert f"task {task_id}  succeeded" in live.stdout
    assert "count  succeeded  echo-1" in live.stdout
    assert "count 50% step 1 of 1 [echo-1]" in live.stdout


async def test_submit_watches_the_task_live_to_its_result(mesh: Mesh, tmp_path: Path) -> None:
    plan = tmp_path / "plan.yaml"
    plan.write_text(PLAN)

    submitted = await mesh.cli("submit", "--plan", str(plan), "--input", '{"name": "x"}')

    assert submitted.exit_code == 0, submitted.output
    assert submitted.stdout.startswith("submitted task ")
    assert "again  succeeded  echo-1" in submitted.stdout
    assert "result (succeeded):" in submitted.stdout
    assert '"words": 314' in submitted.stdout


async def test_cancelling_a_finished_task_is_one_line_with_its_status(
    mesh: Mesh, tmp_path: Path
) -> None:
    task_id = await _submitted(mesh, tmp_path)

    cancelled = await mesh.cli("tasks", "cancel", task_id, "--reason", "late")

    assert cancelled.exit_code == 1
    assert cancelled.stderr == (
        f"error: FAILED_PRECONDITION task_id: task is {TaskState.SUCCEEDED} "
        "and cannot be cancelled\n"
    )


async def test_a_task_waiting_for_an_agent_that_never_comes_is_cancelled(mesh: Mesh) -> None:
    # The only agent offering the capability registers, then is gone for good.
    async with RawAgent(mesh.certs, "echo-2", capabilities=("test.lonely",)) as agent:
        await agent.register(mesh.orchestrator)
    plan = Plan(steps=(StepSpec(id="wait", capability="test.lonely", input={}),))
    async with client(mesh.orchestrator, mesh.certs) as alice:
        await wait_for_agent_gone(alice, "echo-2", within=30)
        task_id = await alice.submit(plan=plan)
        await eventually(lambda: alice.get(task_id), lambda t: t.state is TaskState.RUNNING)

        cancelled = await mesh.cli("tasks", "cancel", task_id, "--reason", "no agent came")

        assert cancelled.exit_code == 0, cancelled.output
        assert cancelled.stdout.startswith(f"task {task_id} cancelled")
        task = await alice.get(task_id)
    assert task.state is TaskState.CANCELLED
    assert task.steps["wait"].state.final


async def test_an_unknown_task_is_a_not_found_line_and_exit_1(mesh: Mesh) -> None:
    for command in ("show", "watch", "result", "cancel"):
        answer = await mesh.cli("tasks", command, NEVER_ISSUED)
        assert answer.exit_code == 1, (command, answer.output)
        assert answer.stderr == f"error: NOT_FOUND task_id: no task '{NEVER_ISSUED}'\n", command
        assert answer.stdout == ""


async def test_agents_are_listed_as_text_and_json(mesh: Mesh) -> None:
    text = await mesh.cli("agents")
    assert text.exit_code == 0, text.output
    row = next(line for line in text.stdout.splitlines() if line.startswith("echo-1"))
    assert "0/4" in row
    assert "closed" in row
    assert "test.echo" in row

    listed = json.loads((await mesh.cli("agents", "-o", "json")).stdout)
    assert [a["card"]["name"] for a in listed] == ["echo-1"]
    assert listed[0]["identity"] == "spiffe://agentmesh.test/agent/echo-1"
    assert (listed[0]["active"], listed[0]["circuit"]) == (0, "closed")
    assert listed[0]["card"]["max_concurrency"] == 4
    # No work yet: no latency and no success rate (rather than an optimistic 100 %).
    assert (listed[0]["latency_seconds"], listed[0]["success_rate"]) == (None, None)
    assert (listed[0]["successes"], listed[0]["failures"]) == (0, 0)

    none = await mesh.cli("agents", "--capability", "nothing.here")
    assert none.stdout == "no agents offer nothing.here\n"


async def test_agents_show_their_latency_and_success_rate_after_work(mesh: Mesh) -> None:
    plan = Plan(
        steps=(
            StepSpec(id="ok", capability="test.echo", input={"value": 1}),
            StepSpec(id="no", capability="test.fail", needs=("ok",)),
        )
    )
    async with client(mesh.orchestrator, mesh.certs) as alice:
        task_id = await alice.submit(plan=plan)
        await eventually(lambda: alice.get(task_id), lambda t: t.state.final)

    text = await mesh.cli("agents")
    assert text.exit_code == 0, text.output
    header = text.stdout.splitlines()[0].split()
    assert header[header.index("circuit") + 1 : header.index("circuit") + 3] == [
        "latency",
        "success",
    ]
    row = next(line for line in text.stdout.splitlines() if line.startswith("echo-1"))
    assert re.search(r"closed +(<1|\d+) ms +50% of 2 ", row), row

    (listed,) = json.loads((await mesh.cli("agents", "-o", "json")).stdout)
    assert (listed["successes"], listed["failures"], listed["success_rate"]) == (1, 1, 0.5)
    assert listed["latency_seconds"] > 0


async def test_workflows_are_listed_and_shown_as_text_and_json(mesh: Mesh) -> None:
    text = await mesh.cli("workflows", "list")
    assert text.exit_code == 0, text.output
    assert "document-brief  split → analyze → summarize" in text.stdout
    names = [
        w["name"] for w in json.loads((await mesh.cli("workflows", "list", "-o", "json")).stdout)
    ]
    assert names == ["document-brief", "publish-brief", "table-insight"]

    shown = await mesh.cli("workflows", "show", "document-brief")
    assert shown.exit_code == 0, shown.output
    assert "analyze: text.analyze  for each ${steps.split.output.sections}" in shown.stdout
    as_json = json.loads(
        (await mesh.cli("workflows", "show", "publish-brief", "-o", "json")).stdout
    )
    assert as_json["input_schema"]["required"] == ["text", "title"]
    assert as_json["plan"]["steps"][0]["input"]["max_sections"] == 8

    missing = await mesh.cli("workflows", "show", "nope")
    assert missing.exit_code == 1
    assert missing.stderr == (
        "error: NOT_FOUND workflow: no workflow 'nope'; known: document-brief, publish-brief, "
        "table-insight\n"
    )


async def test_a_refused_submission_is_one_line_naming_the_field(mesh: Mesh) -> None:
    refused = await mesh.cli("submit", "--workflow", "nope", "--no-watch")
    assert refused.exit_code == 1
    assert refused.stderr == (
        "error: INVALID_ARGUMENT workflow: no workflow 'nope'; known: document-brief, "
        "publish-brief, table-insight\n"
    )


async def test_missing_certificates_are_one_line_naming_the_command_that_creates_them(
    mesh: Mesh, tmp_path: Path
) -> None:
    empty = tmp_path / "nothing"
    answer = await asyncio.to_thread(CliRunner().invoke, app, ["agents", "--certs-dir", str(empty)])
    assert answer.exit_code == 1
    assert answer.stderr.count("\n") == 1
    assert answer.stderr.startswith(f"error: FAILED_PRECONDITION cannot read {empty}/")
    assert answer.stderr.endswith(f"; create them with: agentmesh certs init --dir {empty}\n")

    stranger = await mesh.cli("agents", name="carol")
    assert stranger.exit_code == 1
    assert stranger.stderr.endswith(
        f"; create it with: agentmesh certs issue client carol --dir {mesh.certs}\n"
    )


def test_debug_shows_the_traceback_instead(tmp_path: Path) -> None:
    answer = CliRunner().invoke(app, ["--debug", "agents", "--certs-dir", str(tmp_path)])
    assert answer.exit_code == 1
    assert type(answer.exception).__name__ == "CertificateError"


def test_an_unreachable_orchestrator_is_one_line_saying_how_to_start_one(
    certs: Path,
) -> None:
    from tests.support.network import free_port

    address = f"localhost:{free_port()}"
    answer = CliRunner().invoke(
        app, ["agents", "--certs-dir", str(certs), "--name", "alice", "--address", address]
    )
    assert answer.exit_code == 1
    assert answer.stderr.startswith("error: UNAVAILABLE ")
    assert answer.stderr.endswith("start one with: agentmesh dev\n")
    assert answer.stderr.count("\n") == 1


def test_certs_init_issues_the_cli_identity_that_commands_use_by_default(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "certs"
    answer = CliRunner().invoke(app, ["certs", "init", "--dir", str(folder)])
    assert answer.exit_code == 0, answer.output
    assert (folder / "client" / "cli.pem").exists()
    assert (folder / "client" / "cli.key").stat().st_mode & 0o777 == 0o600
    assert "client cli" in answer.stdout


def test_certs_and_tokens_speak_json_for_scripts(tmp_path: Path) -> None:
    folder = tmp_path / "certs"
    runner = CliRunner()

    def json_of(*args: str) -> Any:
        answer = runner.invoke(app, [*args, "--output", "json"])
        assert answer.exit_code == 0, answer.output
        return json.loads(answer.stdout)

    init = json_of("certs", "init", "--dir", str(folder), "--trust-domain", "json.test")
    assert init["trust_domain"] == "json.test"
    assert Path(init["client"]["cert"]) == folder / "client" / "cli.pem"
    issued = json_of("certs", "issue", "agent", "shouter", "--dir", str(folder))
    assert issued["identity"] == "spiffe://json.test/agent/shouter"
    assert Path(issued["key"]).exists()
    revoked = json_of(
        "certs",
        "revoke",
        "agent/shouter",
        "--file",
        str(folder / "revoked.yaml"),
        "--dir",
        str(folder),
        "--cert",
        issued["cert"],
    )
    assert revoked["revoked"]["identities"] == ["spiffe://json.test/agent/shouter"]
    assert revoked["revoked"]["serials"][0].startswith("0x")
    assert (revoked["identities"], revoked["serials"]) == (1, 1)

    tokens = ["--dir", str(folder)]
    token = json_of("tokens", "issue", "client", "alice", *tokens)
    assert token["identity"] == "spiffe://json.test/client/alice"
    assert token["token"].startswith(f"amt_{token['id']}")
    listed = json_of("tokens", "list", *tokens)
    assert listed == [{k: token[k] for k in ("id", "identity", "created")}]
    assert json_of("tokens", "revoke", token["id"], *tokens)["id"] == token["id"]
    assert json_of("tokens", "list", *tokens) == []


async def test_an_admin_drains_weighs_and_resumes_an_agent_from_the_command_line(
    mesh: Mesh,
) -> None:
    connection = [
        "--address",
        f"localhost:{mesh.orchestrator.port}",
        "--certs-dir",
        str(mesh.certs),
    ]

    async def invoke(*args: str) -> object:
        return await asyncio.to_thread(
            CliRunner().invoke, app, ["agents", *args, *connection], env={"COLUMNS": "200"}
        )

    refused = await invoke("drain", "echo-1", "--admin", "nobody")
    drained = await invoke("drain", "echo-1", "--admin", "root")
    weighed = await invoke("weight", "echo-1", "0.5", "--admin", "root", "-o", "json")
    listed = await mesh.cli("agents")
    (shown,) = json.loads((await mesh.cli("agents", "-o", "json")).stdout)
    resumed = await invoke("resume", "echo-1", "--admin", "root")
    bad = await invoke("weight", "echo-1", "0", "--admin", "root")
    assert refused.exit_code == 1  # type: ignore[attr-defined]
    assert "certs issue admin nobody" in refused.stderr  # type: ignore[attr-defined]
    assert drained.stdout == "echo-1: drained, weight 1\n"  # type: ignore[attr-defined]
    assert json.loads(weighed.stdout)["weight"] == 0.5  # type: ignore[attr-defined]
    assert "drained, weight 0.5" in listed.stdout
    assert (shown["drained"], shown["weight"]) == (True, 0.5)
    assert resumed.stdout == "echo-1: in rotation, weight 0.5\n"  # type: ignore[attr-defined]
    assert bad.exit_code == 1  # type: ignore[attr-defined]
    assert "INVALID_ARGUMENT" in bad.stderr  # type: ignore[attr-defined]


async def test_health_exits_0_for_a_serving_orchestrator_and_1_for_nothing_there(
    mesh: Mesh,
) -> None:
    def invoke(address: str) -> object:
        arguments = ["health", "--address", address, "--certs-dir", str(mesh.certs)]
        return CliRunner().invoke(
            app, [*arguments, "--kind", "orchestrator", "--name", "orchestrator"]
        )

    serving = await asyncio.to_thread(invoke, f"localhost:{mesh.orchestrator.port}")
    nothing = await asyncio.to_thread(invoke, "localhost:1")
    assert serving.exit_code == 0, serving.stderr  # type: ignore[attr-defined]
    assert serving.stdout == "SERVING\n"  # type: ignore[attr-defined]
    assert nothing.exit_code == 1  # type: ignore[attr-defined]
    assert "is not serving" in nothing.stderr  # type: ignore[attr-defined]
