"""Turning a task into a validated DAG of steps.

Workflow specs (YAML/JSON) and their catalog, goal → workflow selection, an LLM planner for
OpenAI-compatible endpoints, the ``${...}`` reference language of step inputs, ``for_each``
fan-out, and the checks every plan passes before it runs.
"""

from agentmesh.limits import PlanLimits
from agentmesh.orchestrator.planning.dag import dependencies, topological_order
from agentmesh.orchestrator.planning.fanout import (
    expand_for_each,
    for_each_items,
    instance_id,
    split_instance_id,
)
from agentmesh.orchestrator.planning.planner import (
    CatalogPlanner,
    ChainPlanner,
    LLMPlanner,
    Planner,
    catalog_of,
    default_planner,
    draft_plan,
)
from agentmesh.orchestrator.planning.prompts import system_prompt
from agentmesh.orchestrator.planning.references import (
    STEP_ID_PATTERN,
    Reference,
    bind_item,
    has_references,
    iter_references,
    lookup_path,
    parse,
    resolve,
    step_references,
)
from agentmesh.orchestrator.planning.similarity import Match, TfIdfIndex
from agentmesh.orchestrator.planning.stream import PlanDraft, PlanPiece, StreamingPlanner
from agentmesh.orchestrator.planning.validate import validate_plan
from agentmesh.orchestrator.planning.workflow import (
    Catalog,
    Workflow,
    load_workflow,
    parse_workflow,
)

__all__ = [
    "STEP_ID_PATTERN",
    "Catalog",
    "CatalogPlanner",
    "ChainPlanner",
    "LLMPlanner",
    "Match",
    "PlanDraft",
    "PlanLimits",
    "PlanPiece",
    "Planner",
    "Reference",
    "StreamingPlanner",
    "TfIdfIndex",
    "Workflow",
    "bind_item",
    "catalog_of",
    "default_planner",
    "dependencies",
    "draft_plan",
    "expand_for_each",
    "for_each_items",
    "has_references",
    "instance_id",
    "iter_references",
    "load_workflow",
    "lookup_path",
    "parse",
    "parse_workflow",
    "resolve",
    "split_instance_id",
    "step_references",
    "system_prompt",
    "topological_order",
    "validate_plan",
]
