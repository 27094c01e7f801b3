"""What the scheduler keeps in the store: the leader lock, APScheduler's job table, and reading it.

Exactly one process at a time, the leader, schedules. On PostgreSQL the leader holds an advisory lock on a
connection of its own for its whole life; when it dies the lock goes with its connection. SQLite is for one
process: a file lock beside the database keeps a second ``run`` from scheduling too.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Protocol

from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from sqlalchemy import Connection, Engine, inspect, text
from sqlalchemy.engine import make_url

from syndication.store import database

log = logging.getLogger("syndication.scheduler")

JOBSTORE_TABLE = "scheduler_jobs"
# The advisory lock only the scheduling process holds: "syndic" read as a number, unlikely to meet another app's.
LEADER_LOCK_KEY = 0x73796E646963


class Leadership(Protocol):
    """Who schedules: at most one holder at a time."""

    def try_acquire(self) -> bool: ...

    def holds(self) -> bool: ...

    def release(self) -> None: ...


class AdvisoryLock:
    """PostgreSQL: a session advisory lock on a dedicated connection, held for the leader's life."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._connection: Connection | None = None

    def try_acquire(self) -> bool:
        connection = self.engine.connect()
        try:
            got = bool(connection.scalar(text("SELECT pg_try_advisory_lock(:key)"), {"key": LEADER_LOCK_KEY}))
            connection.commit()
        except Exception:
            connection.close()
            raise
        if not got:
            connection.close()
            return False
        self._connection = connection
        return True

    def holds(self) -> bool:
        # The lock lives as long as its connection: a connection that no longer answers has lost it.
        if self._connection is None:
            return False
        try:
            self._connection.scalar(text("SELECT 1"))
            self._connection.commit()
        except Exception:  # any failure means the lock may be gone: stop scheduling, a poll may win it back
            log.exception("the scheduler's lock connection failed")
            self._discard()
            return False
        return True

    def release(self) -> None:
        if self._connection is None:
            return
        with contextlib.suppress(Exception):  # closing the connection releases the lock anyway
            self._connection.scalar(text("SELECT pg_advisory_unlock(:key)"), {"key": LEADER_LOCK_KEY})
            self._connection.commit()
        self._discard()

    def _discard(self) -> None:
        if self._connection is not None:
            with contextlib.suppress(Exception):
                self._connection.close()
            self._connection = None


class FileLock:
    """SQLite: an exclusive lock on a file beside the database, released when the process ends."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: IO[bytes] | None = None

    def try_acquire(self) -> bool:
        handle = self.path.open("ab")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            return False
        self._file = handle
        return True

    def holds(self) -> bool:
        return self._file is not None

    def release(self) -> None:
        if self._file is not None:
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None


def leadership_for(engine: Engine) -> Leadership:
    """The leader election that fits the store: an advisory lock on PostgreSQL, a file lock on SQLite."""
    if engine.dialect.name == "postgresql":
        return AdvisoryLock(engine)
    database_path = make_url(str(engine.url)).database or "memory"
    return FileLock(Path(f"{database_path}.scheduler.lock"))


class SharedJobStore:
    """APScheduler's job store in the service's own database, on an engine of its own.

    Its own engine: the service disposes of its engine when it shuts down, which would orphan the connections
    the scheduler still holds (the advisory lock's among them).
    """

    def __init__(self, url: str) -> None:
        self._engine: Engine | None = database.open_engine(url)
        self.jobstore = SQLAlchemyJobStore(engine=self._engine, tablename=JOBSTORE_TABLE)

    def dispose(self) -> None:
        """Close its connections (again after the scheduler let go of it: its thread may have used one since)."""
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None


def stored_next_runs(engine: Engine) -> dict[str, datetime | None]:
    """Next run times from APScheduler's job store table, read directly: no scheduler is started to read it."""
    if not inspect(engine).has_table(JOBSTORE_TABLE):
        return {}
    with engine.connect() as connection:
        rows = connection.execute(text(f"SELECT id, next_run_time FROM {JOBSTORE_TABLE}"))  # noqa: S608 (a constant)
        return {job_id: datetime.fromtimestamp(stamp, UTC) if stamp is not None else None for job_id, stamp in rows}
