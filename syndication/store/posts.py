"""Storing and reading posts. Functions take a Session and never commit: the caller owns the transaction."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, and_, bindparam, delete, func, insert, select, update
from sqlalchemy.orm import Session

from syndication.core.models import Author, Image, Post
from syndication.store.schema import AuthorRow, PostAuthorRow, PostRegionRow, PostRow, PostThemeRow

_posts = PostRow.__table__
_authors = AuthorRow.__table__
_post_authors = PostAuthorRow.__table__
_post_themes = PostThemeRow.__table__
_post_regions = PostRegionRow.__table__

# SQLite allows 32,766 bound parameters per statement; stay well under it for IN lists.
_IN_CHUNK = 900


@dataclass(frozen=True, slots=True)
class UpsertOutcome:
    """How many posts a batch added, changed in place, or left alone."""

    added: int
    updated: int
    unchanged: int


def upsert_posts(session: Session, posts: Sequence[Post], source: str | None = None) -> UpsertOutcome:
    """Add new posts and update those whose ``updated`` is newer than the stored one; the rest is unchanged.

    Idempotent: the same batch twice adds nothing the second time. Within the batch, the newest version of
    a guid wins.
    """
    newest: dict[str, Post] = {}
    for post in posts:
        kept = newest.get(post.guid)
        if kept is None or post.updated > kept.updated:
            newest[post.guid] = post
    existing = _existing_versions(session, list(newest))
    to_add: list[Post] = []
    to_update: list[tuple[int, Post]] = []
    for guid, post in newest.items():
        stored = existing.get(guid)
        if stored is None:
            to_add.append(post)
        elif post.updated > stored[1]:
            to_update.append((stored[0], post))
    changed = [*to_add, *(post for _, post in to_update)]
    author_ids = _author_ids(session, [author for post in changed for author in post.authors])
    if to_add:
        rows = [_post_values(post, source) for post in to_add]
        result = session.execute(
            insert(_posts).returning(_posts.c.id, sort_by_parameter_order=True), rows
        )
        new_ids = [row[0] for row in result]
        _insert_links(session, list(zip(new_ids, to_add, strict=True)), author_ids)
    if to_update:
        ids = [post_id for post_id, _ in to_update]
        session.execute(
            update(_posts).where(_posts.c.id == bindparam("_id")),
            [{"_id": post_id, **_post_values(post, source)} for post_id, post in to_update],
        )
        for chunk in _chunks(ids):
            for table in (_post_authors, _post_themes, _post_regions):
                session.execute(delete(table).where(table.c.post_id.in_(chunk)))
        _insert_links(session, to_update, author_ids)
    return UpsertOutcome(len(to_add), len(to_update), len(posts) - len(to_add) - len(to_update))


def _existing_versions(session: Session, guids: list[str]) -> dict[str, tuple[int, datetime]]:
    found: dict[str, tuple[int, datetime]] = {}
    for chunk in _chunks(guids):
        query = select(PostRow.id, PostRow.guid, PostRow.updated).where(PostRow.guid.in_(chunk))
        for post_id, guid, updated in session.execute(query):
            found[guid] = (post_id, updated)
    return found


def _author_ids(session: Session, authors: Iterable[Author]) -> dict[str, int]:
    wanted = {author.slug: author.name for author in authors}
    ids: dict[str, int] = {}
    for chunk in _chunks(list(wanted)):
        query = select(AuthorRow.slug, AuthorRow.id).where(AuthorRow.slug.in_(chunk))
        ids.update({slug: author_id for slug, author_id in session.execute(query)})
    missing = [{"slug": slug, "name": wanted[slug]} for slug in wanted if slug not in ids]
    if missing:
        result = session.execute(
            insert(_authors).returning(_authors.c.slug, _authors.c.id, sort_by_parameter_order=True), missing
        )
        ids.update({slug: author_id for slug, author_id in result})
    return ids


def _post_values(post: Post, source: str | None) -> dict[str, Any]:
    return {
        "guid": post.guid,
        "source": source,
        "title": post.title,
        "url": post.url,
        "summary": post.summary,
        "content_html": post.content_html,
        "language": post.language,
        "image_url": post.image.url if post.image else None,
        "image_alt": post.image.alt if post.image else "",
        "published": post.published,
        "updated": post.updated,
    }


def _insert_links(session: Session, posts: Sequence[tuple[int, Post]], author_ids: dict[str, int]) -> None:
    authors, themes, regions = [], [], []
    for post_id, post in posts:
        seen_authors: set[int] = set()
        for position, author in enumerate(post.authors):
            author_id = author_ids[author.slug]
            if author_id not in seen_authors:  # two spellings of one name share a slug: credit once
                seen_authors.add(author_id)
                authors.append(
                    {"post_id": post_id, "author_id": author_id, "position": position, "published": post.published}
                )
        themes += [
            {"post_id": post_id, "theme": theme, "position": i, "published": post.published}
            for i, theme in enumerate(post.themes)
        ]
        regions += [
            {"post_id": post_id, "region": region, "position": i, "published": post.published}
            for i, region in enumerate(post.regions)
        ]
    for table, rows in ((_post_authors, authors), (_post_themes, themes), (_post_regions, regions)):
        if rows:
            session.execute(insert(table), rows)


def newest_posts(
    session: Session,
    *,
    now: datetime,
    limit: int | None = 50,
    theme: str | None = None,
    region: str | None = None,
    author: str | None = None,
    since: datetime | None = None,
    offset: int = 0,
) -> list[Post]:
    """Published posts (``published <= now``), newest first, optionally of one theme, region or author slug."""
    query: Select[tuple[PostRow]]
    if theme is not None:
        query = _through(_post_themes, _post_themes.c.theme == theme)
    elif region is not None:
        query = _through(_post_regions, _post_regions.c.region == region)
    elif author is not None:
        author_id = select(AuthorRow.id).where(AuthorRow.slug == author).scalar_subquery()
        query = _through(_post_authors, _post_authors.c.author_id == author_id)
    else:
        query = select(PostRow)
    query = query.where(PostRow.published <= now)
    if since is not None:
        query = query.where(PostRow.published > since)
    query = query.order_by(PostRow.published.desc(), PostRow.id.desc()).offset(offset)
    if limit is not None:
        query = query.limit(limit)
    return _load(session, list(session.scalars(query)))


def _through(link: Any, condition: Any) -> Select[tuple[PostRow]]:
    # Filtering on the link table's own copy of `published` lets the (slug, published) index do the work.
    return select(PostRow).join(link, and_(link.c.post_id == PostRow.id, condition))


def posts_in_window(
    session: Session, since: datetime, until: datetime, themes: Collection[str] | None = None
) -> list[Post]:
    """Posts published in ``(since, until]``, newest first; with ``themes``, only those on one of them."""
    query = select(PostRow).where(PostRow.published > since, PostRow.published <= until)
    if themes is not None:
        on_theme = select(_post_themes.c.post_id).where(
            _post_themes.c.theme.in_(list(themes)),
            _post_themes.c.published > since,
            _post_themes.c.published <= until,
        )
        query = query.where(PostRow.id.in_(on_theme))
    query = query.order_by(PostRow.published.desc(), PostRow.id.desc())
    return _load(session, list(session.scalars(query)))


def count_posts(session: Session) -> int:
    """How many posts the store holds (published or not)."""
    return session.scalar(select(func.count()).select_from(PostRow)) or 0


def theme_counts(session: Session, now: datetime) -> dict[str, int]:
    """Published posts per theme slug."""
    query = (
        select(_post_themes.c.theme, func.count())
        .where(_post_themes.c.published <= now)
        .group_by(_post_themes.c.theme)
    )
    return {theme: count for theme, count in session.execute(query)}


def _load(session: Session, rows: list[PostRow]) -> list[Post]:
    """Turn rows into core Posts with their authors, themes and regions (three queries, whatever the count)."""
    ids = [row.id for row in rows]
    authors: dict[int, list[Author]] = {i: [] for i in ids}
    themes: dict[int, list[str]] = {i: [] for i in ids}
    regions: dict[int, list[str]] = {i: [] for i in ids}
    for chunk in _chunks(ids):
        author_query = (
            select(_post_authors.c.post_id, AuthorRow.slug, AuthorRow.name)
            .join(AuthorRow, AuthorRow.id == _post_authors.c.author_id)
            .where(_post_authors.c.post_id.in_(chunk))
            .order_by(_post_authors.c.post_id, _post_authors.c.position)
        )
        for post_id, slug, name in session.execute(author_query):
            authors[post_id].append(Author(slug, name))
        for table, column, target in (
            (_post_themes, _post_themes.c.theme, themes),
            (_post_regions, _post_regions.c.region, regions),
        ):
            query = (
                select(table.c.post_id, column)
                .where(table.c.post_id.in_(chunk))
                .order_by(table.c.post_id, table.c.position)
            )
            for post_id, slug in session.execute(query):
                target[post_id].append(slug)
    return [
        Post(
            guid=row.guid,
            title=row.title,
            url=row.url,
            summary=row.summary,
            content_html=row.content_html,
            published=row.published,
            updated=row.updated,
            language=row.language,
            authors=tuple(authors[row.id]),
            themes=tuple(themes[row.id]),
            regions=tuple(regions[row.id]),
            image=Image(row.image_url, row.image_alt) if row.image_url else None,
        )
        for row in rows
    ]


def _chunks(values: list[Any]) -> Iterable[list[Any]]:
    for start in range(0, len(values), _IN_CHUNK):
        yield values[start : start + _IN_CHUNK]
