"""What an attempt holds while its agent works: a real orchestrator, a real agent over mTLS.

A thousand agents with ten thousand steps in flight is mostly memory held per step (issue
9), so what a waiting attempt keeps is a property worth a test: here, that no frame of the
attempt's chain of coroutines holds the assignment it sent (about 3 KiB each, most of it
protobuf's arena), once the assignment is written and the attempt waits for the outcome.
"""

from __future__ import annotations

import asyncio
import types
from collections.abc import Iterator
from pathlib import Path

from agentmesh._proto.agentmesh.v1 import agent_pb2
from agentmesh.models import Plan, StepSpec
from agentmesh.orchestrator import Orchestrator
from agentmesh.orchestrator.agents.dispatch import Dispatcher
from agentmesh.orchestrator.agents.link import AgentLink
from tests.security.helpers import RawAgent
from tests.support.mesh import client, wait_for_agents
from tests.support.waiting import eventually


def _chain(task: asyncio.Task[object]) -> Iterator[tuple[types.FrameType, object]]:
    """Each suspended coroutine frame of ``task``, outermost first, with what it awaits."""
    awaited: object = task.get_coro()
    while isinstance(awaited, types.CoroutineType) and awaited.cr_frame is not None:
        yield awaited.cr_frame, awaited.cr_await
        awaited = awaited.cr_await


def _attempts() -> list[list[tuple[types.FrameType, object]]]:
    """The chains of the tasks running an attempt (``Dispatcher._run`` in them) now."""
    chains = [list(_chain(task)) for task in asyncio.all_tasks()]
    return [c for c in chains if any(f.f_code is Dispatcher._run.__code__ for f, _ in c)]


def _waiting_for_outcome(chains: list[list[tuple[types.FrameType, object]]]) -> bool:
    """One attempt, past writing its assignment: ``AgentLink.run`` awaits the outcome's
    future (while it writes, it awaits the ``_send`` coroutine)."""
    return len(chains) == 1 and any(
        frame.f_code is AgentLink.run.__code__ and not isinstance(awaited, types.CoroutineType)
        for frame, awaited in chains[0]
    )


async def test_an_attempt_waiting_for_its_agent_holds_no_copy_of_the_assignment(
    orchestrator: Orchestrator, certs: Path
) -> None:
    async with RawAgent(certs, "echo-1") as agent:  # accepts, never answers
        await agent.register(orchestrator)
        async with client(orchestrator, certs) as alice:
            await wait_for_agents(alice, "echo-1")
            step = StepSpec(id="a", capability="test.echo", input={"text": "x" * 200})
            task_id = await alice.submit(plan=Plan(steps=(step,)))
            await agent.got_assignment.wait()

            async def attempts() -> list[list[tuple[types.FrameType, object]]]:
                return _attempts()

            chains = await eventually(attempts, _waiting_for_outcome)
            held = {
                f"{frame.f_code.co_qualname}.{name}"
                for frame, _ in chains[0]
                for name, value in frame.f_locals.items()
                if isinstance(value, agent_pb2.Assignment | agent_pb2.OrchestratorMessage)
            }
            assert held == set()
            assert agent.assignments[0].input["text"] == "x" * 200  # it did go out whole
            await alice.cancel(task_id)
