"""Reading back what test agents journaled (``test.work``, ``test.hang``): the agents' own word."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from tests.support.waiting import eventually


@dataclass(frozen=True, slots=True)
class Entry:
    """One journal line: a run of ``entry`` started, ended or was cancelled on ``agent``."""

    event: str
    entry: str
    agent: str
    attempt: int
    key: str


class Journal:
    """A journal file shared by the test and its agent processes (one JSON object a line)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __str__(self) -> str:
        return str(self.path)

    def entries(self) -> list[Entry]:
        """Every complete line written so far, in order."""
        if not self.path.exists():
            return []
        lines = self.path.read_text().splitlines(keepends=True)
        return [Entry(**json.loads(line)) for line in lines if line.endswith("\n")]

    def events(self, event: str, entry: str | None = None) -> list[Entry]:
        """The lines of ``event`` (``start``, ``end``, ``cancelled``), optionally of one entry."""
        return [e for e in self.entries() if e.event == event and entry in (None, e.entry)]

    def started(self) -> list[str]:
        """Entries in the order their runs started."""
        return [e.entry for e in self.events("start")]

    def max_concurrent(self, agent: str | None = None) -> int:
        """The most runs (of ``agent``, or of anyone) that were between start and end at once."""
        running = most = 0
        for e in self.entries():
            if agent is not None and e.agent != agent:
                continue
            if e.event == "start":
                running += 1
                most = max(most, running)
            else:
                running -= 1
        return most

    async def wait_for(self, event: str, entry: str, within: float = 20) -> Entry:
        """Wait until a run of ``entry`` journaled ``event``; return that line."""

        async def found() -> list[Entry]:
            return self.events(event, entry)

        lines = await eventually(found, bool, within=within, interval=0.02)
        return lines[0]
