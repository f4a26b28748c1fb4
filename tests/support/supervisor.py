"""Restarting agent processes that die on their own, as systemd or Kubernetes would."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from types import TracebackType

from tests.support.processes import AgentProcesses


class Supervisor:
    """Starts agents through ``processes`` and restarts any that exits by itself.

    An agent the test stops on purpose (``processes.kill`` or ``terminate``) leaves
    ``processes.running`` and is not restarted. ``async with`` runs the watch.
    """

    def __init__(self, processes: AgentProcesses, *, interval: float = 0.05) -> None:
        self._processes = processes
        self._interval = interval
        self._specs: dict[str, tuple[str, list[str], dict[str, str]]] = {}
        self._watch: asyncio.Task[None] | None = None
        #: Exits seen per agent name, with their exit codes.
        self.exits: Counter[tuple[str, int]] = Counter()

    @property
    def restarts(self) -> int:
        """How many times an agent was started again after dying."""
        return self.exits.total()

    def start(self, module: str, name: str, orchestrators: list[str], **env: str) -> None:
        """Start agent ``name`` and keep it running."""
        self._specs[name] = (module, orchestrators, env)
        self._processes.start(module, name, orchestrators, **env)

    def _check(self) -> None:
        for name, (module, orchestrators, env) in self._specs.items():
            process = self._processes.running.get(name)
            if process is None or (code := process.poll()) is None:
                continue
            self.exits[(name, code)] += 1
            self._processes.start(module, name, orchestrators, **env)

    async def _run(self) -> None:
        while True:
            self._check()
            await asyncio.sleep(self._interval)

    async def __aenter__(self) -> Supervisor:
        self._watch = asyncio.create_task(self._run(), name="agent-supervisor")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
