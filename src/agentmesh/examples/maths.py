"""The ``maths`` agent: exact arithmetic and symbolic algebra with SymPy (``math.compute``).

Expressions are never evaluated as Python. The text is parsed by :mod:`ast` and the tree is
checked node by node and built into a SymPy expression here: numbers (decimals become exact
fractions, ``0.1`` is ``1/10``), the four operations, ``**`` (or ``^``), ``%``, names of a
fixed set of functions and constants, and symbols. Anything else (attribute access, dunder
or underscore names, subscripts, keywords, lambdas, strings) is refused with the position
and the reason. Explicit syntax only: ``2*x``, not ``2x``.
"""

from __future__ import annotations

import ast
import asyncio
import re
from collections.abc import Callable
from typing import Any, Literal

import sympy
from pydantic import BaseModel, Field

from agentmesh.agent import Agent, AssignmentContext, capability, run
from agentmesh.errors import StepFailed

#: Longest expression accepted.
MAX_LENGTH = 2000
#: Largest integer exponent, and largest factorial argument, computed exactly: bigger ones
#: would keep the agent busy for minutes (``9**9**9`` has 370 million digits).
MAX_EXPONENT = 10_000
#: How long one computation may run before the assignment fails as ``timeout``.
TIME_LIMIT_SECONDS = 20.0
_SYMBOL = re.compile(r"^[A-Za-z][A-Za-z0-9]*$")


def _functions() -> dict[str, Callable[..., Any]]:
    s = sympy
    return {
        "sqrt": s.sqrt,
        "exp": s.exp,
        "log": s.log,
        "ln": s.log,
        "sin": s.sin,
        "cos": s.cos,
        "tan": s.tan,
        "asin": s.asin,
        "acos": s.acos,
        "atan": s.atan,
        "sinh": s.sinh,
        "cosh": s.cosh,
        "tanh": s.tanh,
        "abs": s.Abs,
        "floor": s.floor,
        "ceiling": s.ceiling,
        "factorial": s.factorial,
        "binomial": s.binomial,
        "gcd": s.gcd,
        "lcm": s.lcm,
        "min": s.Min,
        "max": s.Max,
    }


def _constants() -> dict[str, Any]:
    return {"pi": sympy.pi, "e": sympy.E, "E": sympy.E, "I": sympy.I, "oo": sympy.oo}


class MathError(ValueError):
    """An expression the agent refuses, and why."""


class _Builder:
    """Turns a checked :mod:`ast` tree into a SymPy expression."""

    def __init__(self, field: str) -> None:
        self.field = field
        self.functions = _functions()
        self.constants = _constants()

    def fail(self, node: ast.AST, reason: str) -> MathError:
        column = getattr(node, "col_offset", 0) + 1
        return MathError(f"{self.field}: {reason} (at column {column})")

    def build(self, node: ast.AST) -> Any:
        if isinstance(node, ast.Expression):
            return self.build(node.body)
        if isinstance(node, ast.Constant):
            if isinstance(node.value, bool) or not isinstance(node.value, int | float):
                raise self.fail(node, f"{node.value!r} is not a number")
            # repr of the float is what was written (shortest round-trip): exact as a fraction.
            return (
                sympy.Integer(node.value)
                if isinstance(node.value, int)
                else sympy.Rational(repr(node.value))
            )
        if isinstance(node, ast.Name):
            return self.name(node)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
            value = self.build(node.operand)
            return -value if isinstance(node.op, ast.USub) else value
        if isinstance(node, ast.BinOp):
            return self.binary(node)
        if isinstance(node, ast.Call):
            return self.call(node)
        if isinstance(node, ast.Attribute):
            raise self.fail(node, "attribute access is not allowed")
        raise self.fail(node, f"{type(node).__name__} is not part of the expression language")

    def name(self, node: ast.Name) -> Any:
        if node.id in self.constants:
            return self.constants[node.id]
        if node.id in self.functions:
            raise self.fail(node, f"{node.id} is a function: call it, e.g. {node.id}(x)")
        if not _SYMBOL.match(node.id):
            raise self.fail(node, f"the name {node.id!r} is not allowed (letters and digits only)")
        return sympy.Symbol(node.id)

    def binary(self, node: ast.BinOp) -> Any:
        left, right = self.build(node.left), self.build(node.right)
        op = node.op
        if isinstance(op, ast.Pow | ast.BitXor):
            if right.is_Integer and abs(int(right)) > MAX_EXPONENT and left.is_number:
                raise self.fail(node, f"exponents above {MAX_EXPONENT} are not computed exactly")
            return left**right
        if isinstance(op, ast.Add):
            return left + right
        if isinstance(op, ast.Sub):
            return left - right
        if isinstance(op, ast.Mult):
            return left * right
        if isinstance(op, ast.Div):
            if right == 0:
                raise self.fail(node, "division by zero")
            return left / right
        if isinstance(op, ast.Mod):
            return sympy.Mod(left, right)
        raise self.fail(node, f"the operator {type(op).__name__} is not supported")

    def call(self, node: ast.Call) -> Any:
        if not isinstance(node.func, ast.Name) or node.func.id not in self.functions:
            what = node.func.id if isinstance(node.func, ast.Name) else "that"
            raise self.fail(
                node, f"{what} is not a known function; known: {', '.join(self.functions)}"
            )
        if node.keywords:
            raise self.fail(node, "keyword arguments are not allowed")
        args = [self.build(a) for a in node.args]
        if node.func.id == "factorial" and args and args[0].is_Integer and args[0] > MAX_EXPONENT:
            raise self.fail(node, f"factorials above {MAX_EXPONENT} are not computed")
        try:
            return self.functions[node.func.id](*args)
        except TypeError as exc:
            raise self.fail(node, f"{node.func.id}: {exc}") from None


def parse(text: str, field: str = "expression") -> Any:
    """``text`` as a SymPy expression (or an ``Eq`` for ``a = b``), never evaluated as code."""
    if len(text) > MAX_LENGTH:
        raise MathError(f"{field}: longer than {MAX_LENGTH} characters")
    if "__" in text:
        raise MathError(f"{field}: dunder names are not allowed")
    # "^" is a power, as in maths, with the precedence of "**" (Python's "^" binds loosest).
    text = text.replace("^", "**")
    sides = re.split(r"(?<![=<>!])==?(?!=)", text)
    if len(sides) > 2:
        raise MathError(f"{field}: more than one '=' in an equation")
    built = []
    for side in sides:
        try:
            tree = ast.parse(side.strip(), mode="eval")
        except SyntaxError as exc:
            raise MathError(
                f"{field}: not an expression: {exc.msg} (at column {exc.offset})"
            ) from None
        built.append(_Builder(field).build(tree))
    return sympy.Eq(built[0], built[1]) if len(built) == 2 else built[0]


class ComputeIn(BaseModel):
    """An expression and what to do with it."""

    expression: str = Field(min_length=1, max_length=MAX_LENGTH)
    operation: Literal[
        "evaluate", "simplify", "expand", "factor", "differentiate", "integrate", "solve"
    ] = "evaluate"
    #: The variable to differentiate, integrate or solve for (default: the only free symbol).
    variable: str | None = None
    #: Bounds of a definite integral.
    lower: str | None = None
    upper: str | None = None
    #: Significant digits of the numeric value.
    digits: int = Field(default=15, ge=1, le=1000)


class ComputeOut(BaseModel):
    """The exact result, its LaTeX, and a decimal value when it is a number."""

    result: str
    latex: str
    numeric: str | None = None
    #: For ``solve``: each solution.
    solutions: list[str] = Field(default_factory=list)


def _variable(expr: Any, name: str | None) -> Any:
    if name is not None:
        if not _SYMBOL.match(name):
            raise MathError(f"variable: {name!r} is not a name (letters and digits only)")
        return sympy.Symbol(name)
    free = sorted(expr.free_symbols, key=str)
    if len(free) != 1:
        listed = ", ".join(map(str, free)) or "none"
        raise MathError(f"variable: say which variable; the expression's symbols are {listed}")
    return free[0]


def compute(data: ComputeIn) -> ComputeOut:
    """Carry out ``data.operation`` on ``data.expression``."""
    expr = parse(data.expression)
    is_equation = isinstance(expr, sympy.Equality)
    if is_equation and data.operation != "solve":
        raise MathError(f"expression: an equation can only be solved, not {data.operation}d")
    solutions: list[str] = []
    op = data.operation
    if op == "evaluate":
        result = expr.doit()
    elif op == "simplify":
        result = sympy.simplify(expr)
    elif op == "expand":
        result = sympy.expand(expr)
    elif op == "factor":
        result = sympy.factor(expr)
    elif op == "differentiate":
        result = sympy.diff(expr, _variable(expr, data.variable))
    elif op == "integrate":
        var = _variable(expr, data.variable)
        if (data.lower is None) != (data.upper is None):
            raise MathError("lower: give both bounds of a definite integral, or neither")
        if data.lower is not None and data.upper is not None:
            result = sympy.integrate(
                expr, (var, parse(data.lower, "lower"), parse(data.upper, "upper"))
            )
        else:
            result = sympy.integrate(expr, var)
    else:
        found = sympy.solve(
            expr, _variable(expr.lhs - expr.rhs if is_equation else expr, data.variable)
        )
        solutions = [str(s) for s in found]
        result = sympy.FiniteSet(*found) if isinstance(found, list) else found
    numeric = None
    if getattr(result, "is_number", False) and result.is_finite:
        numeric = str(sympy.N(result, data.digits))
    return ComputeOut(
        result=str(result), latex=sympy.latex(result), numeric=numeric, solutions=solutions
    )


class MathsAgent(Agent):
    """Exact and symbolic mathematics."""

    name = "maths"
    version = "1.0.0"
    max_concurrency = 2

    @capability("math.compute", tags=("example", "maths"))
    async def compute(self, data: ComputeIn, ctx: AssignmentContext) -> ComputeOut:
        """Evaluate, simplify, expand, factor, differentiate, integrate or solve exactly."""
        await ctx.progress(0.1, f"{data.operation} {data.expression[:80]}")
        try:
            # A thread keeps the Session answering while SymPy works; it cannot be stopped
            # early, so a computation past the limit fails the assignment but runs to its end.
            async with asyncio.timeout(TIME_LIMIT_SECONDS):
                return await asyncio.to_thread(compute, data)
        except MathError as exc:
            raise StepFailed(str(exc), code="invalid_input", retryable=False) from None
        except TimeoutError:
            raise StepFailed(
                f"{data.operation} took longer than {TIME_LIMIT_SECONDS}s",
                code="timeout",
                retryable=False,
            ) from None
        except (ValueError, TypeError, NotImplementedError, ZeroDivisionError) as exc:
            raise StepFailed(
                f"expression: sympy cannot {data.operation} it: {exc}",
                code="invalid_input",
                retryable=False,
            ) from None


def main() -> None:
    """Serve the maths agent until SIGTERM."""
    run(MathsAgent())


if __name__ == "__main__":  # pragma: no cover - exercised as a subprocess
    main()
