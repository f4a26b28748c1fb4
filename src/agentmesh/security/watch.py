"""Files the orchestrator reloads when they change (policy, revocation list, tokens), and
the one way our commands rewrite them."""

from __future__ import annotations

import asyncio
import inspect
import os
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import TracebackType
from typing import Generic, TypeVar

import structlog

from agentmesh._tasks import TaskSet
from agentmesh.errors import ConfigError
from agentmesh.logs import exception_fields

log = structlog.get_logger(__name__)

T = TypeVar("T")
Listener = Callable[[T], Awaitable[None] | None]
_Stamp = tuple[int, int, int] | None


def replace_file(path: Path, text: str, *, mode: int) -> None:
    """Write ``text`` to ``path`` atomically with ``mode``: a reloading reader never sees half
    of it, and a failed write leaves the old file as it was."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _stamp(path: Path) -> _Stamp:
    try:
        info = path.stat()
    except FileNotFoundError:
        return None
    # The inode catches an atomic replace that kept mtime and size.
    return (info.st_mtime_ns, info.st_size, info.st_ino)


class ReloadingFile(Generic[T]):
    """The parsed contents of one file, re-read in the background whenever it changes.

    ``async with`` loads the file once (raising :class:`~agentmesh.errors.ConfigError` when it
    is invalid: fail fast at start-up) and then checks it every ``interval`` seconds. An
    invalid or vanished file later on keeps the last good value and logs ``config.invalid``.
    With ``missing`` given, a file that does not exist yet stands for that value.
    """

    def __init__(
        self,
        path: Path,
        load: Callable[[Path], T],
        *,
        interval: float = 1.0,
        missing: T | None = None,
        what: str = "file",
    ) -> None:
        self.path = path
        self._load = load
        self._interval = interval
        self._missing = missing
        self._what = what
        self._stamp: _Stamp = None
        self._value: T | None = None
        self._listeners: list[Listener[T]] = []
        #: The watcher; a crash of it is logged with its name, the file then no longer reloads.
        self._tasks = TaskSet()

    @property
    def value(self) -> T:
        """The last good contents."""
        if self._value is None:
            raise RuntimeError("ReloadingFile used outside 'async with'")
        return self._value

    def on_change(self, listener: Listener[T]) -> None:
        """Call ``listener`` with the new value after every successful reload."""
        self._listeners.append(listener)

    def _read(self) -> tuple[_Stamp, T]:
        stamp = _stamp(self.path)
        if stamp is None:
            if self._missing is None:
                raise ConfigError(f"{self._what} {self.path} does not exist")
            return None, self._missing
        return stamp, self._load(self.path)

    async def __aenter__(self) -> ReloadingFile[T]:
        self._stamp, self._value = await asyncio.to_thread(self._read)
        if self._stamp is None:
            log.warning("config.missing", what=self._what, path=str(self.path))
        self._tasks.spawn(self._watch(), name=f"watch-{self.path.name}")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._tasks.aclose()

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            await self.check()

    async def check(self) -> bool:
        """Reload now if the file changed; True when a new value was taken."""
        stamp = await asyncio.to_thread(_stamp, self.path)
        if stamp == self._stamp:
            return False
        if stamp is None:
            self._stamp = None
            log.error(
                "config.invalid",
                what=self._what,
                path=str(self.path),
                error="the file vanished; keeping the last good version",
            )
            return False
        try:
            value = await asyncio.to_thread(self._load, self.path)
        except ConfigError as exc:
            # Remember the stamp: the same broken file is reported once, not every second.
            self._stamp = stamp
            log.error(
                "config.invalid",
                what=self._what,
                path=str(self.path),
                error=str(exc),
                kept="the last good version",
            )
            return False
        self._stamp, self._value = stamp, value
        log.info("config.reloaded", what=self._what, path=str(self.path), pid=os.getpid())
        for listener in self._listeners:
            try:
                outcome = listener(value)
                if inspect.isawaitable(outcome):
                    await outcome
            except Exception as exc:
                # One failing reaction must not stop the others, nor the watching.
                log.error(
                    "config.listener_failed",
                    what=self._what,
                    path=str(self.path),
                    **exception_fields(exc),
                )
        return True
