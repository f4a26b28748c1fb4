"""Which steps of a task are ready: pure bookkeeping, no I/O and no asyncio.

Each step keeps a count of the dependencies it still waits for; a step whose count reaches
zero goes on the ready queue. A completion touches only the finished step's dependants, so
a task costs time in proportion to its edges, whatever its width. The plan may grow while it
runs: follow-up steps and fan-out instances are added as they appear. A fan-out step waits
for its instances the way any step waits for its dependencies, and comes back on the ready
queue (to be finished) when the last one has succeeded.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping

from agentmesh.models import JSON
from agentmesh.orchestrator.planning import split_instance_id


class Scheduler:
    """Dependency counters, a ready queue and the outputs of the steps that succeeded."""

    def __init__(self) -> None:
        self._waiting: dict[str, int] = {}
        self._dependants: dict[str, list[str]] = {}
        self._succeeded: set[str] = set()
        #: Steps that ended without an output (skipped, failed): no dependant will run.
        self._dead: set[str] = set()
        self._ready: deque[str] = deque()
        self._outputs: dict[str, JSON] = {}
        #: Units of bookkeeping done so far (a counter touched, a step queued); for tests.
        self.work = 0

    @property
    def outputs(self) -> Mapping[str, JSON]:
        """The output of each plain step that succeeded (fan-out instances are left out)."""
        return self._outputs

    def __contains__(self, step_id: str) -> bool:
        return step_id in self._waiting or step_id in self._succeeded or step_id in self._dead

    def add(self, step_id: str, needs: Iterable[str] = ()) -> None:
        """A step that runs once every step in ``needs`` has succeeded."""
        missing = 0
        for need in needs:
            self.work += 1
            if need not in self._succeeded:
                missing += 1
                self._dependants.setdefault(need, []).append(step_id)
        self._waiting[step_id] = missing
        if missing == 0:
            self._queue(step_id)

    def restore(self, step_id: str, output: JSON = None) -> None:
        """A step that succeeded before (say, before a restart): it counts as done."""
        self._waiting.pop(step_id, None)
        self._succeeded.add(step_id)
        if split_instance_id(step_id)[1] is None:
            self._outputs[step_id] = output

    def expand(self, parent: str, instances: Mapping[str, bool]) -> None:
        """Grow fan-out ``parent`` by its instances (id → already succeeded).

        The instances left to run are ready at once (the parent's dependencies are theirs).
        The parent comes back on the ready queue once all of them have succeeded (at once
        when none is left to run).
        """
        waiting = 0
        for instance, done in instances.items():
            self.work += 1
            if done:
                self.restore(instance)
            else:
                waiting += 1
                self._waiting[instance] = 0
                self._dependants.setdefault(instance, []).append(parent)
                self._queue(instance)
        self._waiting[parent] = waiting
        if waiting == 0:
            self._queue(parent)

    def ready(self) -> list[str]:
        """The steps that became ready since the last call, in the order they did."""
        ready = list(self._ready)
        self._ready.clear()
        return ready

    def succeeded(self, step_id: str, output: JSON = None) -> None:
        """``step_id`` succeeded: its dependants each wait for one step fewer."""
        self.restore(step_id, output)
        for dependant in self._dependants.pop(step_id, ()):
            self.work += 1
            if dependant in self._waiting:
                self._waiting[dependant] -= 1
                if self._waiting[dependant] == 0:
                    self._queue(dependant)

    def skipped(self, step_id: str) -> list[tuple[str, str]]:
        """``step_id`` was skipped: so is every step that depends on it, transitively.

        Returns (step, the skipped step it depended on) for each step skipped in turn.
        """
        return self._end(step_id)

    def failed(self, step_id: str) -> None:
        """``step_id`` failed for good: no step that depends on it will become ready."""
        self._end(step_id)

    def stopped(self, instance: str) -> None:
        """Fan-out ``instance`` failed or was stopped: its fan-out step fails or is skipped.

        Only the instance is forgotten; what becomes of the fan-out step (and what depends on
        it) is decided by :meth:`failed` or :meth:`skipped` on the fan-out step itself.
        """
        self._waiting.pop(instance, None)
        self._dependants.pop(instance, None)
        self._dead.add(instance)

    def _end(self, step_id: str) -> list[tuple[str, str]]:
        self._waiting.pop(step_id, None)
        self._dead.add(step_id)
        ended: list[tuple[str, str]] = []
        stack = [step_id]
        while stack:
            cause = stack.pop()
            for dependant in self._dependants.pop(cause, ()):
                self.work += 1
                if self._waiting.pop(dependant, None) is not None:
                    self._dead.add(dependant)
                    ended.append((dependant, cause))
                    stack.append(dependant)
        return ended

    def _queue(self, step_id: str) -> None:
        self.work += 1
        self._ready.append(step_id)
