"""A copy of an embedded SQLite store, taken while the service runs, with SQLite's online backup API.

The backup API copies the database page by page under a read transaction, restarting when another connection
writes between steps, so the copy is one consistent state (WAL content included) however busy the store is.
It is written to a temporary file beside the target, checked, then put in place in one step: a failed or
interrupted backup never leaves a half-written file under the target's name, and without ``replace`` an
existing file is never overwritten (``os.link`` refuses atomically).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import tempfile
from pathlib import Path

from sqlalchemy import Engine

from syndication.errors import StoreError


def is_sqlite(engine: Engine) -> bool:
    """Whether the store is an SQLite file."""
    return engine.dialect.name == "sqlite"


def backup_sqlite(engine: Engine, target: Path, *, replace: bool = False) -> int:
    """Copy the SQLite store of ``engine`` to ``target``; returns the bytes written. FileExistsError when the
    target exists and ``replace`` is false; StoreError when the copy does not check out."""
    target = target.absolute()
    if not replace and target.exists():  # the early answer; the link below is what holds under a race
        raise FileExistsError(target)
    descriptor, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent)
    os.close(descriptor)
    partial = Path(name)
    try:
        with engine.connect() as connection:
            source = connection.connection.driver_connection
            assert isinstance(source, sqlite3.Connection)
            copy = sqlite3.connect(partial)
            try:
                source.backup(copy, pages=1024)
                verdict = copy.execute("PRAGMA quick_check").fetchone()
            finally:
                copy.close()
        if not verdict or verdict[0] != "ok":
            raise StoreError(f"the backup does not check out: {verdict[0] if verdict else 'no answer'}")
        if replace:
            partial.replace(target)
        else:
            target.hardlink_to(partial)
        return target.stat().st_size
    finally:
        with contextlib.suppress(FileNotFoundError):
            partial.unlink()
