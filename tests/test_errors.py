"""The status code ⇄ error class mapping: what the server's interceptor sends, a client recovers."""

from __future__ import annotations

import grpc
import pytest

from agentmesh import errors
from agentmesh.errors import (
    AgentMeshError,
    AgentUnavailable,
    NotFound,
    Unavailable,
    ValidationError,
    error_from_status,
)

_CLASSES = [
    errors.ValidationError,
    errors.NotFound,
    errors.AlreadyExists,
    errors.Unauthenticated,
    errors.PermissionDenied,
    errors.FailedPrecondition,
    errors.Unavailable,
    errors.DeadlineExceeded,
    errors.ResourceExhausted,
    errors.OutOfRange,
    errors.Cancelled,
]


@pytest.mark.parametrize("cls", _CLASSES, ids=lambda c: c.__name__)
def test_each_error_comes_back_from_its_status_as_the_same_class(cls: type[AgentMeshError]) -> None:
    sent = cls("no such thing", field="task_id")
    back = error_from_status(sent.code, str(sent), field=sent.field)
    assert type(back) is cls
    assert (back.code, back.field, back.message, str(back)) == (
        sent.code,
        "task_id",
        "no such thing",
        str(sent),
    )


def test_a_message_that_looks_like_a_field_is_left_whole_without_one() -> None:
    back = error_from_status(grpc.StatusCode.NOT_FOUND, "plan: not a field")
    assert isinstance(back, NotFound)
    assert (back.field, back.message) == (None, "plan: not a field")


def test_a_field_whose_name_holds_a_colon_is_recovered_exactly() -> None:
    sent = ValidationError("is not a string", field='input["a: b"]')
    back = error_from_status(sent.code, str(sent), field=sent.field)
    assert (back.field, back.message) == ('input["a: b"]', "is not a string")


def test_an_agent_that_is_unavailable_is_an_unavailable_error() -> None:
    assert issubclass(AgentUnavailable, Unavailable)
    assert AgentUnavailable.code is Unavailable.code is grpc.StatusCode.UNAVAILABLE


@pytest.mark.parametrize(
    "code", [grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN, grpc.StatusCode.ABORTED]
)
def test_a_code_no_class_claims_is_a_root_error_carrying_the_code(code: grpc.StatusCode) -> None:
    back = error_from_status(code, "")
    assert type(back) is AgentMeshError
    assert back.code is code
    assert back.message == code.name.lower()
