"""The store's queries on SQLite and PostgreSQL: newest per theme, region and author, windows, UTC times."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import text
from sqlalchemy.exc import StatementError

from syndication.app.service import Service
from syndication.core.models import Author, Post
from syndication.store import database
from syndication.store.posts import newest_posts, posts_in_window, upsert_posts
from tests.support import NOW

START = datetime(2024, 5, 1, tzinfo=UTC)


def make_post(
    number: int,
    *,
    hours: int,
    themes: tuple[str, ...] = ("climate-action",),
    regions: tuple[str, ...] = ("europe",),
    authors: tuple[str, ...] = ("ana",),
) -> Post:
    moment = START + timedelta(hours=hours)
    return Post(
        guid=f"g{number}",
        title=f"T{number}",
        url=f"https://x.example/{number}",
        summary="s",
        content_html="<p>c</p>",
        published=moment,
        updated=moment,
        language="en",
        authors=tuple(Author(slug, slug.title()) for slug in authors),
        themes=themes,
        regions=regions,
    )


@pytest.fixture
def filled(service: Service) -> Service:
    posts = [
        make_post(1, hours=1, themes=("climate-action", "resilience"), authors=("ana", "bo")),
        make_post(2, hours=2, themes=("resilience",), regions=("asia",), authors=("bo",)),
        make_post(3, hours=3, themes=(), regions=()),
        make_post(4, hours=3, themes=("climate-action",)),  # same time as 3: the later row sorts first
        make_post(5, hours=24 * 365, themes=("climate-action",)),  # future relative to NOW
    ]
    with database.transaction(service.engine) as session:
        outcome = upsert_posts(session, posts, NOW)
    assert (outcome.added, outcome.updated, outcome.unchanged) == (5, 0, 0)
    return service


def guids(posts: list[Post]) -> list[str]:
    return [p.guid for p in posts]


def test_newest_overall_by_theme_region_author(filled: Service) -> None:
    with database.transaction(filled.engine) as session:
        assert guids(newest_posts(session, now=NOW)) == ["g4", "g3", "g2", "g1"]
        assert guids(newest_posts(session, now=NOW, limit=2)) == ["g4", "g3"]
        assert guids(newest_posts(session, now=NOW, limit=2, offset=2)) == ["g2", "g1"]
        assert guids(newest_posts(session, now=NOW, theme="climate-action")) == ["g4", "g1"]
        assert guids(newest_posts(session, now=NOW, theme="resilience")) == ["g2", "g1"]
        assert guids(newest_posts(session, now=NOW, theme="nothing")) == []
        assert guids(newest_posts(session, now=NOW, region="asia")) == ["g2"]
        assert guids(newest_posts(session, now=NOW, author="bo")) == ["g2", "g1"]
        later = START + timedelta(days=400)
        assert guids(newest_posts(session, now=later, theme="climate-action")) == ["g5", "g4", "g1"]


def test_window_excludes_since_and_includes_until(filled: Service) -> None:
    with database.transaction(filled.engine) as session:
        window = posts_in_window(session, START + timedelta(hours=1), START + timedelta(hours=3))
        assert guids(window) == ["g4", "g3", "g2"]
        themed = posts_in_window(session, START, START + timedelta(hours=3), themes=["resilience"])
        assert guids(themed) == ["g2", "g1"]
        assert posts_in_window(session, START + timedelta(hours=3), START + timedelta(hours=4)) == []


def test_round_trip_keeps_authors_order_and_utc(filled: Service) -> None:
    with database.transaction(filled.engine) as session:
        [first] = [p for p in newest_posts(session, now=NOW) if p.guid == "g1"]
    assert first.authors == (Author("ana", "Ana"), Author("bo", "Bo"))
    assert first.themes == ("climate-action", "resilience")
    assert first.published == START + timedelta(hours=1)
    assert first.published.tzinfo is not None and first.published.utcoffset() == timedelta(0)


def test_offsets_are_stored_as_the_same_instant(service: Service) -> None:
    tokyo = timezone(timedelta(hours=9))
    post = make_post(1, hours=0)
    nine_in_tokyo = datetime(2024, 5, 1, 9, 0, tzinfo=tokyo)
    local = replace(post, published=nine_in_tokyo, updated=nine_in_tokyo)
    with database.transaction(service.engine) as session:
        upsert_posts(session, [local], NOW)
    with database.transaction(service.engine) as session:
        [stored] = newest_posts(session, now=NOW)
    assert stored.published == datetime(2024, 5, 1, 0, 0, tzinfo=UTC)


def test_update_replaces_links_and_keeps_one_row(filled: Service) -> None:
    edited = make_post(1, hours=1, themes=("circular-economy",), authors=("cy",))
    edited = replace(edited, updated=edited.updated + timedelta(days=1), title="New")
    with database.transaction(filled.engine) as session:
        outcome = upsert_posts(
            session,
            [edited, make_post(2, hours=2, themes=("resilience",), regions=("asia",), authors=("bo",))],
            NOW,
        )
    assert (outcome.added, outcome.updated, outcome.unchanged) == (0, 1, 1)
    with database.transaction(filled.engine) as session:
        assert guids(newest_posts(session, now=NOW, theme="resilience")) == ["g2"]
        assert guids(newest_posts(session, now=NOW, theme="circular-economy")) == ["g1"]
        assert guids(newest_posts(session, now=NOW, author="cy")) == ["g1"]
        assert guids(newest_posts(session, now=NOW, author="ana")) == ["g4", "g3"]
        assert len(newest_posts(session, now=NOW)) == 4


def links_in_tables(service: Service) -> dict[str, tuple[tuple[Author, ...], tuple[str, ...], tuple[str, ...]]]:
    """Every post's authors, themes and regions as the link tables hold them, by guid."""
    found: dict[str, tuple[list[Author], list[str], list[str]]] = {}
    with service.engine.connect() as connection:
        for (guid,) in connection.execute(text("SELECT guid FROM posts")):
            found[guid] = ([], [], [])
        query = (
            "SELECT posts.guid, authors.slug, authors.name FROM post_authors JOIN posts ON posts.id = post_id"
            " JOIN authors ON authors.id = author_id ORDER BY posts.guid, position"
        )
        for guid, slug, name in connection.execute(text(query)):
            found[guid][0].append(Author(slug, name))
        for index, table, column in ((1, "post_themes", "theme"), (2, "post_regions", "region")):
            query = f"SELECT posts.guid, {column} FROM {table} JOIN posts ON posts.id = post_id ORDER BY position"
            for guid, slug in connection.execute(text(query)):
                found[guid][index].append(slug)
    return {guid: (tuple(a), tuple(t), tuple(r)) for guid, (a, t, r) in found.items()}


def links_as_loaded(service: Service) -> dict[str, tuple[tuple[Author, ...], tuple[str, ...], tuple[str, ...]]]:
    with database.transaction(service.engine) as session:
        posts = newest_posts(session, now=START + timedelta(days=1000), limit=None)
    return {post.guid: (post.authors, post.themes, post.regions) for post in posts}


def test_a_loaded_post_has_the_links_the_tables_hold_after_adds_and_edits(filled: Service) -> None:
    assert links_as_loaded(filled) == links_in_tables(filled)
    # One name in another case is the same author, credited once under the name stored first; a name with other
    # letters ("Ána") is another author, with a slug of its own beside hers.
    respelled = replace(make_post(6, hours=5), authors=(Author("ana", "ANA"), Author("bo", "Bo"), Author("ana", "Ána")))
    edited = replace(make_post(1, hours=1, themes=("circular-economy",), regions=(), authors=("cy", "ana")),
                     updated=START + timedelta(days=2))  # fmt: skip
    with database.transaction(filled.engine) as session:
        upsert_posts(session, [respelled, edited], NOW)
    loaded = links_as_loaded(filled)
    assert loaded == links_in_tables(filled)
    ana, bo, other = loaded["g6"][0]
    assert (ana, bo) == (Author("ana", "Ana"), Author("bo", "Bo"))
    assert other.name == "Ána" and other.slug.startswith("ana-") and other.slug != "ana"
    assert loaded["g1"] == ((Author("cy", "Cy"), Author("ana", "Ana")), ("circular-economy",), ())


def test_duplicate_guid_in_one_batch_keeps_the_newest(service: Service) -> None:
    old = make_post(1, hours=1)
    new = replace(old, updated=old.updated + timedelta(hours=5), title="Newest")
    with database.transaction(service.engine) as session:
        outcome = upsert_posts(session, [new, old], NOW)
    assert (outcome.added, outcome.unchanged) == (1, 1)
    with database.transaction(service.engine) as session:
        assert [p.title for p in newest_posts(session, now=NOW)] == ["Newest"]


def test_a_failed_batch_leaves_nothing_half_written(service: Service) -> None:
    with (
        pytest.raises(StatementError, match="naive datetime"),
        database.transaction(service.engine) as session,
    ):
        upsert_posts(session, [make_post(1, hours=1)], NOW)
        naive = make_post(2, hours=2)
        upsert_posts(session, [replace(naive, published=datetime(2024, 5, 1), updated=datetime(2024, 5, 1))], NOW)
    with database.transaction(service.engine) as session:
        assert newest_posts(session, now=NOW) == []
