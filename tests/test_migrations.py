"""Schema migrations: a store made by an older version upgrades in place and keeps its posts."""

from __future__ import annotations

from datetime import UTC, datetime

from alembic import command
from sqlalchemy import text

from syndication.config import Settings
from syndication.store import database


def test_upgrade_from_the_first_schema_keeps_posts(settings: Settings) -> None:
    engine = database.open_engine(settings.database.url)
    try:
        command.upgrade(database._alembic_config(engine), "0001")
        # Raw SQL bypasses the store's UTC type: SQLite keeps naive UTC text, PostgreSQL a timestamptz.
        when: object = datetime(2024, 1, 2, 3, 4, tzinfo=UTC)
        if engine.dialect.name == "sqlite":
            when = "2024-01-02 03:04:00.000000"
        with engine.begin() as connection:
            connection.execute(
                text(
                    "INSERT INTO posts (guid, source, title, url, summary, content_html, language, image_alt,"
                    " published, updated) VALUES ('g1', 'old', 'Old post', 'https://x.example/1', 's', '<p>c</p>',"
                    " 'en', '', :when, :when)"
                ),
                {"when": when},
            )
        assert database.current_revision(engine) == "0001"
        database.upgrade(engine)
        assert database.current_revision(engine) == database.head_revision()
        with engine.connect() as connection:
            row = connection.execute(text("SELECT title, changed_at FROM posts WHERE guid = 'g1'")).one()
        assert row[0] == "Old post"
        assert row[1] is not None  # rows from before the column count as changed when last updated
        database.upgrade(engine)  # and again: nothing to do, nothing lost
        database.require_current(engine)
    finally:
        engine.dispose()
