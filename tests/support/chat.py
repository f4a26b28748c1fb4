"""A real local HTTP server speaking the OpenAI chat-completions protocol, with scripted replies."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import deque
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

JSONObject = dict[str, Any]


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


@dataclass
class StreamedReply:
    """A completion streamed as server-sent events, a few characters (a "token") at a time.

    ``lines`` are sent one after another, each ending in a newline, with ``token_delay``
    seconds before each token; with a ``gate``, the lines from ``hold_at`` on wait until the
    test sets it. ``final_sent`` becomes true just before the last chunk (``[DONE]``) goes
    out, ``lines_sent`` counts the lines sent in full.
    """

    lines: list[str]
    token_delay: float = 0.0
    gate: asyncio.Event | None = None
    hold_at: int = 1
    token_chars: int = 4
    lines_sent: int = 0
    final_sent: bool = False
    #: ``time.time()`` when the last chunk went out.
    final_sent_at: float = 0.0
    tokens: list[str] = field(default_factory=list, repr=False)


def _chunk(content: str) -> bytes:
    event = {
        "id": "chatcmpl-test",
        "object": "chat.completion.chunk",
        "model": "test-model",
        "choices": [{"index": 0, "delta": {"content": content}, "finish_reason": None}],
    }
    return _http_chunk(f"data: {json.dumps(event)}\n\n".encode())


def _http_chunk(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


class ChatServer:
    """A real HTTP/1.1 server on 127.0.0.1 speaking just enough of ``/chat/completions``.

    Replies are scripted in order (:meth:`answer`, :meth:`reply`); every request is recorded
    with its parsed JSON body and the number of the connection it came on (``connection``,
    counting from 1). Keep-alive connections are served until the client closes.
    """

    def __init__(self) -> None:
        self.replies: deque[tuple[int, bytes] | StreamedReply] = deque()
        self.requests: list[JSONObject] = []
        #: Seconds to wait before answering, to provoke client timeouts.
        self.delay = 0.0
        self.base_url = ""
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()
        #: Connections accepted so far.
        self.connections = 0

    def answer(self, content: JSONObject | str) -> None:
        """Script a completion whose content is ``content`` (a dict is sent as JSON text)."""
        text = content if isinstance(content, str) else json.dumps(content)
        self.reply(200, completion(text))

    def reply(self, status: int, body: JSONObject | str) -> None:
        """Script a raw HTTP reply."""
        data = body if isinstance(body, str) else json.dumps(body)
        self.replies.append((status, data.encode()))

    def stream(self, lines: list[str], **options: Any) -> StreamedReply:
        """Script a streamed completion of ``lines`` (see :class:`StreamedReply`)."""
        reply = StreamedReply(lines, **options)
        self.replies.append(reply)
        return reply

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

    async def _stream(self, reply: StreamedReply, writer: asyncio.StreamWriter) -> None:
        writer.write(
            b"HTTP/1.1 200 Streamed\r\nContent-Type: text/event-stream\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )
        await writer.drain()
        for number, line in enumerate(reply.lines):
            if reply.gate is not None and number == reply.hold_at:
                await reply.gate.wait()
            text = line + "\n"
            for start in range(0, len(text), reply.token_chars):
                if reply.token_delay:
                    await asyncio.sleep(reply.token_delay)
                writer.write(_chunk(text[start : start + reply.token_chars]))
                await writer.drain()
            reply.lines_sent += 1
        reply.final_sent, reply.final_sent_at = True, time.time()
        writer.write(_http_chunk(b"data: [DONE]\n\n") + b"0\r\n\r\n")
        await writer.drain()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        self.connections += 1
        connection = self.connections
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
                        "connection": connection,
                    }
                )
                if self.delay:
                    await asyncio.sleep(self.delay)
                reply = (
                    self.replies.popleft()
                    if self.replies
                    else (500, b'{"error": "no scripted reply"}')
                )
                if isinstance(reply, StreamedReply):
                    await self._stream(reply, writer)
                    continue
                status, data = reply
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
