"""Engines, transactions and schema migrations (Alembic) for SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, inspect, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DatabaseError, SQLAlchemyError
from sqlalchemy.orm import Session

from syndication.errors import StoreError

MIGRATIONS = "syndication.store:migrations"
# The newest migration's revision, known without Alembic (slow to import) so that opening the store is quick;
# tests/test_migrations.py checks it against the migration scripts.
HEAD_REVISION = "0022"


def open_engine(url: str) -> Engine:
    """An engine for ``url``; SQLite gets WAL, foreign keys and a busy timeout, and its folder is created."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(url, pool_pre_ping=True)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


@contextmanager
def transaction(engine: Engine) -> Iterator[Session]:
    """A session whose work commits together at the end, or not at all. Callers own transactions."""
    with Session(engine, expire_on_commit=False) as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise


def _alembic_config(engine: Engine) -> Any:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", MIGRATIONS)
    config.attributes["engine"] = engine
    return config


def upgrade(engine: Engine) -> str:
    """Create the schema or bring it to the newest revision; harmless to run again. Returns the revision."""
    from alembic import command

    try:
        command.upgrade(_alembic_config(engine), "head")
        return current_revision(engine) or "none"
    except DatabaseError as error:  # unreachable, refused, or a file that is not a database
        raise StoreError(f"cannot open the store at {_safe(engine)}: {error.orig}") from error


def current_revision(engine: Engine) -> str | None:
    """The schema revision the store is at, or None when it was never initialised."""
    with engine.connect() as connection:  # the table Alembic keeps, read without importing Alembic
        if not inspect(connection).has_table("alembic_version"):
            return None
        revisions = connection.execute(text("SELECT version_num FROM alembic_version")).scalars().all()
    return ",".join(sorted(revisions)) or None


def head_revision() -> str:
    """The newest schema revision this version of the code knows."""
    return HEAD_REVISION


def scripts_head_revision() -> str:
    """The newest schema revision as Alembic reads it from the migration scripts (what HEAD_REVISION must be)."""
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(_alembic_config(create_engine("sqlite://"))).get_current_head()
    assert head is not None
    return head


def require_current(engine: Engine) -> None:
    """Refuse to work on a store that is missing or not migrated, with the command that fixes it."""
    try:
        if not inspect(engine).has_table("alembic_version"):
            raise StoreError(f"the store at {_safe(engine)} is not initialised: run 'syndication init'")
        revision = current_revision(engine)
    except SQLAlchemyError as error:
        raise StoreError(f"cannot open the store at {_safe(engine)}: {error}") from error
    if revision != head_revision():
        raise StoreError(
            f"the store at {_safe(engine)} is at schema {revision}, this version needs {head_revision()}:"
            " run 'syndication init' to upgrade it"
        )


def _safe(engine: Engine) -> str:
    return engine.url.render_as_string(hide_password=True)
