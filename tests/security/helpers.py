"""Helpers of the security tests: stubs as any identity, a hand-written agent, policy files."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import grpc
from google.protobuf import struct_pb2

from agentmesh._proto.agentmesh.v1 import agent_pb2, agent_pb2_grpc, common_pb2
from agentmesh._proto.agentmesh.v1 import orchestrator_pb2 as pb
from agentmesh._proto.agentmesh.v1 import orchestrator_pb2_grpc as pb_grpc
from agentmesh.orchestrator import Orchestrator
from agentmesh.security import CertFiles, IdentityKind, channel_credentials, server_credentials

#: Codes a well-formed but unwelcome request may get; never INTERNAL or UNKNOWN.
CLIENT_ERRORS = frozenset(
    {
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.ALREADY_EXISTS,
    }
)


@contextlib.asynccontextmanager
async def channel(
    orchestrator: Orchestrator,
    certs: Path,
    kind: str,
    name: str,
    *,
    server_name: str = "",
) -> AsyncIterator[grpc.aio.Channel]:
    """An mTLS channel to ``orchestrator`` holding the certificate ``kind/name``.

    ``server_name`` is the host name the orchestrator's certificate must carry (localhost).
    """
    credentials = channel_credentials(CertFiles.of(certs, IdentityKind(kind), name))
    options: list[tuple[str, Any]] = [("grpc.use_local_subchannel_pool", 1)]
    if server_name:
        options.append(("grpc.ssl_target_name_override", server_name))
    async with grpc.aio.secure_channel(
        f"localhost:{orchestrator.port}", credentials, options=options
    ) as opened:
        yield opened


@contextlib.asynccontextmanager
async def orchestrator_stub(
    orchestrator: Orchestrator, certs: Path, kind: str = "client", name: str = "alice"
) -> AsyncIterator[pb_grpc.OrchestratorAsyncStub]:
    """An Orchestrator stub as ``kind/name``."""
    async with channel(orchestrator, certs, kind, name) as opened:
        yield pb_grpc.OrchestratorStub(opened)  # type: ignore[no-untyped-call]


@contextlib.asynccontextmanager
async def registry_stub(
    orchestrator: Orchestrator,
    certs: Path,
    kind: str = "agent",
    name: str = "echo-1",
    *,
    server_name: str = "",
) -> AsyncIterator[pb_grpc.RegistryAsyncStub]:
    """A Registry stub as ``kind/name``."""
    async with channel(orchestrator, certs, kind, name, server_name=server_name) as opened:
        yield pb_grpc.RegistryStub(opened)  # type: ignore[no-untyped-call]


def write(path: Path, text: str) -> None:
    """Replace a file at once, as an operator's tooling should (from sync code: the event
    loop is not the place for blocking I/O).

    Not ``path.write_text``: it empties the file first, and a reload that reads between the
    two sees a file that is neither the old nor the new one (and says so, a second time).
    """
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(text)
    partial.replace(path)


def struct(value: dict[str, Any]) -> struct_pb2.Struct:
    """A protobuf Struct of a JSON object."""
    message = struct_pb2.Struct()
    message.update(value)
    return message


def plan_request(*steps: tuple[str, str, dict[str, Any]], **fields: Any) -> pb.SubmitTaskRequest:
    """A SubmitTask request with a plan of ``(id, capability, input)`` steps."""
    request = pb.SubmitTaskRequest(**fields)
    for step_id, capability, step_input in steps:
        step = request.plan.steps.add(id=step_id, capability=capability)
        step.input.update(step_input)
    return request


def capability(name: str) -> common_pb2.Capability:
    """A capability with no schemas."""
    return common_pb2.Capability(name=name, version="1.0.0")


Script = Callable[["RawAgent", agent_pb2.Assignment], Awaitable[None]]


async def hang(agent: RawAgent, assignment: agent_pb2.Assignment) -> None:
    """Accept, then never answer."""
    await agent.send(
        agent_pb2.AgentMessage(accepted=agent_pb2.Accepted(assignment_id=assignment.assignment_id))
    )


async def echo(agent: RawAgent, assignment: agent_pb2.Assignment) -> None:
    """Answer with the input as output."""
    await agent.send(
        agent_pb2.AgentMessage(
            result=agent_pb2.Result(assignment_id=assignment.assignment_id, output=assignment.input)
        )
    )


class RawAgent(agent_pb2_grpc.AgentServicer):
    """An agent written against the protos alone (no SDK), its replies scripted by the test.

    ``async with RawAgent(certs, "echo-1", script)`` serves the Agent service over mTLS with
    the certificate ``agent/echo-1``; :meth:`register` registers it with an orchestrator.
    """

    def __init__(
        self,
        certs: Path,
        name: str,
        script: Script = hang,
        capabilities: Sequence[str] = ("test.echo",),
    ) -> None:
        self.certs = certs
        self.name = name
        self.script = script
        self.capabilities = tuple(capabilities)
        self.assignments: list[agent_pb2.Assignment] = []
        self.got_assignment = asyncio.Event()
        self.cancels: list[agent_pb2.Cancel] = []
        self.got_cancel = asyncio.Event()
        #: The kind of every message orchestrators sent, as it arrived.
        self.kinds: list[str] = []
        #: Serial numbers of the certificates orchestrators opened Sessions with.
        self.orchestrator_serials: list[int] = []
        self.sessions = 0
        #: Sessions open now (``sessions`` counts every one ever opened).
        self.open_sessions = 0
        #: Pings are answered only while this is set (clear it to play an agent too busy to).
        self.answering = asyncio.Event()
        self.answering.set()
        self._outbox: asyncio.Queue[agent_pb2.AgentMessage | None] = asyncio.Queue()
        self._server: grpc.aio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.port = 0

    @property
    def endpoint(self) -> str:
        """Where the Agent service listens."""
        return f"127.0.0.1:{self.port}"

    def card(self, **fields: Any) -> common_pb2.AgentCard:
        """The card this agent registers (fields override)."""
        values: dict[str, Any] = {
            "name": self.name,
            "endpoint": self.endpoint,
            "max_concurrency": 4,
            "capabilities": [capability(c) for c in self.capabilities],
        }
        values.update(fields)
        return common_pb2.AgentCard(**values)

    async def __aenter__(self) -> RawAgent:
        server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
        agent_pb2_grpc.add_AgentServicer_to_server(self, server)
        files = CertFiles.of(self.certs, IdentityKind.AGENT, self.name)
        self.port = server.add_secure_port("127.0.0.1:0", server_credentials(files))
        await server.start()
        self._server = server
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.stop(grace=None)

    async def register(
        self,
        orchestrator: Orchestrator,
        *,
        server_name: str = "",
        call_timeout: float = 10,
        **card: Any,
    ) -> pb.RegisterAgentResponse:
        """Register with ``orchestrator`` as this agent's own identity."""
        async with registry_stub(
            orchestrator, self.certs, "agent", self.name, server_name=server_name
        ) as stub:
            return await stub.RegisterAgent(
                pb.RegisterAgentRequest(card=self.card(**card)), timeout=call_timeout
            )

    async def send(self, message: agent_pb2.AgentMessage) -> None:
        """Send a message on the current Session."""
        await self._outbox.put(message)

    async def Session(  # type: ignore[override]
        self,
        request_iterator: AsyncIterator[agent_pb2.OrchestratorMessage],
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> AsyncIterator[agent_pb2.AgentMessage]:
        from cryptography import x509

        pem = list(context.auth_context().get("x509_pem_cert") or ())
        if pem:
            self.orchestrator_serials.append(x509.load_pem_x509_certificate(pem[0]).serial_number)
        self.sessions += 1
        self._outbox = outbox = asyncio.Queue()

        async def read() -> None:
            async for message in request_iterator:
                kind = message.WhichOneof("kind")
                self.kinds.append(kind or "")
                if kind == "ping":
                    await self.answering.wait()
                    await outbox.put(
                        agent_pb2.AgentMessage(pong=agent_pb2.Pong(nonce=message.ping.nonce))
                    )
                elif kind == "assignment":
                    self.assignments.append(message.assignment)
                    self.got_assignment.set()
                    task = asyncio.create_task(self.script(self, message.assignment))
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)
                elif kind == "cancel":
                    self.cancels.append(message.cancel)
                    self.got_cancel.set()
            await outbox.put(None)

        reader = asyncio.create_task(read())
        self.open_sessions += 1
        try:
            while (message := await outbox.get()) is not None:
                yield message
        finally:
            self.open_sessions -= 1
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)

    async def Describe(
        self, request: agent_pb2.DescribeRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> common_pb2.AgentCard:
        return self.card()


async def rpc_code(call: Awaitable[object]) -> grpc.StatusCode:
    """The status code a call ends with (OK when it returns)."""
    try:
        await call
    except grpc.aio.AioRpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


async def refusal(call: Awaitable[object]) -> grpc.aio.AioRpcError:
    """The error a call must end with."""
    try:
        await call
    except grpc.aio.AioRpcError as exc:
        return exc
    raise AssertionError("the call succeeded but should have been refused")


def events(captured: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    """The captured structlog entries of one event name."""
    return [entry for entry in captured if entry.get("event") == name]
