"""Measurements and how they are printed: each against a baseline measured in the same run."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Measurement:
    """One number a benchmark produced, its baseline, their ratio and the target it is held to."""

    benchmark: str
    metric: str
    value: float
    unit: str
    baseline: float | None = None
    baseline_name: str = ""
    #: The target in words, e.g. "<= 1.10" (checked by ``ok``).
    target: str = ""
    ok: bool | None = None
    #: The orchestrator's database ("sqlite" or "postgresql"), filled in by the runner.
    database: str = ""

    @property
    def ratio(self) -> float | None:
        """value / baseline, when there is a baseline."""
        if self.baseline is None or self.baseline == 0:
            return None
        return self.value / self.baseline

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready view (with the ratio)."""
        return {**asdict(self), "ratio": self.ratio}


def share(benchmark: str, metric: str, good: int, total: int) -> Measurement:
    """``good`` out of ``total`` as a percentage that must be 100."""
    value = 100 * good / total if total else 0.0
    return Measurement(benchmark, metric, value, "%", target="= 100%", ok=good == total)


def percentile(values: Sequence[float], p: float) -> float:
    """The ``p``-th percentile (0-100) by nearest rank; NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def median(values: Sequence[float]) -> float:
    """The median; NaN for no values."""
    return statistics.median(values) if values else math.nan


def _number(value: float | None, unit: str = "") -> str:
    if value is None or math.isnan(value):
        return "-"
    text = f"{value:.0f}" if abs(value) >= 100 else f"{value:.3g}"
    return f"{text} {unit}".strip()


def _verdict(ok: bool | None) -> str:
    return {True: "yes", False: "NO", None: ""}[ok]


def line(m: Measurement) -> str:
    """One measurement as a line of console output."""
    text = f"  {m.metric:<42} {_number(m.value, m.unit):>12}"
    if m.baseline is not None:
        text += f"   {m.baseline_name} {_number(m.baseline, m.unit)}  ratio {_number(m.ratio)}"
    if m.target:
        text += f"   target {m.target}: {_verdict(m.ok)}"
    return text


def markdown(measurements: Sequence[Measurement]) -> str:
    """Every measurement as a Markdown table."""
    rows = [
        "| benchmark | metric | value | baseline | ratio | target | met |",
        "| --- | --- | ---: | --- | ---: | --- | --- |",
    ]
    for m in measurements:
        baseline = f"{m.baseline_name}: {_number(m.baseline, m.unit)}" if m.baseline else ""
        name = f"{m.benchmark} ({m.database})" if m.database else m.benchmark
        rows.append(
            f"| {name} | {m.metric} | {_number(m.value, m.unit)} | {baseline} "
            f"| {_number(m.ratio)} | {m.target} | {_verdict(m.ok)} |"
        )
    return "\n".join(rows)


#: The issue's target for PostgreSQL: within this factor of SQLite on the same workload.
POSTGRES_TARGET = 1.5


def higher_is_better(m: Measurement) -> bool:
    """True for rates (``steps/s``, ``tasks/s``) and speed-ups: a larger value is better."""
    return m.unit.endswith("/s") or m.unit == "%" or m.metric.startswith("speed-up")


def comparison(measurements: Sequence[Measurement]) -> str:
    """SQLite and PostgreSQL figures of each metric side by side, as a Markdown table.

    The ratio is PostgreSQL / SQLite; "within 1.5x" is judged on the slowdown (the ratio
    for times, memory and CPU; its inverse for rates, speed-ups and percentages). A share
    held to 100% passes when PostgreSQL's is at least SQLite's.
    """
    by_metric: dict[tuple[str, str], dict[str, Measurement]] = {}
    for m in measurements:
        by_metric.setdefault((m.benchmark, m.metric), {})[m.database] = m
    rows = [
        "| benchmark | metric | SQLite | PostgreSQL | PostgreSQL / SQLite | within 1.5x |",
        "| --- | --- | ---: | ---: | ---: | --- |",
    ]
    for (benchmark, metric), pair in by_metric.items():
        sqlite, postgres = pair.get("sqlite"), pair.get("postgresql")
        ratio = verdict = ""
        if sqlite is not None and postgres is not None and sqlite.value:
            value = postgres.value / sqlite.value
            ratio = _number(value)
            if sqlite.target == "= 100%":  # a share that must be whole on both
                verdict = _verdict(postgres.value >= sqlite.value)
            elif not math.isnan(value) and value > 0:
                slowdown = 1 / value if higher_is_better(sqlite) else value
                verdict = _verdict(slowdown <= POSTGRES_TARGET)
        rows.append(
            f"| {benchmark} | {metric} "
            f"| {_number(sqlite.value, sqlite.unit) if sqlite else '-'} "
            f"| {_number(postgres.value, postgres.unit) if postgres else '-'} "
            f"| {ratio} | {verdict} |"
        )
    return "\n".join(rows)
