"""The data agent: profiles, filters and group-bys of CSV tables, and clear refusals."""

from __future__ import annotations

import pytest

from agentmesh.agent import AssignmentContext
from agentmesh.agent.work import Assignment
from agentmesh.errors import StepFailed
from agentmesh.examples.data import DataAgent, QueryIn, Table, query

SALES = """region,product,units,price
north,apples,10,1.5
south,apples,4,1.5
north,pears,6,2.0
east,pears,,2.0
south,plums,8,3.25
"""


def _ctx() -> AssignmentContext:
    return AssignmentContext.of(Assignment(assignment_id="a", capability="c"), lambda f, m: None)


async def test_a_profile_types_each_column_and_counts_what_is_missing() -> None:
    profile = await DataAgent().profile(Table(csv=SALES), _ctx())

    assert profile.rows == 5
    columns = {c.name: c for c in profile.columns}
    assert columns["region"].kind == "text"
    assert columns["region"].top[0] in ("north", "south")
    assert columns["region"].distinct == 3
    units = columns["units"]
    assert (units.kind, units.count, units.missing) == ("number", 4, 1)
    assert (units.min, units.max, units.mean, units.median) == (4, 10, 7, 7)
    assert units.stdev == pytest.approx(2.5819889)


def test_filters_keep_matching_rows_in_order() -> None:
    out = query(
        QueryIn(
            csv=SALES,
            filters=[
                {"column": "price", "op": "<", "value": 3},
                {"column": "units", "op": ">=", "value": "6"},
            ],
        )
    )

    assert out.matched == 2
    assert [r["product"] for r in out.rows] == ["apples", "pears"]
    assert out.columns == ["region", "product", "units", "price"]


def test_a_group_by_aggregates_each_group_and_sorts() -> None:
    out = query(
        QueryIn(
            csv=SALES,
            group_by=["region"],
            aggregates=[
                {"function": "sum", "column": "units"},
                {"function": "count"},
                {"function": "mean", "column": "price", "name": "avg_price"},
            ],
            order_by="-sum_units",
        )
    )

    assert out.columns == ["region", "sum_units", "count", "avg_price"]
    assert out.rows == [
        {"region": "north", "sum_units": 16, "count": 2, "avg_price": 1.75},
        {"region": "south", "sum_units": 12, "count": 2, "avg_price": 2.375},
        {"region": "east", "sum_units": 0, "count": 1, "avg_price": 2.0},
    ]


def test_contains_matches_text_and_aggregates_without_group_cover_every_row() -> None:
    out = query(
        QueryIn(
            csv=SALES,
            filters=[{"column": "product", "op": "contains", "value": "plu"}],
            aggregates=[
                {"function": "max", "column": "units"},
                {"function": "stdev", "column": "units"},
            ],
        )
    )

    assert out.rows == [{"max_units": 8, "stdev_units": None}]


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({"csv": "a,b\n1,2,3\n"}, "csv: line 2 has 3 fields, the header 2"),
        ({"csv": "a,a\n1,2\n"}, "csv: the header names 'a' twice"),
        ({"csv": "a,\n1,2\n"}, "csv: column 2 of the header has no name"),
        (
            {"csv": SALES, "filters": [{"column": "colour", "op": "==", "value": "red"}]},
            "filters.0.column: no column 'colour'; the columns are region, product, units, price",
        ),
        (
            {"csv": SALES, "filters": [{"column": "units", "op": ">", "value": "many"}]},
            "filters.0.value: column 'units' holds numbers, 'many' is none",
        ),
        (
            {"csv": SALES, "aggregates": [{"function": "sum", "column": "region"}]},
            "aggregates.0.column: sum needs numbers; 'region' holds text",
        ),
        (
            {"csv": SALES, "aggregates": [{"function": "mean"}]},
            "aggregates.0.column: mean needs a column",
        ),
        ({"csv": SALES, "group_by": ["nope"]}, "group_by.0: no column 'nope'"),
        (
            {"csv": SALES, "order_by": "units", "group_by": ["region"]},
            "order_by: no output column 'units'",
        ),
    ],
)
async def test_bad_input_fails_naming_the_field_and_the_reason(
    payload: dict[str, object], message: str
) -> None:
    with pytest.raises(StepFailed) as caught:
        await DataAgent().query(QueryIn.model_validate(payload), _ctx())

    assert caught.value.failure_code == "invalid_input"
    assert not caught.value.retryable
    assert message in caught.value.message
