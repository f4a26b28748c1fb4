"""Turning a task request into a validated plan.

:class:`Planner` is the one interface the engine needs. :class:`CatalogPlanner` answers from
workflows, :class:`LLMPlanner` asks a model behind an OpenAI-compatible endpoint, and
:class:`ChainPlanner` tries several in turn. Delegating to an agent that offers a ``plan``
capability is one more :class:`Planner`, built where assignments can be sent (the engine).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Mapping, Sequence
from types import TracebackType
from typing import Any, Final, Protocol, Self, runtime_checkable

import httpx
import pydantic
import structlog

from agentmesh.config import Settings
from agentmesh.errors import AgentUnavailable, FailedPrecondition, ValidationError
from agentmesh.limits import PlanLimits
from agentmesh.models import JSON, Capability, Plan, TaskRequest
from agentmesh.orchestrator.planning.similarity import Match, TfIdfIndex
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


def catalog_of(settings: Settings) -> Catalog:
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
    planners: list[Planner] = [CatalogPlanner(catalog_of(settings))]
    if delegate is not None:
        planners.append(delegate)
    if settings.llm_base_url:
        planners.append(
            LLMPlanner(
                settings.llm_base_url,
                settings.llm_model,
                settings.llm_api_key,
                timeout=settings.llm_timeout_seconds,
            )
        )
    return planners[0] if len(planners) == 1 else ChainPlanner(planners)


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
    the model for goals no workflow fits. Every other error is final.
    """

    def __init__(self, planners: Sequence[Planner]) -> None:
        if not planners:
            raise ValueError("ChainPlanner needs at least one planner")
        self._planners = tuple(planners)

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


class LLMPlanner:
    """Plans goals with a model behind an OpenAI-compatible ``/chat/completions`` endpoint.

    Works with OpenAI, vLLM, Ollama and the llama.cpp server. The model sees the capabilities
    with their schemas and the reference syntax, and answers with a JSON plan; an invalid plan
    gets one repair round with the validation error. Use it as an async context manager to
    keep one connection pool; otherwise each :meth:`plan` opens its own.
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
    ) -> None:
        self._url = base_url.rstrip("/") + "/chat/completions"
        self._model = model
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._timeout = timeout
        self._temperature = temperature
        self._limits = limits
        self._client: httpx.AsyncClient | None = None

    async def __aenter__(self) -> Self:
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
        _check_one_spec(request)
        if request.plan is not None:
            return validate_plan(request.plan, capabilities=capabilities, limits=self._limits)
        if request.workflow:
            raise ValidationError("the LLM planner knows no workflows", field="workflow")
        if not capabilities:
            raise ValidationError("no capabilities are registered to plan with", field="goal")
        messages = [
            {"role": "system", "content": system_prompt(capabilities)},
            {"role": "user", "content": _goal_prompt(request)},
        ]
        async with self._session() as client:
            answer = await self._complete(client, messages)
            try:
                return self._accept(answer, capabilities)
            except ValidationError as exc:
                log.info("plan.llm_repair", model=self._model, error=str(exc))
                messages += [
                    {"role": "assistant", "content": answer},
                    {"role": "user", "content": _repair_prompt(exc)},
                ]
            answer = await self._complete(client, messages)
            try:
                return self._accept(answer, capabilities)
            except ValidationError as exc:
                raise ValidationError(
                    f"the model gave no valid plan after one repair: {exc}", field="goal"
                ) from None

    @contextlib.asynccontextmanager
    async def _session(self) -> AsyncIterator[httpx.AsyncClient]:
        if self._client is not None:
            yield self._client
            return
        async with httpx.AsyncClient(timeout=self._timeout) as client:
            yield client

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
        if response.status_code == 429 or response.status_code >= 500:
            raise AgentUnavailable(
                f"planner endpoint answered {response.status_code}: {response.text[:300]}"
            )
        if response.status_code >= 400:
            raise FailedPrecondition(
                f"planner endpoint refused the request with {response.status_code}:"
                f" {response.text[:300]}"
            )
        try:
            content = response.json()["choices"][0]["message"]["content"]
        except (ValueError, LookupError, TypeError):
            raise AgentUnavailable(
                f"planner endpoint answered no chat completion: {response.text[:300]}"
            ) from None
        return content if isinstance(content, str) else ""

    def _accept(self, answer: str, capabilities: Mapping[str, Capability]) -> Plan:
        data = _json_object(answer)
        try:
            plan = Plan.model_validate(data)
        except pydantic.ValidationError as exc:
            raise ValidationError.from_pydantic(exc, field="plan") from None
        return validate_plan(plan, capabilities=capabilities, limits=self._limits)


def system_prompt(capabilities: Mapping[str, Capability]) -> str:
    """What the model is told: the plan format, the reference syntax, the capabilities."""
    listed = [
        {
            "name": c.name,
            "version": c.version,
            "description": c.description,
            "input_schema": c.input_schema,
            "output_schema": c.output_schema,
        }
        for c in sorted(capabilities.values(), key=lambda c: c.name)
    ]
    return _SYSTEM.replace("{capabilities}", json.dumps(listed, indent=1, ensure_ascii=False))


_SYSTEM: Final = """\
You plan work for agentmesh, a mesh of AI agents. Turn the user's goal into a plan: a DAG
of steps, each run by an agent that offers the step's capability.

Answer with one JSON object and nothing else, shaped like:
{"steps": [{"id": "fetch", "capability": "NAME", "input": {...}},
           {"id": "next", "capability": "NAME", "input": {"x": "${steps.fetch.output.x}"}}],
 "aggregate": {"strategy": "pick", "step": "next"}}

Rules:
- "id": a letter, then up to 63 letters, digits, "_" or "-"; unique in the plan.
- "capability": one of the capabilities listed below; "input" must fit its input_schema.
- A value in "input" may be a reference, filled in when the step runs:
  "${input.KEY}" is a value of the task input shown by the user;
  "${steps.ID.output}" or "${steps.ID.output.FIELD}" is an output of step ID (see the
  capability's output_schema; numbers index lists, as in "${steps.ID.output.items.0}").
  A string that is exactly one reference becomes the referenced value, of any type; inside
  longer text it is inserted as text. Write "$$" for a literal "$".
- A step runs after every step it references; "needs": ["ID"] adds more such dependencies.
  No cycles.
- "for_each": "${steps.ID.output.LIST}" runs the step once per element of that list; in its
  input "${item}" is the element and "${index}" its position. A later reference to
  "${steps.THIS.output}" is the list of all those outputs.
- Optional step fields: "optional": true (its failure is skipped), "timeout_seconds",
  "compensation": "CAPABILITY" (undoes the step if the task fails later).
- "aggregate" (optional) makes the task result: {"strategy": "pick", "step": "ID"} for one
  step's output; "collect" (every output by step id, the default), "merge", "concat"
  (with "field"), "vote" (with "field"), "best" (with "field" and "order": "max" or "min").
- Use as few steps as the goal needs.

Capabilities:
{capabilities}
"""

_PREVIEW_TEXT: Final = 200
_PREVIEW_ITEMS: Final = 10
_PREVIEW_DEPTH: Final = 6


def _goal_prompt(request: TaskRequest) -> str:
    shown = json.dumps(_preview(request.input, 0), indent=1, ensure_ascii=False)
    return (
        f"Goal: {request.goal}\n\n"
        f"Task input (long values shortened; reference it as ${{input.KEY}}):\n{shown}"
    )


def _preview(value: JSON, depth: int) -> JSON:
    # The model needs the input's shape, not all of it: the plan references it.
    if isinstance(value, str):
        return value if len(value) <= _PREVIEW_TEXT else value[:_PREVIEW_TEXT] + "..."
    if depth >= _PREVIEW_DEPTH and isinstance(value, dict | list):
        return "..."
    if isinstance(value, dict):
        return {key: _preview(item, depth + 1) for key, item in value.items()}
    if isinstance(value, list):
        shown = [_preview(item, depth + 1) for item in value[:_PREVIEW_ITEMS]]
        return shown + (
            [f"... {len(value) - _PREVIEW_ITEMS} more"] if len(value) > _PREVIEW_ITEMS else []
        )
    return value


def _repair_prompt(error: ValidationError) -> str:
    return (
        f"That plan was rejected: {error}\n"
        "Answer with the corrected plan, as one JSON object and nothing else."
    )


def _json_object(answer: str) -> dict[str, Any]:
    text = answer.strip()
    # Some servers ignore response_format and wrap the JSON in a Markdown code fence.
    if text.startswith("```"):
        text = text.split("\n", 1)[1] if "\n" in text else ""
        text = text.rsplit("```", 1)[0]
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValidationError(f"the answer is not JSON: {exc}", field="plan") from None
    if isinstance(data, dict) and "steps" not in data and isinstance(data.get("plan"), dict):
        data = data["plan"]
    if not isinstance(data, dict):
        raise ValidationError("the answer is not a JSON object", field="plan")
    return data


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
