"""The ``data`` agent: statistics of a CSV table (``data.profile``), and its rows filtered,
grouped and aggregated (``data.query``), with the standard library's ``csv`` and ``statistics``.

A cell is a number when ``float()`` reads it as a finite value, missing when it is blank; a
column is numeric when every cell that is not missing is a number. Bad input (a ragged row, an
unknown column, an aggregate of a text column) fails the assignment as ``invalid_input`` with
the offending field and the reason.
"""

from __future__ import annotations

import csv
import io
import math
import statistics
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Literal

from pydantic import BaseModel, Field

from agentmesh.agent import Agent, AssignmentContext, capability, run
from agentmesh.errors import StepFailed

#: The most rows one table may have: a bound on the work one assignment can ask for.
MAX_ROWS = 100_000
#: How many most frequent values a text column's profile lists.
TOP_VALUES = 5

Cell = float | str | None


class Table(BaseModel):
    """A CSV table with a header row."""

    csv: str = Field(min_length=1, description="CSV text; the first row names the columns")
    delimiter: str = Field(default=",", min_length=1, max_length=1)


class ColumnProfile(BaseModel):
    """What one column holds."""

    name: str
    kind: Literal["number", "text", "empty"]
    count: int = Field(description="cells that are not blank")
    missing: int
    distinct: int
    min: float | None = None
    max: float | None = None
    mean: float | None = None
    median: float | None = None
    stdev: float | None = None
    #: The most frequent values of a text column, most frequent first.
    top: list[str] = Field(default_factory=list)


class Profile(BaseModel):
    """The shape and statistics of a table."""

    rows: int
    columns: list[ColumnProfile]


class Filter(BaseModel):
    """Keep the rows whose ``column`` compares with ``value`` by ``op``."""

    column: str
    op: Literal["==", "!=", "<", "<=", ">", ">=", "contains"]
    value: float | str


class Aggregate(BaseModel):
    """One computed column of a query's output (``count`` needs no column)."""

    function: Literal["count", "sum", "mean", "median", "min", "max", "stdev"]
    column: str | None = None
    #: The output column's name; defaults to ``function_column``.
    name: str | None = None


class QueryIn(Table):
    """Filters, then a group-by with aggregates (or the filtered rows when none)."""

    filters: list[Filter] = Field(default_factory=list)
    group_by: list[str] = Field(default_factory=list)
    aggregates: list[Aggregate] = Field(default_factory=list)
    #: Sort the output by this output column, descending when it starts with ``-``.
    order_by: str | None = None
    limit: int = Field(default=1000, ge=1, le=MAX_ROWS)


class QueryOut(BaseModel):
    """The query's rows, each an object keyed by output column."""

    columns: list[str]
    rows: list[dict[str, float | str | None]]
    matched: int = Field(description="rows that passed the filters")


def _bad(field: str, reason: str) -> StepFailed:
    return StepFailed(f"{field}: {reason}", code="invalid_input", retryable=False)


def number(text: str) -> float | None:
    """``text`` as a finite number, or None."""
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


class Frame:
    """A parsed table: named columns of typed cells."""

    def __init__(self, header: list[str], rows: list[list[str]]) -> None:
        self.header = header
        self.numeric = {
            name: all(number(r[i]) is not None for r in rows if r[i].strip())
            and any(r[i].strip() for r in rows)
            for i, name in enumerate(header)
        }
        self.rows: list[dict[str, Cell]] = [
            {name: self._cell(name, raw) for name, raw in zip(header, row, strict=True)}
            for row in rows
        ]

    def _cell(self, name: str, raw: str) -> Cell:
        if not raw.strip():
            return None
        return number(raw) if self.numeric[name] else raw

    @classmethod
    def parse(cls, table: Table) -> Frame:
        """Read ``table``; a ragged row, a blank or repeated column name is refused."""
        reader = csv.reader(io.StringIO(table.csv), delimiter=table.delimiter)
        try:
            header = next(reader, None)
            if not header:
                raise _bad("csv", "there is no header row")
            names = [h.strip() for h in header]
            if any(not n for n in names):
                raise _bad("csv", f"column {names.index('') + 1} of the header has no name")
            if repeated := [n for n, c in Counter(names).items() if c > 1]:
                raise _bad("csv", f"the header names {repeated[0]!r} twice")
            rows: list[list[str]] = []
            for row in reader:
                if not row:
                    continue  # a blank line
                if len(row) != len(names):
                    raise _bad(
                        "csv",
                        f"line {reader.line_num} has {len(row)} fields, the header {len(names)}",
                    )
                rows.append(row)
                if len(rows) > MAX_ROWS:
                    raise _bad("csv", f"more than {MAX_ROWS} rows")
        except csv.Error as exc:
            raise _bad("csv", f"line {reader.line_num}: {exc}") from None
        return cls(names, rows)

    def column(self, field: str, name: str) -> str:
        """``name`` when the table has that column; a clear refusal naming ``field`` if not."""
        if name not in self.numeric:
            raise _bad(field, f"no column {name!r}; the columns are {', '.join(self.header)}")
        return name


def profile_column(frame: Frame, name: str) -> ColumnProfile:
    """Statistics of one column of ``frame``."""
    present = [row[name] for row in frame.rows if row[name] is not None]
    base = {
        "name": name,
        "count": len(present),
        "missing": len(frame.rows) - len(present),
        "distinct": len(set(present)),
    }
    if not present:
        return ColumnProfile(kind="empty", **base)
    if frame.numeric[name]:
        values = [float(v) for v in present if isinstance(v, float)]
        return ColumnProfile(
            kind="number",
            min=min(values),
            max=max(values),
            mean=statistics.fmean(values),
            median=statistics.median(values),
            stdev=statistics.stdev(values) if len(values) > 1 else None,
            **base,
        )
    top = [str(v) for v, _ in Counter(present).most_common(TOP_VALUES)]
    return ColumnProfile(kind="text", top=top, **base)


_COMPARE: dict[str, Callable[[float | str, float | str], bool]] = {
    "==": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
    "<": lambda a, b: a < b,  # type: ignore[operator]  # same kinds, checked before use
    "<=": lambda a, b: a <= b,  # type: ignore[operator]
    ">": lambda a, b: a > b,  # type: ignore[operator]
    ">=": lambda a, b: a >= b,  # type: ignore[operator]
    "contains": lambda a, b: str(b) in str(a),
}

_AGGREGATE: dict[str, Callable[[Sequence[float]], float]] = {
    "sum": math.fsum,
    "mean": statistics.fmean,
    "median": statistics.median,
    "min": min,
    "max": max,
    "stdev": statistics.stdev,
}


def _predicate(frame: Frame, index: int, spec: Filter) -> Callable[[dict[str, Cell]], bool]:
    field = f"filters.{index}"
    column = frame.column(f"{field}.column", spec.column)
    value: float | str = spec.value
    if frame.numeric[column] and spec.op != "contains":
        as_number = number(str(value))
        if as_number is None:
            raise _bad(f"{field}.value", f"column {column!r} holds numbers, {value!r} is none")
        value = as_number
    elif spec.op in ("<", "<=", ">", ">="):
        value = str(value)  # text compares with text, alphabetically
    compare = _COMPARE[spec.op]

    def keep(row: dict[str, Cell]) -> bool:
        cell = row[column]
        return cell is not None and compare(cell, value)

    return keep


def _aggregate(
    frame: Frame, index: int, spec: Aggregate
) -> tuple[str, Callable[[list[dict[str, Cell]]], float | None]]:
    field = f"aggregates.{index}"
    if spec.function == "count":
        if spec.column is None:
            return spec.name or "count", lambda rows: float(len(rows))
        counted = frame.column(f"{field}.column", spec.column)
        return spec.name or f"count_{counted}", lambda rows: float(
            sum(r[counted] is not None for r in rows)
        )
    if spec.column is None:
        raise _bad(f"{field}.column", f"{spec.function} needs a column")
    column = frame.column(f"{field}.column", spec.column)
    if not frame.numeric[column]:
        raise _bad(f"{field}.column", f"{spec.function} needs numbers; {column!r} holds text")
    reduce = _AGGREGATE[spec.function]
    least = {"sum": 0, "stdev": 2}.get(spec.function, 1)

    def compute(rows: list[dict[str, Cell]]) -> float | None:
        values = [float(v) for r in rows if isinstance(v := r[column], float)]
        return reduce(values) if len(values) >= least else None

    return spec.name or f"{spec.function}_{column}", compute


def query(data: QueryIn) -> QueryOut:
    """Run ``data``'s filters, group-by and aggregates on its table."""
    frame = Frame.parse(data)
    keep = [_predicate(frame, i, f) for i, f in enumerate(data.filters)]
    rows = [row for row in frame.rows if all(k(row) for k in keep)]
    keys = [frame.column(f"group_by.{i}", name) for i, name in enumerate(data.group_by)]
    computed = [_aggregate(frame, i, a) for i, a in enumerate(data.aggregates)]
    if keys or computed:
        groups: dict[tuple[Cell, ...], list[dict[str, Cell]]] = {}
        for row in rows:
            groups.setdefault(tuple(row[k] for k in keys), []).append(row)
        if not keys:
            groups = {(): rows}
        columns = keys + [name for name, _ in computed]
        if len(set(columns)) != len(columns):
            raise _bad("aggregates", "two output columns have the same name; set 'name'")
        out: list[dict[str, Cell]] = [
            {**dict(zip(keys, key, strict=True)), **{n: fn(members) for n, fn in computed}}
            for key, members in groups.items()
        ]
    else:
        columns, out = list(frame.header), rows
    if data.order_by:
        name = data.order_by.removeprefix("-")
        if name not in columns:
            raise _bad("order_by", f"no output column {name!r}; they are {', '.join(columns)}")
        # Blanks last; numbers before text so that a mixed column still sorts.
        out = sorted(out, key=lambda r: (r[name] is None, isinstance(r[name], str), r[name] or 0))
        if data.order_by.startswith("-"):
            present = [r for r in out if r[name] is not None][::-1]
            out = present + [r for r in out if r[name] is None]
    return QueryOut(columns=columns, rows=out[: data.limit], matched=len(rows))


class DataAgent(Agent):
    """Profiles and queries CSV tables."""

    name = "data"
    version = "1.0.0"
    max_concurrency = 4

    @capability("data.profile", tags=("example", "data"))
    async def profile(self, data: Table, ctx: AssignmentContext) -> Profile:
        """The number of rows and each column's kind and statistics."""
        frame = Frame.parse(data)
        await ctx.progress(0.5, f"read {len(frame.rows)} rows of {len(frame.header)} columns")
        return Profile(
            rows=len(frame.rows), columns=[profile_column(frame, n) for n in frame.header]
        )

    @capability("data.query", tags=("example", "data"))
    async def query(self, data: QueryIn, ctx: AssignmentContext) -> QueryOut:
        """Filter a table's rows, group them and aggregate each group."""
        result = query(data)
        await ctx.progress(0.9, f"{result.matched} rows matched, {len(result.rows)} out")
        return result


def main() -> None:
    """Serve the data agent until SIGTERM."""
    run(DataAgent())


if __name__ == "__main__":  # pragma: no cover - exercised as a subprocess
    main()
