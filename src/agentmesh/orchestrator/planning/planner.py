"""Turning a task request into a validated plan.

:class:`Planner` is the one interface the engine needs. :class:`CatalogPlanner` answers from
workflows, :class:`LLMPlanner` asks a model behind an OpenAI-compatible endpoint, and
:class:`ChainPlanner` tries several in turn. Delegating to an agent that offers a ``plan``
capability is one more :class:`Planner`, built where assignments can be sent (the engine).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncGenerator, AsyncIterator, Mapping, Sequence
from types import TracebackType
from typing import Final, Protocol, Self, runtime_checkable

import httpx
import pydantic
import structlog

from agentmesh.config import Settings
from agentmesh.errors import AgentMeshError, AgentUnavailable, FailedPrecondition, ValidationError
from agentmesh.limits import PlanLimits
from agentmesh.models import Capability, Plan, TaskRequest
from agentmesh.orchestrator.planning.prompts import (
    goal_prompt,
    json_object,
    repair_prompt,
    streaming_prompt,
    system_prompt,
)
from agentmesh.orchestrator.planning.similarity import Match, TfIdfIndex
from agentmesh.orchestrator.planning.stream import (
    PlanDraft,
    PlanPiece,
    StepByStep,
    StreamingPlanner,
    json_lines,
    pieces,
)
from agentmesh.orchestrator.planning.validate import validate_plan
from agentmesh.orchestrator.planning.workflow import Catalog, Workflow

log = structlog.get_logger("agentmesh.orchestrator.planning")

DEFAULT_MIN_SCORE: Final = 0.2
"""The similarity below which a goal matches no workflow."""


@runtime_checkable
class Planner(Protocol):
    """Makes the validated plan for a task request.

    A planner that cannot plan a ``goal`` raises
    :class:`~agentmesh.errors.ValidationError` with ``field="goal"``, which lets a
    :class:`ChainPlanner` try the next one.
    """

    async def plan(self, request: TaskRequest, capabilities: Mapping[str, Capability]) -> Plan:
        """A plan for ``request`` that only uses ``capabilities`` (name → capability)."""
        ...


async def draft_plan(
    planner: Planner, request: TaskRequest, capabilities: Mapping[str, Capability]
) -> PlanDraft:
    """``planner``'s plan as a draft: its first steps when it streams, else the whole plan."""
    if isinstance(planner, StreamingPlanner):
        return await planner.draft(request, capabilities)
    return PlanDraft(await planner.plan(request, capabilities))


def workflow_catalog(settings: Settings) -> Catalog:
    """The built-in workflows overlaid with those in ``settings.workflows_dir``."""
    catalog = Catalog.builtin()
    if settings.workflows_dir is not None:
        catalog = catalog.overlay(Catalog.from_dir(settings.workflows_dir))
    return catalog


def default_planner(settings: Settings, *, delegate: Planner | None = None) -> Planner:
    """The orchestrator's planner: the built-in workflows overlaid with those in
    ``settings.workflows_dir``; for goals no workflow fits, ``delegate`` (e.g. planning
    agents), then a model when ``settings.llm_base_url`` is set (with ``llm_model``,
    ``llm_api_key``, ``llm_timeout_seconds``)."""
    planners: list[Planner] = [CatalogPlanner(workflow_catalog(settings))]
    if delegate is not None:
        planners.append(delegate)
    if settings.llm_base_url:
        planners.append(
            LLMPlanner(
                settings.llm_base_url,
                settings.llm_model,
                settings.llm_api_key,
                timeout=settings.llm_timeout_seconds,
                stream=settings.llm_stream,
            )
        )
    return planners[0] if len(planners) == 1 else ChainPlanner(planners)


def catalog_of(planner: Planner) -> Catalog:
    """The workflow catalog ``planner`` plans from (that of the first catalog planner in a
    chain); an empty catalog when it plans from none."""
    if isinstance(planner, CatalogPlanner):
        return planner.catalog
    if isinstance(planner, ChainPlanner):
        for member in planner.planners:
            catalog = catalog_of(member)
            if len(catalog):
                return catalog
    return Catalog()


class CatalogPlanner:
    """Plans from a catalog: the request's own plan, a named workflow, or the best-fitting one.

    A goal picks the workflow whose name and description are most similar to it (TF-IDF
    cosine, see :mod:`agentmesh.orchestrator.planning.similarity`); below ``min_score`` it
    picks none.
    """

    def __init__(
        self,
        catalog: Catalog,
        *,
        min_score: float = DEFAULT_MIN_SCORE,
        limits: PlanLimits = PlanLimits(),  # noqa: B008 - frozen, so one shared default is safe
    ) -> None:
        self._catalog = catalog
        self._min_score = min_score
        self._limits = limits
        self._index = TfIdfIndex({w.name: f"{w.name} {w.description}" for w in catalog})

    @property
    def catalog(self) -> Catalog:
        """The workflows this planner plans from."""
        return self._catalog

    def rank(self, goal: str) -> list[Match]:
        """Every workflow's fit to ``goal``, best first, with the terms they share."""
        return self._index.rank(goal)

    def select(self, goal: str) -> Workflow:
        """The workflow that best fits ``goal``; ValidationError(field="goal") when none does."""
        ranking = self.rank(goal)
        if not ranking or ranking[0].score < self._min_score:
            best = f"; closest: {ranking[0].key} ({ranking[0].score:.2f})" if ranking else ""
            raise ValidationError(
                f"no workflow fits the goal (similarity below {self._min_score}){best}",
                field="goal",
            )
        choice = ranking[0]
        log.info(
            "plan.workflow_selected",
            workflow=choice.key,
            score=round(choice.score, 3),
            terms=list(choice.terms),
        )
        return self._catalog.get(choice.key)

    async def plan(self, request: TaskRequest, capabilities: Mapping[str, Capability]) -> Plan:
        """The request's plan, its workflow's, or its goal's best workflow's, validated."""
        _check_one_spec(request)
        if request.plan is not None:
            return validate_plan(request.plan, capabilities=capabilities, limits=self._limits)
        if request.workflow:
            if request.workflow not in self._catalog:
                known = ", ".join(self._catalog.names) or "none"
                raise ValidationError(
                    f"no workflow {request.workflow!r}; known: {known}", field="workflow"
                )
            workflow = self._catalog.get(request.workflow)
        else:
            workflow = self.select(request.goal)
        workflow.check_input(request.input)
        return validate_plan(workflow.to_plan(), capabilities=capabilities, limits=self._limits)


class ChainPlanner:
    """Asks each planner in turn; the next one gets a goal only if the previous declined it.

    Typically ``ChainPlanner([CatalogPlanner(catalog), llm_planner])``: known workflows first,
    the model for goals no workflow fits. Every other error is final. ``async with`` enters
    the planners that are async context managers (an :class:`LLMPlanner`) and closes them.
    """

    def __init__(self, planners: Sequence[Planner]) -> None:
        if not planners:
            raise ValueError("ChainPlanner needs at least one planner")
        self._planners = tuple(planners)
        self._stack = contextlib.AsyncExitStack()

    async def __aenter__(self) -> Self:
        async with contextlib.AsyncExitStack() as stack:
            for planner in self._planners:
                if isinstance(planner, contextlib.AbstractAsyncContextManager):
                    await stack.enter_async_context(planner)
            self._stack = stack.pop_all()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self._stack.aclose()

    @property
    def planners(self) -> tuple[Planner, ...]:
        """The planners asked, in order."""
        return self._planners

    async def plan(self, request: TaskRequest, capabilities: Mapping[str, Capability]) -> Plan:
        """The first plan a planner makes; the reasons of all when every one declines."""
        declined: list[str] = []
        for planner in self._planners:
            try:
                return await planner.plan(request, capabilities)
            except ValidationError as exc:
                if not request.goal or exc.field != "goal":
                    raise
                log.info("plan.declined", planner=type(planner).__name__, reason=exc.message)
                declined.append(exc.message)
        raise ValidationError("; ".join(declined), field="goal")

    async def draft(
        self, request: TaskRequest, capabilities: Mapping[str, Capability]
    ) -> PlanDraft:
        """As :meth:`plan`, with the draft of the first planner that plans (it may stream)."""
        declined: list[str] = []
        for planner in self._planners:
            try:
                return await draft_plan(planner, request, capabilities)
            except ValidationError as exc:
                if not request.goal or exc.field != "goal":
                    raise
                log.info("plan.declined", planner=type(planner).__name__, reason=exc.message)
                declined.append(exc.message)
        raise ValidationError("; ".join(declined), field="goal")


class LLMPlanner:
    """Plans goals with a model behind an OpenAI-compatible ``/chat/completions`` endpoint.

    Works with OpenAI, vLLM, Ollama and the llama.cpp server. The model sees the capabilities
    with their schemas and the reference syntax, and answers with a JSON plan; an invalid plan
    gets one repair round with the validation error. Use it as an async context manager: it
    holds one connection pool (one ``httpx.AsyncClient``) from entry to exit, for every plan.

    With ``stream=True``, :meth:`draft` asks for the plan as JSON lines over a streamed
    completion and hands over each step as soon as its line is complete and valid (see
    :mod:`~agentmesh.orchestrator.planning.stream`); a streamed plan gets no repair round,
    since its first steps may be running already.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str = "",
        *,
        timeout: float = 60.0,
        temperature: float = 0.0,
        limits: PlanLimits = PlanLimits(),  # noqa: B008 - frozen, so one shared default is safe
        stream: bool = False,
    ) -> None:
        self._url = base_url.rstrip("/") + "/chat/completions"
        self._stream = stream
        self._model = model
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._timeout = timeout
        self._temperature = temperature
        self._limits = limits
        self._client: httpx.AsyncClient | None = None

    async def __aenter__(self) -> Self:
        if self._client is not None:
            raise RuntimeError("an LLMPlanner can be entered only once at a time")
        self._client = httpx.AsyncClient(timeout=self._timeout)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection pool opened by ``async with``."""
        if self._client is not None:
            client, self._client = self._client, None
            await client.aclose()

    async def plan(self, request: TaskRequest, capabilities: Mapping[str, Capability]) -> Plan:
        """A validated plan for ``request.goal`` (a given ``plan`` is only validated).

        Raises ValidationError(field="goal") when the model's plan is still invalid after the
        repair round, :class:`~agentmesh.errors.AgentUnavailable` when the endpoint cannot be
        reached or fails, and :class:`~agentmesh.errors.FailedPrecondition` when it refuses
        the request (a wrong key or model name).
        """
        given = self._given_plan(request, capabilities)
        if given is not None:
            return given
        client = self._open_client()
        messages = [
            {"role": "system", "content": system_prompt(capabilities)},
            {"role": "user", "content": goal_prompt(request)},
        ]
        answer = await self._complete(client, messages)
        try:
            return self._accept(answer, capabilities)
        except ValidationError as exc:
            log.info("plan.llm_repair", model=self._model, error=str(exc))
            messages += [
                {"role": "assistant", "content": answer},
                {"role": "user", "content": repair_prompt(exc)},
            ]
        answer = await self._complete(client, messages)
        try:
            return self._accept(answer, capabilities)
        except ValidationError as exc:
            raise ValidationError(
                f"the model gave no valid plan after one repair: {exc}", field="goal"
            ) from None

    def _given_plan(
        self, request: TaskRequest, capabilities: Mapping[str, Capability]
    ) -> Plan | None:
        """The request's own plan, validated; None when there is a goal to plan."""
        _check_one_spec(request)
        if request.plan is not None:
            return validate_plan(request.plan, capabilities=capabilities, limits=self._limits)
        if request.workflow:
            raise ValidationError("the LLM planner knows no workflows", field="workflow")
        if not capabilities:
            raise ValidationError("no capabilities are registered to plan with", field="goal")
        return None

    def _open_client(self) -> httpx.AsyncClient:
        if self._client is None:
            raise RuntimeError("LLMPlanner used outside 'async with'")
        return self._client

    async def draft(
        self, request: TaskRequest, capabilities: Mapping[str, Capability]
    ) -> PlanDraft:
        """The plan's first valid step as soon as the model has streamed it, and the rest to
        come; the whole plan at once without ``stream``.

        Raises as :meth:`plan` does when the first step never comes or is invalid; a later
        invalid step ends ``rest`` with ValidationError(field="goal").
        """
        if not self._stream:
            return PlanDraft(await self.plan(request, capabilities))
        given = self._given_plan(request, capabilities)
        if given is not None:
            return PlanDraft(given)
        messages = [
            {"role": "system", "content": streaming_prompt(capabilities)},
            {"role": "user", "content": goal_prompt(request)},
        ]
        rest = self._streamed(self._open_client(), messages, capabilities)
        try:
            first = await anext(rest)
        except BaseException:
            await rest.aclose()
            raise
        if isinstance(first, Plan):  # cannot happen (finish needs a step), but stay complete
            await rest.aclose()
            return PlanDraft(first)
        return PlanDraft(Plan(steps=(first,)), rest)

    async def _streamed(
        self,
        client: httpx.AsyncClient,
        messages: list[dict[str, str]],
        capabilities: Mapping[str, Capability],
    ) -> AsyncGenerator[PlanPiece, None]:
        body = {
            "model": self._model,
            "messages": messages,
            "temperature": self._temperature,
            "stream": True,
        }
        steps = StepByStep(capabilities, self._limits)
        try:
            async with client.stream(
                "POST", self._url, json=body, headers=self._headers
            ) as response:
                if response.status_code >= 400:
                    await response.aread()
                    raise _refusal(response)
                async for piece in pieces(json_lines(_contents(response)), steps):
                    yield piece
        except httpx.TimeoutException:
            raise AgentUnavailable(
                f"planner endpoint {self._url} did not answer within {self._timeout}s"
            ) from None
        except httpx.TransportError as exc:
            raise AgentUnavailable(
                f"planner endpoint {self._url} is unreachable: {exc!r}"
            ) from None
        except ValidationError as exc:
            raise ValidationError(
                f"the model's streamed plan is invalid: {exc.field}: {exc.message}", field="goal"
            ) from None

    async def _complete(self, client: httpx.AsyncClient, messages: list[dict[str, str]]) -> str:
        body = {
            "model": self._model,
            "messages": messages,
            "temperature": self._temperature,
            "response_format": {"type": "json_object"},
        }
        try:
            response = await client.post(self._url, json=body, headers=self._headers)
        except httpx.TimeoutException:
            raise AgentUnavailable(
                f"planner endpoint {self._url} did not answer within {self._timeout}s"
            ) from None
        except httpx.TransportError as exc:
            raise AgentUnavailable(
                f"planner endpoint {self._url} is unreachable: {exc!r}"
            ) from None
        if response.status_code >= 400:
            raise _refusal(response)
        try:
            content = response.json()["choices"][0]["message"]["content"]
        except (ValueError, LookupError, TypeError):
            raise AgentUnavailable(
                f"planner endpoint answered no chat completion: {response.text[:300]}"
            ) from None
        return content if isinstance(content, str) else ""

    def _accept(self, answer: str, capabilities: Mapping[str, Capability]) -> Plan:
        data = json_object(answer)
        try:
            plan = Plan.model_validate(data)
        except pydantic.ValidationError as exc:
            raise ValidationError.from_pydantic(exc, field="plan") from None
        return validate_plan(plan, capabilities=capabilities, limits=self._limits)


def _refusal(response: httpx.Response) -> AgentMeshError:
    """The error a failed answer of the endpoint stands for."""
    if response.status_code == 429 or response.status_code >= 500:
        return AgentUnavailable(
            f"planner endpoint answered {response.status_code}: {response.text[:300]}"
        )
    return FailedPrecondition(
        f"planner endpoint refused the request with {response.status_code}: {response.text[:300]}"
    )


async def _contents(response: httpx.Response) -> AsyncIterator[str]:
    """The text of a chat completion as it arrives: the deltas of a server-sent event
    stream, or the whole content of a server that answered without streaming."""
    if not response.headers.get("content-type", "").startswith("text/event-stream"):
        await response.aread()
        try:
            content = response.json()["choices"][0]["message"]["content"]
        except (ValueError, LookupError, TypeError):
            raise AgentUnavailable(
                f"planner endpoint answered no chat completion: {response.text[:300]}"
            ) from None
        yield content if isinstance(content, str) else ""
        return
    async for line in response.aiter_lines():
        if not line.startswith("data:"):
            continue  # blank separators, comments, event names
        data = line[len("data:") :].strip()
        if data == "[DONE]":
            return
        try:
            delta = json.loads(data)["choices"][0].get("delta") or {}
        except (ValueError, LookupError, TypeError, AttributeError):
            raise AgentUnavailable(
                f"planner endpoint streamed no chat completion chunk: {data[:300]}"
            ) from None
        content = delta.get("content") if isinstance(delta, dict) else None
        if isinstance(content, str):
            yield content


def _check_one_spec(request: TaskRequest) -> None:
    given = [
        name
        for name, present in (
            ("plan", request.plan is not None),
            ("workflow", bool(request.workflow)),
            ("goal", bool(request.goal.strip())),
        )
        if present
    ]
    if not given:
        raise ValidationError("a task needs a plan, a workflow or a goal", field="spec")
    if len(given) > 1:
        raise ValidationError(f"give only one of {' and '.join(given)}", field="spec")
