"""The scheduler alone: which steps are ready, as pure bookkeeping (no sockets, no loop)."""

from __future__ import annotations

from agentmesh.orchestrator.engine.scheduler import Scheduler


def test_steps_without_dependencies_are_ready_at_once_in_plan_order() -> None:
    scheduler = Scheduler()
    for step in ("a", "b", "c"):
        scheduler.add(step)
    assert scheduler.ready() == ["a", "b", "c"]
    assert scheduler.ready() == []


def test_step_starts_as_soon_as_its_inputs_are_ready() -> None:
    scheduler = Scheduler()
    scheduler.add("fetch")
    scheduler.add("parse", ["fetch"])
    scheduler.add("report", ["parse", "fetch"])
    assert scheduler.ready() == ["fetch"]
    scheduler.succeeded("fetch", {"text": "hi"})
    assert scheduler.ready() == ["parse"]
    scheduler.succeeded("parse", {"words": 1})
    assert scheduler.ready() == ["report"]
    assert scheduler.outputs == {"fetch": {"text": "hi"}, "parse": {"words": 1}}


def test_there_are_no_level_barriers() -> None:
    # a → b and slow → c: b starts when a is done, whatever "slow" (same level as a) does.
    scheduler = Scheduler()
    scheduler.add("a")
    scheduler.add("slow")
    scheduler.add("b", ["a"])
    scheduler.add("c", ["slow"])
    assert scheduler.ready() == ["a", "slow"]
    scheduler.succeeded("a")
    assert scheduler.ready() == ["b"]
    scheduler.succeeded("b")
    assert scheduler.ready() == []
    scheduler.succeeded("slow")
    assert scheduler.ready() == ["c"]


def test_a_skipped_step_skips_its_dependants_transitively_and_nothing_else() -> None:
    scheduler = Scheduler()
    scheduler.add("optional")
    scheduler.add("other")
    scheduler.add("uses", ["optional"])
    scheduler.add("then", ["uses", "other"])
    scheduler.add("free", ["other"])
    scheduler.ready()
    assert scheduler.skipped("optional") == [("uses", "optional"), ("then", "uses")]
    scheduler.succeeded("other")
    assert scheduler.ready() == ["free"]


def test_a_failed_step_never_lets_its_dependants_run() -> None:
    scheduler = Scheduler()
    scheduler.add("a")
    scheduler.add("b", ["a"])
    scheduler.ready()
    scheduler.failed("a")
    assert scheduler.ready() == []
    assert "b" in scheduler


def test_follow_up_steps_grow_the_plan_while_it_runs() -> None:
    scheduler = Scheduler()
    scheduler.add("plan")
    scheduler.add("after", ["plan"])
    scheduler.ready()
    # The agent running "plan" asked for two more steps, run after it.
    scheduler.add("extra-1", ["plan"])
    scheduler.add("extra-2", ["extra-1"])
    scheduler.succeeded("plan")
    assert scheduler.ready() == ["after", "extra-1"]
    scheduler.succeeded("extra-1")
    assert scheduler.ready() == ["extra-2"]
    # A step added once its dependencies are done is ready at once.
    scheduler.add("late", ["plan", "extra-1"])
    assert scheduler.ready() == ["late"]


def test_a_fan_out_runs_its_instances_and_is_ready_again_when_all_succeeded() -> None:
    scheduler = Scheduler()
    scheduler.add("items")
    scheduler.add("each", ["items"])
    scheduler.add("sum", ["each"])
    scheduler.ready()
    scheduler.succeeded("items", [1, 2, 3])
    assert scheduler.ready() == ["each"]
    # After a restart, instance 1 had succeeded already: only 0 and 2 run again.
    scheduler.expand("each", {"each[0]": False, "each[1]": True, "each[2]": False})
    assert scheduler.ready() == ["each[0]", "each[2]"]
    scheduler.succeeded("each[0]", {"n": 1})
    assert scheduler.ready() == []
    scheduler.succeeded("each[2]", {"n": 3})
    assert scheduler.ready() == ["each"]  # to be joined
    scheduler.succeeded("each", [{"n": 1}, {"n": 2}, {"n": 3}])
    assert scheduler.ready() == ["sum"]
    # Instances are not outputs of their own: references name the fan-out step.
    assert set(scheduler.outputs) == {"items", "each"}


def test_a_fan_out_with_nothing_left_to_run_is_ready_to_join_at_once() -> None:
    scheduler = Scheduler()
    scheduler.add("each")
    scheduler.ready()
    scheduler.expand("each", {})
    assert scheduler.ready() == ["each"]


def test_a_failed_instance_stops_its_fan_out_and_what_depends_on_it() -> None:
    scheduler = Scheduler()
    scheduler.add("each")
    scheduler.add("sum", ["each"])
    scheduler.ready()
    scheduler.expand("each", {"each[0]": False, "each[1]": False})
    scheduler.ready()
    scheduler.stopped("each[0]")
    scheduler.stopped("each[1]")
    assert scheduler.skipped("each") == [("sum", "each")]
    assert scheduler.ready() == []


def test_each_completion_costs_in_proportion_to_its_dependants_on_a_wide_plan() -> None:
    width = 1_000
    scheduler = Scheduler()
    scheduler.add("root")
    for i in range(width):
        scheduler.add(f"s{i}", ["root"])
    scheduler.add("join", [f"s{i}" for i in range(width)])
    scheduler.ready()
    before = scheduler.work
    scheduler.succeeded("root")
    # root has `width` dependants: one unit each, plus queueing each.
    assert scheduler.work - before == 2 * width
    assert len(scheduler.ready()) == width
    costs = []
    for i in range(width):
        before = scheduler.work
        scheduler.succeeded(f"s{i}", i)
        costs.append(scheduler.work - before)
    # One dependant each ("join"), and queueing "join" once at the very end: never a rescan.
    assert costs[:-1] == [1] * (width - 1)
    assert costs[-1] == 2
    assert scheduler.ready() == ["join"]
    assert len(scheduler.outputs) == width + 1
