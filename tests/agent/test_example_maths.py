"""The maths agent: exact answers, symbolic work, and expressions that are refused unrun."""

from __future__ import annotations

import pytest

from agentmesh.agent import AssignmentContext
from agentmesh.agent.work import Assignment
from agentmesh.errors import StepFailed
from agentmesh.examples.maths import ComputeIn, MathsAgent


def _ctx() -> AssignmentContext:
    return AssignmentContext.of(Assignment(assignment_id="a", capability="c"), lambda f, m: None)


async def _compute(**payload: object) -> dict[str, object]:
    out = await MathsAgent().compute(ComputeIn.model_validate(payload), _ctx())
    return out.model_dump()


@pytest.mark.parametrize(
    ("payload", "result"),
    [
        ({"expression": "0.1 + 0.2"}, "3/10"),
        ({"expression": "1/3 + 1/6"}, "1/2"),
        ({"expression": "2**100"}, "1267650600228229401496703205376"),
        ({"expression": "2^10 % 7"}, "2"),
        ({"expression": "sqrt(8)"}, "2*sqrt(2)"),
        ({"expression": "factorial(20) / factorial(18)"}, "380"),
        ({"expression": "sin(x)**2 + cos(x)**2", "operation": "simplify"}, "1"),
        ({"expression": "(x + 1)**2", "operation": "expand"}, "x**2 + 2*x + 1"),
        ({"expression": "x**2 - 1", "operation": "factor"}, "(x - 1)*(x + 1)"),
        ({"expression": "x**3", "operation": "differentiate"}, "3*x**2"),
        ({"expression": "x*y", "operation": "differentiate", "variable": "y"}, "x"),
        ({"expression": "x", "operation": "integrate", "lower": "0", "upper": "2"}, "2"),
        ({"expression": "x**2 = 4", "operation": "solve"}, "{-2, 2}"),
    ],
)
async def test_answers_are_exact(payload: dict[str, object], result: str) -> None:
    assert (await _compute(**payload))["result"] == result


async def test_a_number_comes_with_its_decimal_value_and_latex() -> None:
    out = await _compute(expression="pi * 2", digits=5)

    assert out["result"] == "2*pi"
    assert out["numeric"] == "6.2832"
    assert out["latex"] == "2 \\pi"


async def test_solutions_are_listed() -> None:
    out = await _compute(expression="x**2 - 5*x + 6", operation="solve")

    assert out["solutions"] == ["2", "3"]


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({"expression": "().__class__"}, "dunder names are not allowed"),
        ({"expression": "x.real"}, "attribute access is not allowed (at column 1)"),
        ({"expression": "_secret + 1"}, "the name '_secret' is not allowed"),
        ({"expression": "open('f')"}, "open is not a known function"),
        ({"expression": "'text'"}, "'text' is not a number"),
        ({"expression": "[1, 2][0]"}, "Subscript is not part of the expression language"),
        ({"expression": "lambda: 1"}, "Lambda is not part of the expression language"),
        ({"expression": "sqrt(*[4])"}, "Starred is not part of the expression language"),
        ({"expression": "2 +"}, "not an expression: invalid syntax"),
        ({"expression": "1/0"}, "division by zero"),
        ({"expression": "9**9**9"}, "exponents above 10000 are not computed exactly"),
        ({"expression": "factorial(10**6)"}, "factorials above 10000 are not computed"),
        ({"expression": "sin + 1"}, "sin is a function: call it"),
        ({"expression": "x = 1 = 2", "operation": "solve"}, "more than one '='"),
        ({"expression": "x = 1"}, "an equation can only be solved"),
        (
            {"expression": "x*y", "operation": "differentiate"},
            "say which variable; the expression's symbols are x, y",
        ),
        ({"expression": "x", "operation": "integrate", "lower": "0"}, "give both bounds"),
    ],
)
async def test_bad_expressions_are_refused_with_the_reason(
    payload: dict[str, object], message: str
) -> None:
    with pytest.raises(StepFailed) as caught:
        await _compute(**payload)

    assert caught.value.failure_code == "invalid_input"
    assert message in caught.value.message
    assert not caught.value.retryable
