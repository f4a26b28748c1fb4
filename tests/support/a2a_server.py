"""An external A2A agent for the bridge tests, built with the a2a-sdk alone, over HTTPS.

Skills: ``reverse`` (reverses the text, reports progress, answers with a text and a data
part), ``refuse`` (fails the task), ``wait`` (works until cancelled; records the cancel).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import uvicorn
from a2a.helpers.proto_helpers import get_data_parts, new_data_part, new_task, new_text_message
from a2a.server.agent_execution import AgentExecutor, RequestContext
from a2a.server.events.event_queue_v2 import EventQueue
from a2a.server.request_handlers import DefaultRequestHandler
from a2a.server.routes import create_agent_card_routes, create_jsonrpc_routes
from a2a.server.tasks import InMemoryTaskStore, TaskUpdater
from a2a.types.a2a_pb2 import (
    AgentCapabilities,
    AgentCard,
    AgentInterface,
    AgentSkill,
    Part,
    TaskState,
)
from starlette.applications import Starlette

from agentmesh.security import CertFiles
from tests.support.network import free_port


class ReverserExecutor(AgentExecutor):
    def __init__(self) -> None:
        self.cancelled: list[str] = []
        self.started = asyncio.Event()

    async def execute(self, context: RequestContext, event_queue: EventQueue) -> None:
        assert context.task_id is not None
        assert context.context_id is not None
        state = TaskState.TASK_STATE_SUBMITTED
        await event_queue.enqueue_event(new_task(context.task_id, context.context_id, state))
        updater = TaskUpdater(event_queue, context.task_id, context.context_id)
        # The bridge names the skill in the message's metadata (A2A has no field for it).
        skill = context.message.metadata["skill"] if context.message else ""
        text = context.get_user_input()
        await updater.start_work(new_text_message(f"{skill}: working on {text!r}"))
        if skill == "reverse":
            data = get_data_parts(list(context.message.parts)) if context.message else []
            parts = [Part(text=text[::-1]), new_data_part({"length": len(text), "extra": data})]
            await updater.add_artifact(parts, name="reversed")
            await updater.complete()
        elif skill == "refuse":
            await updater.failed(new_text_message("this agent refuses on principle"))
        elif skill == "wait":
            self.started.set()
            await asyncio.sleep(3600)

    async def cancel(self, context: RequestContext, event_queue: EventQueue) -> None:
        assert context.task_id is not None
        assert context.context_id is not None
        self.cancelled.append(context.task_id)
        updater = TaskUpdater(event_queue, context.task_id, context.context_id)
        await updater.update_status(TaskState.TASK_STATE_CANCELED)


def reverser_card(url: str) -> AgentCard:
    skills = [
        AgentSkill(id="reverse", name="Reverse", description="Reverse a text", tags=["text"]),
        AgentSkill(id="refuse", name="Refuse", description="Always fail", tags=["test"]),
        AgentSkill(id="wait", name="Wait", description="Work until cancelled", tags=["test"]),
    ]
    return AgentCard(
        name="Reverser",
        description="Reverses texts (a test agent)",
        version="2.0.0",
        supported_interfaces=[
            AgentInterface(url=url, protocol_binding="JSONRPC", protocol_version="1.0")
        ],
        capabilities=AgentCapabilities(streaming=True),
        default_input_modes=["text/plain"],
        default_output_modes=["text/plain", "application/json"],
        skills=skills,
    )


@contextlib.asynccontextmanager
async def a2a_server(tls: CertFiles) -> AsyncIterator[tuple[str, ReverserExecutor]]:
    """Serve the Reverser over HTTPS with ``tls`` on a free port; yields (URL, executor)."""
    port = free_port()
    url = f"https://localhost:{port}"
    executor = ReverserExecutor()
    card = reverser_card(url + "/")
    handler = DefaultRequestHandler(
        agent_executor=executor, task_store=InMemoryTaskStore(), agent_card=card
    )
    app = Starlette(
        routes=[*create_agent_card_routes(card), *create_jsonrpc_routes(handler, rpc_url="/")]
    )
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        ssl_certfile=str(tls.cert),
        ssl_keyfile=str(tls.key),
        log_level="warning",
        lifespan="off",
    )
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve())
    try:
        while not server.started:
            if serving.done():
                serving.result()  # raises what stopped it
            await asyncio.sleep(0.01)
        yield url, executor
    finally:
        server.should_exit = True
        await serving
