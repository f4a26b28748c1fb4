"""Schema migrations with Alembic, applied by the Store when it opens."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Connection, inspect, text

if TYPE_CHECKING:
    from alembic.config import Config

_MIGRATIONS = Path(__file__).with_name("migrations")
#: Alembic's bookkeeping table (its default name).
_VERSION_TABLE = "alembic_version"


def alembic_config(connection: Connection | None = None) -> Config:
    """An Alembic config for our migrations, bound to ``connection`` when given."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(_MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def head() -> str:
    """The newest revision, read off the files' names: revision ``NNNN`` is
    ``versions/NNNN_*.py``, one after the other (tests/store/test_migrations.py checks it
    against Alembic's own reading)."""
    numbers = [
        match.group(1)
        for path in (_MIGRATIONS / "versions").glob("*.py")
        if (match := re.fullmatch(r"(\d{4})_\w+", path.stem))
    ]
    return max(numbers)


def current(connection: Connection) -> str | None:
    """The revision the database is at, or None before the first migration."""
    if not inspect(connection).has_table(_VERSION_TABLE):
        return None
    return connection.execute(text(f"SELECT version_num FROM {_VERSION_TABLE}")).scalar()


def upgrade(connection: Connection) -> None:
    """Bring the schema to the newest revision (run through ``AsyncConnection.run_sync``)."""
    if current(connection) == head():
        # Alembic is imported only when there is something to migrate: loaded, it is ten
        # MiB of every orchestrator's memory for good, for a check done once (issue 9).
        return
    from alembic import command

    command.upgrade(alembic_config(connection), "head")
