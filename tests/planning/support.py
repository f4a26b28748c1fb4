"""Helpers of the planning tests: plan building, the demo capabilities, a fake model server."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import deque
from types import TracebackType
from typing import Any

from agentmesh.models import Capability, Plan, StepSpec

JSONObject = dict[str, Any]


def make_plan(*steps: JSONObject, aggregate: JSONObject | None = None) -> Plan:
    """A plan of steps given as plain dicts; ``capability`` defaults to ``test.echo``."""
    return Plan(
        steps=tuple(StepSpec(**{"capability": "test.echo", **step}) for step in steps),
        aggregate=aggregate or {},
    )


_ANALYSIS = {
    "type": "object",
    "required": ["words", "keywords", "sentiment", "sentences"],
    "properties": {
        "words": {"type": "integer", "minimum": 0},
        "keywords": {"type": "array", "items": {"type": "string"}},
        "sentiment": {"type": "number"},
        "sentences": {"type": "array", "items": {"type": "string"}},
    },
}

DEMO_CAPABILITIES: dict[str, Capability] = {
    c.name: c
    for c in (
        Capability(
            name="text.split",
            description="Split a text into at most max_sections sections.",
            input_schema={
                "type": "object",
                "required": ["text"],
                "properties": {
                    "text": {"type": "string"},
                    "max_sections": {"type": "integer", "minimum": 1},
                },
                "additionalProperties": False,
            },
            output_schema={
                "type": "object",
                "required": ["sections"],
                "properties": {"sections": {"type": "array", "items": {"type": "string"}}},
            },
        ),
        Capability(
            name="text.analyze",
            description="Count words and sentences, find keywords and sentiment of a text.",
            input_schema={
                "type": "object",
                "required": ["text"],
                "properties": {"text": {"type": "string"}},
            },
            output_schema=_ANALYSIS,
        ),
        Capability(
            name="text.summarize",
            description="Summarize analyses of sections into one brief.",
            input_schema={
                "type": "object",
                "required": ["analyses"],
                "properties": {
                    "analyses": {"type": "array", "items": _ANALYSIS, "minItems": 1},
                    "title": {"type": "string"},
                },
            },
            output_schema={
                "type": "object",
                "required": ["summary", "keywords", "sentiment", "words"],
                "properties": {
                    "summary": {"type": "string"},
                    "keywords": {"type": "array", "items": {"type": "string"}},
                    "sentiment": {"type": "number"},
                    "words": {"type": "integer"},
                },
            },
        ),
        Capability(
            name="text.publish",
            description="Publish a summary; answers its URL.",
            input_schema={
                "type": "object",
                "required": ["summary"],
                "properties": {"summary": {"type": "string"}},
            },
            output_schema={"type": "object", "properties": {"url": {"type": "string"}}},
        ),
        Capability(
            name="text.unpublish",
            description="Remove a published summary.",
            input_schema={
                "type": "object",
                "required": ["summary", "output"],
                "properties": {
                    "summary": {"type": "string"},
                    "output": {
                        "type": "object",
                        "required": ["url"],
                        "properties": {"url": {"type": "string"}},
                    },
                },
            },
            output_schema={"type": "object", "properties": {"removed": {"type": "boolean"}}},
        ),
    )
}


def completion(content: str) -> JSONObject:
    """An OpenAI chat-completions response whose one choice says ``content``."""
    return {
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "model": "test-model",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "finish_reason": "stop",
            }
        ],
    }


class ChatServer:
    """A real HTTP/1.1 server on 127.0.0.1 speaking just enough of ``/chat/completions``.

    Replies are scripted in order (:meth:`answer`, :meth:`reply`); every request is recorded
    with its parsed JSON body. Keep-alive connections are served until the client closes.
    """

    def __init__(self) -> None:
        self.replies: deque[tuple[int, bytes]] = deque()
        self.requests: list[JSONObject] = []
        #: Seconds to wait before answering, to provoke client timeouts.
        self.delay = 0.0
        self.base_url = ""
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()

    def answer(self, content: JSONObject | str) -> None:
        """Script a completion whose content is ``content`` (a dict is sent as JSON text)."""
        text = content if isinstance(content, str) else json.dumps(content)
        self.reply(200, completion(text))

    def reply(self, status: int, body: JSONObject | str) -> None:
        """Script a raw HTTP reply."""
        data = body if isinstance(body, str) else json.dumps(body)
        self.replies.append((status, data.encode()))

    def messages(self, n: int) -> list[JSONObject]:
        """The chat messages of the ``n``-th request."""
        messages: list[JSONObject] = self.requests[n]["json"]["messages"]
        return messages

    async def __aenter__(self) -> ChatServer:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.base_url = f"http://127.0.0.1:{port}/v1"
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._handlers):
            task.cancel()
        for task in list(self._handlers):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            while request_line := await reader.readline():
                method, path, _ = request_line.decode().split(" ", 2)
                headers: dict[str, str] = {}
                while (line := await reader.readline()) not in (b"\r\n", b"\n", b""):
                    name, value = line.decode().split(":", 1)
                    headers[name.strip().lower()] = value.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                self.requests.append(
                    {
                        "method": method,
                        "path": path,
                        "headers": headers,
                        "json": json.loads(body) if body else None,
                    }
                )
                if self.delay:
                    await asyncio.sleep(self.delay)
                status, data = (
                    self.replies.popleft()
                    if self.replies
                    else (500, b'{"error": "no scripted reply"}')
                )
                writer.write(
                    f"HTTP/1.1 {status} Scripted\r\nContent-Type: application/json\r\n"
                    f"Content-Length: {len(data)}\r\n\r\n".encode()
                    + data
                )
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # The client went away mid-request, as a timed-out client does.
        finally:
            self._handlers.discard(task)
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
