"""The SQL connection: engine, sessions and the schema upgrade every part of the store shares.

SQLite (WAL) is the embedded default; PostgreSQL via asyncpg in production.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

import pydantic
import pydantic_core
from sqlalchemy import Connection as SyncConnection
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from agentmesh.orchestrator.store import migrate

A = TypeVar("A")
R = TypeVar("R")


def utc(value: datetime | None) -> datetime | None:
    """``value`` as an aware UTC datetime: SQLite hands back naive ones; all we store is UTC."""
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


class JsonText(str):
    """A JSON column's value serialised already (see :func:`json_of`): stored as it is."""

    __slots__ = ()


def json_of(model: pydantic.BaseModel, **dump: Any) -> JsonText:
    """``model`` as the JSON text of a JSON column, in one pass of pydantic-core: the text
    ``model_dump(mode="json", **dump)`` would be serialised to, without the dict between
    (building those dicts was a fifth of the writer thread's time with many tasks, issue 9)."""
    return JsonText(model.model_dump_json(**dump))


def _to_json(value: Any) -> str:
    """``value`` as JSON text, for every JSON column: what ``json.dumps`` writes, give or
    take whitespace and escapes, in pydantic-core's Rust serializer at a fraction of the cost
    (JSON columns are most of what the writer thread spends its time on); a
    :class:`JsonText` as it is."""
    if type(value) is JsonText:
        return value
    return pydantic_core.to_json(value).decode()


class Connection:
    """The engine and sessions behind a :class:`~agentmesh.orchestrator.store.Store`.

    Opened by ``async with``: creates the engine and brings the schema up to date.
    """

    def __init__(self, url: str, *, schema: str = "") -> None:
        self.url = make_url(url)
        self._schema = schema
        self._engine: AsyncEngine | None = None
        self._sessions: async_sessionmaker[AsyncSession] | None = None
        # SQLite has one writer at a time; queueing writers here beats "database is locked".
        self._write_lock = asyncio.Lock() if self.is_sqlite else None
        #: On a SQLite file: a synchronous engine and the one thread it writes from.
        self._sync_engine: Engine | None = None
        self._writer_thread: ThreadPoolExecutor | None = None
        self._reader_threads: ThreadPoolExecutor | None = None

    @property
    def is_sqlite(self) -> bool:
        """True on the embedded SQLite backend."""
        return self.url.get_backend_name() == "sqlite"

    async def __aenter__(self) -> Self:
        kwargs: dict[str, Any] = {}
        if self.is_sqlite:
            database = self.url.database
            if database and database != ":memory:":
                Path(database).parent.mkdir(parents=True, exist_ok=True)
            kwargs["connect_args"] = {"timeout": 30}
        else:
            kwargs.update(pool_size=10, max_overflow=20)
            # Named in pg_stat_activity, by schema when there is one (meshes sharing a database).
            settings = {"application_name": application_name(self._schema)}
            if self._schema:
                settings["search_path"] = self._schema
            kwargs["connect_args"] = {"server_settings": settings}
        engine = create_async_engine(self.url, json_serializer=_to_json, **kwargs)
        if self.is_sqlite:
            event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        else:
            event.listen(engine.sync_engine, "checkin", _idle_from_now)
            event.listen(engine.sync_engine, "checkout", _ping_if_idle)
        self._engine = engine
        self._sessions = async_sessionmaker(engine, expire_on_commit=False)
        if self.is_sqlite and self.url.database and self.url.database != ":memory:":
            # aiosqlite hands every call (cursor, execute, fetch, close) to its thread and
            # back, some twenty round trips per transaction; a write run whole in a thread
            # of its own makes one. (An in-memory database exists once per connection, so it
            # keeps the async path.)
            self._sync_engine = create_engine(
                self.url.set(drivername="sqlite"),
                connect_args={"timeout": 30},
                json_serializer=_to_json,
            )
            event.listen(self._sync_engine, "connect", _sqlite_pragmas)
            self._writer_thread = ThreadPoolExecutor(1, thread_name_prefix="agentmesh-sqlite")
            # Readers (WAL) go on beside the writer, on connections of their own.
            self._reader_threads = ThreadPoolExecutor(2, thread_name_prefix="agentmesh-sqlite-r")
        async with engine.begin() as conn:
            if not self.is_sqlite:
                # Replicas starting together must not migrate the same schema at once.
                await conn.execute(text("SELECT pg_advisory_xact_lock(72635410)"))
            await conn.run_sync(migrate.upgrade)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for threads in (self._writer_thread, self._reader_threads):
            if threads is not None:
                threads.shutdown(wait=True)
        self._writer_thread = self._reader_threads = None
        if self._sync_engine is not None:
            self._sync_engine.dispose()
            self._sync_engine = None
        if self._engine is not None:
            await self._engine.dispose()
            self._engine = None

    async def _run_write(self, write: Callable[[SyncConnection, A], R], argument: A) -> R:
        """``write(connection, argument)`` in one write transaction, committed on return.

        On a SQLite file it runs whole in the writer thread; elsewhere through the async
        engine (each statement awaited).
        """
        engine, thread = self._sync_engine, self._writer_thread
        if engine is None or thread is None:
            async with self._connection() as connection:
                return await connection.run_sync(write, argument)

        def in_thread() -> R:
            with engine.begin() as connection:
                return write(connection, argument)

        async with self._write_lock or contextlib.nullcontext():
            return await asyncio.get_running_loop().run_in_executor(thread, in_thread)

    @contextlib.asynccontextmanager
    async def _transaction(self) -> AsyncIterator[AsyncSession]:
        if self._sessions is None:
            raise RuntimeError("Store used outside `async with`")
        lock = self._write_lock or contextlib.nullcontext()
        async with lock, self._sessions.begin() as session:
            yield session

    async def _run_read(self, read: Callable[[SyncConnection, A], R], argument: A) -> R:
        """``read(connection, argument)`` on a connection of its own (no transaction kept).

        On a SQLite file it runs whole in a reader thread: one hand-over instead of one
        per cursor call.
        """
        if self._engine is None:
            raise RuntimeError("Store used outside `async with`")
        engine, threads = self._sync_engine, self._reader_threads
        if engine is None or threads is None:
            async with self._engine.connect() as connection:
                return await connection.run_sync(read, argument)

        def in_thread() -> R:
            with engine.connect() as connection:
                return read(connection, argument)

        return await asyncio.get_running_loop().run_in_executor(threads, in_thread)

    @contextlib.asynccontextmanager
    async def _connection(self) -> AsyncIterator[AsyncConnection]:
        """A Core connection in a write transaction (no ORM session: the hot write path)."""
        if self._engine is None:
            raise RuntimeError("Store used outside `async with`")
        lock = self._write_lock or contextlib.nullcontext()
        async with lock, self._engine.begin() as connection:
            yield connection

    @contextlib.asynccontextmanager
    async def _read(self) -> AsyncIterator[AsyncSession]:
        if self._sessions is None:
            raise RuntimeError("Store used outside `async with`")
        async with self._sessions() as session:
            yield session


def rowcount(result: Any) -> int:
    """The rows an UPDATE changed (a CursorResult, whose rowcount the generic type hides)."""
    return int(result.rowcount)


#: A pooled PostgreSQL connection idle this long is pinged before it is used again: the
#: server or the network may have dropped it meanwhile. One in steady use is not: a ping on
#: every checkout (SQLAlchemy's pool_pre_ping) was a round trip more per transaction, a sixth
#: of a chain step's writes (issue 9). One dropped while in use fails its transaction, as it
#: did with pre-ping, and the pool replaces it.
PING_AFTER_IDLE_SECONDS = 5.0


def application_name(schema: str = "") -> str:
    """What the store's PostgreSQL connections call themselves (``application_name``)."""
    return f"agentmesh/{schema}" if schema else "agentmesh"


def _idle_from_now(_dbapi_connection: Any, record: Any) -> None:
    record.info["idle_since"] = time.monotonic()


def _ping_if_idle(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
    idle_since = record.info.get("idle_since")
    if idle_since is None or time.monotonic() - idle_since < PING_AFTER_IDLE_SECONDS:
        return  # new, or in steady use
    try:
        dbapi_connection.ping()
    except Exception as exc:
        # The pool discards this connection and checks out another (or a new one).
        raise DisconnectionError("connection dropped while idle") from exc


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # WAL lets readers (watchers) proceed while the engine writes.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()
