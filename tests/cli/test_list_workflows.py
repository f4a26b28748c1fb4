"""ListWorkflows over real mTLS: the catalog as clients see it, as the policy allows."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentmesh.errors import PermissionDenied
from agentmesh.orchestrator import Orchestrator
from agentmesh.security import IdentityKind
from tests.support.mesh import client


async def test_a_client_lists_the_catalog_workflows_with_their_schemas_and_steps(
    orchestrator: Orchestrator, certs: Path
) -> None:
    async with client(orchestrator, certs) as alice:
        workflows = await alice.list_workflows()

    assert [w.name for w in workflows] == ["document-brief", "publish-brief", "table-insight"]
    brief = workflows[0]
    assert "Summarize a document" in brief.description
    assert brief.input_schema is not None
    assert brief.input_schema["required"] == ["text", "title"]
    assert [s.id for s in brief.plan.steps] == ["split", "analyze", "summarize"]
    assert brief.plan.steps[1].for_each == "${steps.split.output.sections}"
    assert brief.plan.aggregate == {"strategy": "pick", "step": "summarize"}


async def test_an_admin_lists_workflows_and_an_agent_may_not(
    orchestrator: Orchestrator, certs: Path
) -> None:
    async with client(orchestrator, certs, "root", kind=IdentityKind.ADMIN) as root:
        assert len(await root.list_workflows()) == 3
    async with client(orchestrator, certs, "echo-1", kind=IdentityKind.AGENT) as agent:
        with pytest.raises(PermissionDenied, match="list workflows"):
            await agent.list_workflows()
