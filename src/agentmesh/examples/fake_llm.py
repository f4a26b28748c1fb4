"""A local OpenAI-compatible chat-completions server: scripted or deterministic replies, offline.

Tests script its replies (:meth:`ChatServer.answer`, :meth:`ChatServer.call_tool`,
:meth:`ChatServer.reply`); ``agentmesh dev`` runs it with :func:`analyst_responder` so that
the example workflow runs with no model at all. It speaks just enough of
``POST /chat/completions``: JSON answers, and Server-Sent Events when the request says
``"stream": true`` (one chunk per word, tool-call arguments in pieces, a usage chunk when
``stream_options.include_usage`` is set), over HTTP/1.1 keep-alive connections.

Run it alone with ``python -m agentmesh.examples.fake_llm [PORT]``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import Any

JSONObject = dict[str, Any]

#: Words (with the blank that follows them) are the fake model's tokens.
_TOKEN = re.compile(r"\S+\s*|\s+")


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A function call the fake model makes."""

    name: str
    arguments: JSONObject
    id: str = "call_0"


@dataclass(frozen=True, slots=True)
class Completion:
    """What the fake model says: text, tool calls, or both."""

    content: str = ""
    tool_calls: tuple[ToolCall, ...] = ()


@dataclass(frozen=True, slots=True)
class RawReply:
    """An HTTP reply sent as it is (errors, malformed bodies), streamed or not."""

    status: int
    body: bytes


@dataclass
class StreamedReply:
    """A completion streamed line by line, a few characters (a "token") at a time: how the
    streaming planner's tests and benchmark hold a plan back half-way.

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


Reply = Completion | RawReply | StreamedReply
#: Makes the reply to a request (its parsed JSON body) when none is scripted.
Responder = Callable[[JSONObject], Reply]


def tokens(text: str) -> list[str]:
    """``text`` cut into the fake model's tokens; joined again they give ``text``."""
    return _TOKEN.findall(text)


def count_tokens(request: JSONObject) -> int:
    """The fake model's input token count: the tokens of every message's text."""
    total = 0
    for message in request.get("messages") or ():
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, str):
            total += len(tokens(content))
    return total


def _tool_call_json(call: ToolCall, arguments: str) -> JSONObject:
    return {
        "id": call.id,
        "type": "function",
        "function": {"name": call.name, "arguments": arguments},
    }


def completion(content: str, *, usage: tuple[int, int] = (0, 0)) -> JSONObject:
    """An OpenAI chat-completions response whose one choice says ``content``."""
    return _completion_json(Completion(content=content), usage)


def _completion_json(reply: Completion, usage: tuple[int, int]) -> JSONObject:
    message: JSONObject = {"role": "assistant", "content": reply.content or None}
    if reply.tool_calls:
        message["tool_calls"] = [
            _tool_call_json(call, json.dumps(call.arguments)) for call in reply.tool_calls
        ]
    return {
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "model": "test-model",
        "choices": [
            {
                "index": 0,
                "message": message,
                "finish_reason": "tool_calls" if reply.tool_calls else "stop",
            }
        ],
        "usage": {
            "prompt_tokens": usage[0],
            "completion_tokens": usage[1],
            "total_tokens": sum(usage),
        },
    }


def _chunk(delta: JSONObject, finish_reason: str | None = None) -> JSONObject:
    return {
        "id": "chatcmpl-test",
        "object": "chat.completion.chunk",
        "model": "test-model",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
    }


def stream_chunks(
    reply: Completion, prompt_tokens: int, include_usage: bool
) -> Iterator[JSONObject]:
    """The SSE chunks of ``reply``: a role, then one chunk per token of text and arguments."""
    yield _chunk({"role": "assistant", "content": ""})
    produced = 0
    for token in tokens(reply.content):
        produced += 1
        yield _chunk({"content": token})
    for index, call in enumerate(reply.tool_calls):
        head = _tool_call_json(call, "")
        yield _chunk({"tool_calls": [{"index": index, **head}]})
        for piece in tokens(json.dumps(call.arguments)):
            produced += 1
            yield _chunk({"tool_calls": [{"index": index, "function": {"arguments": piece}}]})
    yield _chunk({}, "tool_calls" if reply.tool_calls else "stop")
    if include_usage:
        yield {
            "id": "chatcmpl-test",
            "object": "chat.completion.chunk",
            "model": "test-model",
            "choices": [],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": produced,
                "total_tokens": prompt_tokens + produced,
            },
        }


def output_tokens(reply: Completion) -> int:
    """How many tokens the fake model spends on ``reply``."""
    return len(tokens(reply.content)) + sum(
        len(tokens(json.dumps(call.arguments))) for call in reply.tool_calls
    )


class ChatServer:
    """A real HTTP/1.1 server on 127.0.0.1 speaking just enough of ``/chat/completions``.

    Replies are scripted in order (:meth:`answer`, :meth:`call_tool`, :meth:`reply`); when
    none is left, ``responder`` makes one (without a responder: a 500). Every request is
    recorded with its parsed JSON body and the number of the connection it came on
    (``connection``, counting from 1). Keep-alive connections are served until the client
    closes.
    """

    def __init__(
        self,
        responder: Responder | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        token_delay: float = 0.0,
    ) -> None:
        self.responder = responder
        self.replies: deque[Reply] = deque()
        self.requests: list[JSONObject] = []
        #: Seconds to wait before answering, to provoke client timeouts.
        self.delay = 0.0
        #: Seconds between streamed chunks, to look like a model that thinks.
        self.token_delay = token_delay
        self.base_url = ""
        self.port = 0
        self._host = host
        self._wanted_port = port
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()
        #: Connections accepted so far.
        self.connections = 0

    def answer(self, content: JSONObject | str) -> None:
        """Script a completion whose content is ``content`` (a dict is sent as JSON text)."""
        text = content if isinstance(content, str) else json.dumps(content)
        self.replies.append(Completion(content=text))

    def call_tool(self, name: str, arguments: JSONObject, content: str = "") -> None:
        """Script a completion that calls the function ``name`` with ``arguments``."""
        self.replies.append(Completion(content=content, tool_calls=(ToolCall(name, arguments),)))

    def reply(self, status: int, body: JSONObject | str) -> None:
        """Script a raw HTTP reply."""
        data = body if isinstance(body, str) else json.dumps(body)
        self.replies.append(RawReply(status, data.encode()))

    def stream(self, lines: list[str], **options: Any) -> StreamedReply:
        """Script a completion streamed line by line (see :class:`StreamedReply`)."""
        reply = StreamedReply(lines, **options)
        self.replies.append(reply)
        return reply

    def messages(self, n: int) -> list[JSONObject]:
        """The chat messages of the ``n``-th request."""
        messages: list[JSONObject] = self.requests[n]["json"]["messages"]
        return messages

    async def __aenter__(self) -> ChatServer:
        self._server = await asyncio.start_server(self._handle, self._host, self._wanted_port)
        self.port = self._server.sockets[0].getsockname()[1]
        self.base_url = f"http://{self._host}:{self.port}/v1"
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

    def _next_reply(self, request: JSONObject | None) -> Reply:
        if self.replies:
            return self.replies.popleft()
        if self.responder is not None and request is not None:
            return self.responder(request)
        return RawReply(500, b'{"error": "no scripted reply"}')

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
                request = json.loads(body) if body else None
                self.requests.append(
                    {
                        "method": method,
                        "path": path,
                        "headers": headers,
                        "json": request,
                        "connection": connection,
                    }
                )
                if self.delay:
                    await asyncio.sleep(self.delay)
                reply = self._next_reply(request)
                streamed = isinstance(request, dict) and request.get("stream") is True
                if isinstance(reply, RawReply):
                    await self._send(writer, reply.status, reply.body)
                elif isinstance(reply, StreamedReply):
                    await self._stream_lines(writer, reply)
                elif streamed:
                    assert isinstance(request, dict)
                    options = request.get("stream_options") or {}
                    await self._stream(
                        writer, reply, count_tokens(request), bool(options.get("include_usage"))
                    )
                else:
                    prompt = count_tokens(request) if isinstance(request, dict) else 0
                    usage = (prompt, output_tokens(reply))
                    await self._send(
                        writer, 200, json.dumps(_completion_json(reply, usage)).encode()
                    )
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # The client went away mid-request, as a timed-out client does.
        finally:
            self._handlers.discard(task)
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    @staticmethod
    async def _send(writer: asyncio.StreamWriter, status: int, data: bytes) -> None:
        writer.write(
            f"HTTP/1.1 {status} Scripted\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(data)}\r\n\r\n".encode()
            + data
        )
        await writer.drain()

    async def _stream(
        self, writer: asyncio.StreamWriter, reply: Completion, prompt: int, include_usage: bool
    ) -> None:
        # Chunked transfer encoding keeps the connection reusable after the stream ends.
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )
        events = [f"data: {json.dumps(c)}\n\n" for c in stream_chunks(reply, prompt, include_usage)]
        for event in [*events, "data: [DONE]\n\n"]:
            data = event.encode()
            writer.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            await writer.drain()
            if self.token_delay:
                await asyncio.sleep(self.token_delay)
        writer.write(b"0\r\n\r\n")
        await writer.drain()

    @staticmethod
    async def _stream_lines(writer: asyncio.StreamWriter, reply: StreamedReply) -> None:
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
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
                piece = _chunk({"content": text[start : start + reply.token_chars]})
                data = f"data: {json.dumps(piece)}\n\n".encode()
                writer.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                await writer.drain()
            reply.lines_sent += 1
        reply.final_sent, reply.final_sent_at = True, time.time()
        done = b"data: [DONE]\n\n"
        writer.write(f"{len(done):x}\r\n".encode() + done + b"\r\n0\r\n\r\n")
        await writer.drain()


# -- the deterministic "analyst" model that ``agentmesh dev`` serves -------------------------

#: The function the LLM agent asks for when it wants code (see ``llm.write_code``).
CODE_TOOL = "run_python"

#: The program the fake model writes for any CSV: per-column statistics and a text bar chart
#: of the first numeric column, grouped by the first text column when there is one.
FIGURE_PROGRAM = """\
import csv
import statistics


def number(text):
    try:
        return float(text)
    except ValueError:
        return None


with open("data.csv", newline="") as handle:
    rows = list(csv.DictReader(handle))
columns = list(rows[0]) if rows else []
numeric = [c for c in columns if all(number(r[c]) is not None for r in rows)]
labels = [c for c in columns if c not in numeric]
print(f"{len(rows)} rows, {len(columns)} columns")
if numeric:
    value = numeric[0]
    label = labels[0] if labels else None
    groups = {}
    for index, row in enumerate(rows):
        key = row[label] if label else str(index + 1)
        groups.setdefault(key, []).append(number(row[value]))
    totals = {key: sum(values) for key, values in groups.items()}
    widest = max(abs(t) for t in totals.values()) or 1
    print(f"total {value} by {label or 'row'}:")
    for key, total in sorted(totals.items(), key=lambda kv: -kv[1]):
        bar = "#" * max(1, round(30 * abs(total) / widest))
        print(f"{key:>12} | {bar} {total:g}")
    print(f"mean {value}: {statistics.fmean(number(r[value]) for r in rows):g}")
"""


def _last_user_text(request: JSONObject) -> str:
    for message in reversed(request.get("messages") or []):
        if isinstance(message, dict) and message.get("role") == "user":
            content = message.get("content")
            return content if isinstance(content, str) else ""
    return ""


def _offers_code_tool(request: JSONObject) -> bool:
    for tool in request.get("tools") or []:
        if isinstance(tool, dict) and (tool.get("function") or {}).get("name") == CODE_TOOL:
            return True
    return False


def analyst_responder(request: JSONObject) -> Reply:
    """A deterministic stand-in for a model: writes :data:`FIGURE_PROGRAM` when offered the
    code tool, otherwise explains the program output quoted in the last user message."""
    if _offers_code_tool(request):
        return Completion(tool_calls=(ToolCall(CODE_TOOL, {"code": FIGURE_PROGRAM}),))
    lines = [ln.strip() for ln in _last_user_text(request).splitlines() if "|" in ln]
    if not lines:
        return Completion(content="There is nothing to explain yet: the program printed no chart.")
    top = lines[0].split("|")
    return Completion(
        content=(
            f"The chart ranks {len(lines)} groups by their total. {top[0].strip()} leads with "
            f"{top[1].strip(' #')}, and the smallest group is "
            f"{lines[-1].split('|')[0].strip()}."
        )
    )


async def serve(port: int = 0, *, ready: Callable[[str], None] | None = None) -> None:
    """Serve :func:`analyst_responder` on ``port`` until cancelled; ``ready`` gets the URL."""
    async with ChatServer(analyst_responder, port=port) as server:
        if ready is not None:
            ready(server.base_url)
        await asyncio.Event().wait()


def main() -> None:
    """Serve the deterministic model until interrupted, printing its base URL."""
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(port, ready=lambda url: print(url, flush=True)))


if __name__ == "__main__":  # pragma: no cover - a manual tool
    main()
