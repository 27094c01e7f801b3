"""Schema migrations: a store made by an older version upgrades in place and keeps its posts."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Engine, text

from syndication.config import Settings
from syndication.core.models import Author, Post
from syndication.core.slugs import slugify
from syndication.store import database
from syndication.store.posts import newest_posts, upsert_posts
from syndication.store.schema import Base


@contextmanager
def store_at(settings: Settings, revision: str) -> Iterator[tuple[Engine, object]]:
    """An engine on a store migrated only as far as ``revision``, and a moment as raw SQL writes it there."""
    engine = database.open_engine(settings.database.url)
    try:
        command.upgrade(database._alembic_config(engine), revision)
        # Raw SQL bypasses the store's UTC type: SQLite keeps naive UTC text, PostgreSQL a timestamptz.
        when: object = datetime(2024, 1, 2, 3, 4, tzinfo=UTC)
        if engine.dialect.name == "sqlite":
            when = "2024-01-02 03:04:00.000000"
        yield engine, when
    finally:
        engine.dispose()


def test_upgrade_from_the_first_schema_keeps_posts(settings: Settings) -> None:
    with store_at(settings, "0001") as (engine, when):
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


def test_upgrade_copies_each_posts_links_into_its_row(settings: Settings) -> None:
    with store_at(settings, "0006") as (engine, when):
        with engine.begin() as connection:
            for number in (1, 2):
                connection.execute(
                    text(
                        "INSERT INTO posts (id, guid, source, title, url, summary, content_html, language, image_alt,"
                        " published, updated, changed_at) VALUES (:id, :guid, 'old', 'Old', 'https://x.example/1',"
                        " 's', '<p>c</p>', 'en', '', :when, :when, :when)"
                    ),
                    {"id": number, "guid": f"g{number}", "when": when},
                )
            connection.execute(text("INSERT INTO authors (id, slug, name) VALUES (7, 'bo', 'Bo'), (8, 'ana', 'Ana')"))
            connection.execute(
                text(
                    "INSERT INTO post_authors (post_id, author_id, position, published)"
                    " VALUES (1, 7, 0, :when), (1, 8, 1, :when)"
                ),
                {"when": when},
            )
            connection.execute(
                text(
                    "INSERT INTO post_themes (post_id, theme, position, published)"
                    " VALUES (1, 'resilience', 1, :when), (1, 'climate-action', 0, :when)"
                ),
                {"when": when},
            )
            connection.execute(
                text("INSERT INTO post_regions (post_id, region, position, published) VALUES (1, 'europe', 0, :when)"),
                {"when": when},
            )
        database.upgrade(engine)
        with database.transaction(engine) as session:
            posts = {post.guid: post for post in newest_posts(session, now=datetime(2030, 1, 1, tzinfo=UTC))}
        assert posts["g1"].authors == (Author("bo", "Bo"), Author("ana", "Ana"))
        assert posts["g1"].themes == ("climate-action", "resilience")
        assert posts["g1"].regions == ("europe",)
        assert (posts["g2"].authors, posts["g2"].themes, posts["g2"].regions) == ((), (), ())


def test_upgrade_keeps_every_published_author_slug_and_gives_new_names_their_own(settings: Settings) -> None:
    with store_at(settings, "0014") as (engine, _when):
        with engine.begin() as connection:
            # Made by the old rule, which dropped the Hangul: ICLEI 日本 would have been given the same slug.
            connection.execute(text("INSERT INTO authors (id, slug, name) VALUES (7, 'iclei', 'ICLEI 한국사무소')"))
        database.upgrade(engine)
        now = datetime(2030, 1, 1, tzinfo=UTC)
        with database.transaction(engine) as session:
            upsert_posts(session, [_post("g1", "ICLEI 한국사무소"), _post("g2", "ICLEI 日本")], now)
        with database.transaction(engine) as session:
            posts = {post.guid: post for post in newest_posts(session, now=now)}
        assert posts["g1"].authors == (Author("iclei", "ICLEI 한국사무소"),)  # its feed stays where readers found it
        assert posts["g2"].authors == (Author("iclei-ri-ben", "ICLEI 日本"),)  # no longer in the other's feed


def _post(guid: str, author: str) -> Post:
    moment = datetime(2024, 1, 2, tzinfo=UTC)
    return Post(guid=guid, title="T", url=f"https://x.example/{guid}", summary="s", content_html="<p>c</p>",
                published=moment, updated=moment, language="en",
                authors=(Author(slugify(author), author),))  # fmt: skip


def test_the_migrations_make_exactly_the_schema_the_code_declares(settings: Settings) -> None:
    # Every table, column, type, index and key of store/schema.py, made by the migrations alone: a column added to
    # the ORM without its migration (or the other way round) fails here, on SQLite and on PostgreSQL.
    engine = database.open_engine(settings.database.url)
    try:
        database.upgrade(engine)
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            differences = [d for d in compare_metadata(context, Base.metadata) if "scheduler_jobs" not in str(d)]
    finally:
        engine.dispose()
    assert differences == []


def test_the_head_revision_the_code_knows_is_the_newest_migration() -> None:
    # Opening the store compares its revision with HEAD_REVISION rather than importing Alembic to read the scripts.
    assert database.head_revision() == database.HEAD_REVISION == database.scripts_head_revision()
