"""The ``llm`` agent: chat completions from any OpenAI-compatible endpoint (``llm.chat``) and
Python programs written by the model through a tool call (``llm.write_code``).

Configured by ``AGENTMESH_LLM_BASE_URL`` (e.g. ``https://api.openai.com/v1``, a vLLM, Ollama
or llama.cpp server, or :mod:`agentmesh.examples.fake_llm`), ``AGENTMESH_LLM_MODEL`` and
``AGENTMESH_LLM_API_KEY``: the same variables the orchestrator's LLM planner reads. Answers
are streamed (Server-Sent Events) and reported as progress while tokens arrive. Each
completion's token counts are reported with the result (``ctx.report_usage``: they count
against the task's budget) and also shown in the output (``usage``).
"""

from __future__ import annotations

import json
import re
from typing import Any, Literal

import httpx
from pydantic import BaseModel, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from agentmesh.agent import Agent, AssignmentContext, capability, run
from agentmesh.errors import StepFailed

#: The function offered to the model by ``llm.write_code``.
CODE_TOOL = "run_python"
_FENCED = re.compile(r"```(?:python|py)?\s*\n(.*?)```", re.DOTALL)
#: Longest progress message: the newest text, not the whole answer.
_PROGRESS_TEXT = 160


class LLMSettings(BaseSettings):
    """Which model the agent talks to, read from ``AGENTMESH_LLM_*`` environment variables."""

    model_config = SettingsConfigDict(env_prefix="AGENTMESH_LLM_", extra="ignore")

    #: The endpoint's base URL, the part before ``/chat/completions``.
    base_url: str = ""
    #: The model name sent with each request.
    model: str = "default"
    #: Bearer token (empty: no Authorization header).
    api_key: SecretStr = SecretStr("")
    #: How long one completion may take, connection to last token.
    timeout_seconds: float = Field(default=120.0, gt=0)
    #: Report progress after this many streamed tokens.
    progress_every: int = Field(default=8, ge=1)


class FunctionSpec(BaseModel):
    """A function the model may call: its name, what it does, and a JSON schema of arguments."""

    name: str = Field(min_length=1, max_length=64, pattern=r"^[a-zA-Z0-9_-]+$")
    description: str = ""
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object"})


class Tool(BaseModel):
    """A tool offered to the model (OpenAI's ``tools`` entry)."""

    type: Literal["function"] = "function"
    function: FunctionSpec


class Message(BaseModel):
    """One chat message, as OpenAI's chat-completions API has it."""

    role: Literal["system", "user", "assistant", "tool"]
    content: str | None = None
    #: For ``tool`` messages: the call this answers.
    tool_call_id: str | None = None
    #: For ``assistant`` messages that called tools, in OpenAI's shape.
    tool_calls: list[dict[str, Any]] | None = None


class ChatIn(BaseModel):
    """A conversation to continue, and the tools the model may call."""

    messages: list[Message] = Field(min_length=1)
    tools: list[Tool] = Field(default_factory=list)
    #: ``auto``, ``none``, ``required`` or the name of one tool to force.
    tool_choice: str = "auto"
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float = Field(default=0.0, ge=0, le=2)


class ToolCallOut(BaseModel):
    """A tool call the model made, its arguments parsed."""

    id: str
    name: str
    arguments: dict[str, Any]


class Usage(BaseModel):
    """Tokens the endpoint counted for one completion (0 when it reports none)."""

    input_tokens: int = 0
    output_tokens: int = 0


class ChatOut(BaseModel):
    """The model's answer."""

    content: str
    tool_calls: list[ToolCallOut]
    finish_reason: str
    model: str
    usage: Usage


class CodeIn(BaseModel):
    """What a program should do, and data it should know about (any JSON)."""

    task: str = Field(min_length=1)
    context: Any = None


class CodeOut(BaseModel):
    """The program the model wrote."""

    code: str
    model: str
    usage: Usage


def _tool_choice(choice: str, tools: list[Tool]) -> str | dict[str, Any]:
    if choice in ("auto", "none", "required"):
        return choice
    if choice not in {t.function.name for t in tools}:
        raise StepFailed(
            f"tool_choice {choice!r} is none of auto, none, required or an offered tool's name",
            code="invalid_input",
            retryable=False,
        )
    return {"type": "function", "function": {"name": choice}}


class _Answer:
    """A streamed answer being put together from its chunks."""

    def __init__(self) -> None:
        self.text: list[str] = []
        self.calls: dict[int, dict[str, str]] = {}
        self.finish_reason = ""
        self.model = ""
        self.usage = Usage()
        self.tokens = 0

    def add(self, chunk: dict[str, Any]) -> str:
        """Take one chunk in; return the text it added."""
        self.model = chunk.get("model") or self.model
        if usage := chunk.get("usage"):
            self.usage = Usage(
                input_tokens=usage.get("prompt_tokens") or 0,
                output_tokens=usage.get("completion_tokens") or 0,
            )
        added = ""
        for choice in chunk.get("choices") or ():
            delta = choice.get("delta") or {}
            if content := delta.get("content"):
                added += content
                self.tokens += 1
            for call in delta.get("tool_calls") or ():
                entry = self.calls.setdefault(call.get("index", 0), {"id": "", "name": ""})
                entry["id"] = call.get("id") or entry["id"]
                function = call.get("function") or {}
                entry["name"] = function.get("name") or entry["name"]
                if piece := function.get("arguments"):
                    entry["arguments"] = entry.get("arguments", "") + piece
                    self.tokens += 1
            self.finish_reason = choice.get("finish_reason") or self.finish_reason
        self.text.append(added)
        return added

    def result(self, model: str) -> ChatOut:
        calls = []
        for index in sorted(self.calls):
            entry = self.calls[index]
            try:
                arguments = json.loads(entry.get("arguments") or "{}")
            except json.JSONDecodeError as exc:
                raise StepFailed(
                    f"the model called {entry['name']!r} with arguments that are not JSON: {exc}",
                    code="llm_bad_output",
                ) from None
            if not isinstance(arguments, dict):
                raise StepFailed(
                    f"the model called {entry['name']!r} with arguments that are no JSON object",
                    code="llm_bad_output",
                )
            calls.append(
                ToolCallOut(
                    id=entry["id"] or f"call_{index}", name=entry["name"], arguments=arguments
                )
            )
        return ChatOut(
            content="".join(self.text),
            tool_calls=calls,
            finish_reason=self.finish_reason or "stop",
            model=self.model or model,
            usage=self.usage,
        )


class LLMAgent(Agent):
    """Talks to one OpenAI-compatible chat-completions endpoint."""

    name = "llm"
    version = "1.0.0"
    max_concurrency = 4

    def __init__(self, settings: LLMSettings | None = None) -> None:
        self.settings = settings or LLMSettings()

    @capability("llm.chat", tags=("example", "llm"))
    async def chat(self, data: ChatIn, ctx: AssignmentContext) -> ChatOut:
        """Continue a conversation with the model; tool calls come back parsed."""
        body: dict[str, Any] = {
            "messages": [m.model_dump(exclude_none=True) for m in data.messages],
            "temperature": data.temperature,
        }
        if data.tools:
            body["tools"] = [t.model_dump() for t in data.tools]
            body["tool_choice"] = _tool_choice(data.tool_choice, data.tools)
        if data.max_tokens is not None:
            body["max_tokens"] = data.max_tokens
        return await self.complete(body, ctx, data.max_tokens)

    @capability("llm.write_code", tags=("example", "llm"))
    async def write_code(self, data: CodeIn, ctx: AssignmentContext) -> CodeOut:
        """Have the model write a standard-library Python program for a task."""
        prompt = data.task
        if data.context is not None:
            prompt += "\n\nWhat is known (JSON):\n" + json.dumps(data.context, indent=1)
        tool = Tool(
            function=FunctionSpec(
                name=CODE_TOOL,
                description="Run a Python 3 program; its files are in the working folder.",
                parameters={
                    "type": "object",
                    "properties": {"code": {"type": "string"}},
                    "required": ["code"],
                },
            )
        )
        body = {
            "messages": [
                {
                    "role": "system",
                    "content": "You write short, self-contained Python 3 programs that use only "
                    f"the standard library and print their findings. Call {CODE_TOOL} with one.",
                },
                {"role": "user", "content": prompt},
            ],
            "tools": [tool.model_dump()],
            "tool_choice": _tool_choice(CODE_TOOL, [tool]),
            "temperature": 0.0,
        }
        answer = await self.complete(body, ctx, None)
        code = next(
            (c.arguments.get("code") for c in answer.tool_calls if c.name == CODE_TOOL), None
        )
        if code is None and (fenced := _FENCED.search(answer.content)):
            code = fenced.group(1)  # a model without tool calling answers in a code block
        if not isinstance(code, str) or not code.strip():
            raise StepFailed(
                f"the model wrote no program (no {CODE_TOOL} call with code, no code block)",
                code="llm_bad_output",
            )
        return CodeOut(code=code, model=answer.model, usage=answer.usage)

    async def complete(
        self, body: dict[str, Any], ctx: AssignmentContext, max_tokens: int | None
    ) -> ChatOut:
        """Stream one completion of ``body`` (chat-completions fields but model and stream),
        reporting progress every few tokens."""
        settings = self.settings
        if not settings.base_url:
            raise StepFailed(
                "no model configured: set AGENTMESH_LLM_BASE_URL (and AGENTMESH_LLM_MODEL)",
                code="llm_not_configured",
                retryable=False,
            )
        url = settings.base_url.rstrip("/") + "/chat/completions"
        key = settings.api_key.get_secret_value()
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        request = {
            **body,
            "model": settings.model,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        answer = _Answer()
        reported = 0
        try:
            async with (
                httpx.AsyncClient(timeout=settings.timeout_seconds) as client,
                client.stream("POST", url, json=request, headers=headers) as response,
            ):
                if response.status_code != 200:
                    await response.aread()
                    raise _refusal(url, response)
                async for line in response.aiter_lines():
                    if not line.startswith("data:"):
                        continue  # blank separators, comments, "event:" lines
                    payload = line[5:].strip()
                    if payload == "[DONE]":
                        break
                    try:
                        chunk = json.loads(payload)
                    except json.JSONDecodeError:
                        raise StepFailed(
                            f"{url} streamed a chunk that is not JSON: {payload[:200]}",
                            code="llm_bad_output",
                        ) from None
                    answer.add(chunk)
                    if answer.tokens - reported >= settings.progress_every:
                        reported = answer.tokens
                        await ctx.progress(
                            answer.tokens / max_tokens if max_tokens else -1,
                            f"{answer.tokens} tokens: " + "".join(answer.text)[-_PROGRESS_TEXT:],
                        )
        except httpx.TimeoutException:
            raise StepFailed(
                f"{url} did not finish within {settings.timeout_seconds}s", code="llm_unavailable"
            ) from None
        except httpx.TransportError as exc:
            raise StepFailed(f"{url} is unreachable: {exc!r}", code="llm_unavailable") from None
        result = answer.result(settings.model)
        # Usage goes with the Result too (the task's budget and totals count it).
        ctx.report_usage(
            input_tokens=result.usage.input_tokens, output_tokens=result.usage.output_tokens
        )
        return result


def _refusal(url: str, response: httpx.Response) -> StepFailed:
    status = response.status_code
    detail = response.text[:300]
    if status == 429 or status >= 500:
        return StepFailed(f"{url} answered {status}: {detail}", code="llm_unavailable")
    return StepFailed(
        f"{url} refused the request with {status}: {detail}",
        code="llm_refused",
        retryable=False,
    )


def main() -> None:
    """Serve the LLM agent until SIGTERM."""
    run(LLMAgent())


if __name__ == "__main__":  # pragma: no cover - exercised as a subprocess
    main()
