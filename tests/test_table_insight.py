"""The table-insight workflow end to end: a real orchestrator, the data, LLM and code-runner
agents as processes over mTLS, and a local chat-completions server the test starts."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentmesh.examples import sandbox
from agentmesh.examples.fake_llm import CODE_TOOL, ChatServer, analyst_responder
from agentmesh.models import EventKind, TaskState
from agentmesh.orchestrator import Orchestrator
from tests.support.events import final_state
from tests.support.mesh import client, wait_for_agents
from tests.support.processes import AgentProcesses

pytestmark = pytest.mark.skipif(
    sandbox.network_namespace_command() is None, reason="no network namespace on this machine"
)

SALES = "region,units\nnorth,10\nsouth,4\nnorth,6\neast,3\nsouth,8\n"


async def test_the_workflow_profiles_writes_code_runs_it_and_explains_the_result(
    orchestrator: Orchestrator, certs: Path, agents: AgentProcesses
) -> None:
    address = f"localhost:{orchestrator.port}"
    async with ChatServer(analyst_responder) as model:
        agents.start("agentmesh.examples.data", "data", [address])
        agents.start(
            "agentmesh.examples.llm",
            "llm",
            [address],
            AGENTMESH_LLM_BASE_URL=model.base_url,
            AGENTMESH_LLM_MODEL="fake",
            AGENTMESH_LLM_PROGRESS_EVERY="4",
        )
        agents.start("agentmesh.examples.code_runner", "code-runner", [address])
        async with client(orchestrator, certs) as alice:
            await wait_for_agents(alice, "data", "llm", "code-runner", within=60)
            task_id = await alice.submit(workflow="table-insight", input={"csv": SALES})
            events = [event async for event in alice.watch(task_id)]
            task = await alice.get(task_id)

    assert final_state(events) == TaskState.SUCCEEDED, task
    result = task.result
    assert result["rows"] == 5
    assert [c["name"] for c in result["columns"]] == ["region", "units"]
    assert result["exit_code"] == 0
    assert result["limit"] is None
    stdout = result["stdout"]
    assert stdout.startswith("5 rows, 2 columns\ntotal units by region:\n")
    assert "north | ############################## 16" in stdout
    assert "The chart ranks 3 groups by their total. north leads with 16" in result["content"]
    assert result["usage"]["input_tokens"] > 0
    assert result["usage"]["output_tokens"] > 0
    # The model was offered the code tool, forced to use it, and given the profile.
    write, explain = (r["json"] for r in model.requests)
    assert write["tools"][0]["function"]["name"] == CODE_TOOL
    assert write["tool_choice"] == {"type": "function", "function": {"name": CODE_TOOL}}
    assert '"rows": 5' in write["messages"][1]["content"]
    assert write["stream"] is True
    assert "north | ####" in explain["messages"][1]["content"]
    streamed = [
        e for e in events if e.kind is EventKind.STEP_PROGRESS and e.step_id in ("write", "explain")
    ]
    assert any("tokens:" in e.message for e in streamed)
