"""Catalog workflows ⇄ protobuf, for ``ListWorkflows``."""

from __future__ import annotations

from agentmesh._proto.agentmesh.v1 import orchestrator_pb2 as pb
from agentmesh.models import WorkflowInfo
from agentmesh.wire.cards import from_struct
from agentmesh.wire.tasks import plan_from_proto, plan_to_proto


def workflow_to_proto(workflow: WorkflowInfo) -> pb.Workflow:
    """A workflow on the wire."""
    message = pb.Workflow(name=workflow.name, description=workflow.description)
    if workflow.input_schema is not None:
        message.input_schema.update(workflow.input_schema)
    message.plan.CopyFrom(plan_to_proto(workflow.plan))
    return message


def workflow_from_proto(message: pb.Workflow) -> WorkflowInfo:
    """A wire workflow as a domain object."""
    return WorkflowInfo(
        name=message.name,
        description=message.description,
        input_schema=from_struct(message.input_schema)
        if message.HasField("input_schema")
        else None,
        plan=plan_from_proto(message.plan),
    )
