"""Storing and reading posts. Functions take a Session and never commit: the caller owns the transaction."""

from __future__ import annotations

import functools
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

import orjson
from sqlalchemy import (
    Integer,
    Select,
    and_,
    bindparam,
    delete,
    func,
    insert,
    literal,
    literal_column,
    or_,
    select,
    union_all,
    update,
)
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import BindParameter

from syndication.core.models import Author, Image, Post
from syndication.core.slugs import author_slug, name_key
from syndication.store.schema import (
    AuthorRow,
    Base,
    EditionPostRow,
    FeedArchiveCutRow,
    FeedDepartureRow,
    PostAuthorRow,
    PostRegionRow,
    PostRow,
    PostThemeRow,
)

_posts = Base.metadata.tables[PostRow.__tablename__]
_authors = Base.metadata.tables[AuthorRow.__tablename__]
_post_authors = Base.metadata.tables[PostAuthorRow.__tablename__]
_post_themes = Base.metadata.tables[PostThemeRow.__tablename__]
_post_regions = Base.metadata.tables[PostRegionRow.__tablename__]
_departures = Base.metadata.tables[FeedDepartureRow.__tablename__]
_cuts = Base.metadata.tables[FeedArchiveCutRow.__tablename__]

# SQLite allows 32,766 bound parameters per statement; stay well under it for IN lists.
_IN_CHUNK = 900


@dataclass(frozen=True, slots=True)
class UpsertOutcome:
    """How many posts a batch added, changed in place, or left alone."""

    added: int
    updated: int
    unchanged: int


def upsert_posts(session: Session, posts: Sequence[Post], now: datetime, source: str | None = None) -> UpsertOutcome:
    """Add new posts and update those whose ``updated`` is newer than the stored one; the rest is unchanged.

    Idempotent: the same batch twice adds nothing the second time. Within the batch, the newest version of
    a guid wins. The batch is stamped later than any post written before (``changed_at``), even when the clock
    reads the same or less: an incremental feed build looks for the posts written after the last one it saw.
    """
    now = _after_last_change(session, now)
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
    known = _known_authors(session, [author for post in changed for author in post.authors])
    if to_add:
        # A plain executemany is several times faster than INSERT .. RETURNING in batches; read the ids back.
        session.execute(insert(_posts), [_post_values(post, source, now, known) for post in to_add])
        new_ids = _existing_versions(session, [post.guid for post in to_add])
        _insert_links(session, [(new_ids[post.guid][0], post) for post in to_add], known)
    if to_update:
        ids = [post_id for post_id, _ in to_update]
        _note_departures(session, ids, now)  # before the update: the places the posts held are about to move
        session.execute(
            update(_posts).where(_posts.c.id == bindparam("_id")),
            [{"_id": post_id, **_post_values(post, source, now, known)} for post_id, post in to_update],
        )
        for chunk in _chunks(ids):
            for table in (_post_authors, _post_themes, _post_regions):
                session.execute(delete(table).where(table.c.post_id.in_(chunk)))
        _insert_links(session, to_update, known)
    return UpsertOutcome(len(to_add), len(to_update), len(posts) - len(to_add) - len(to_update))


def _after_last_change(session: Session, now: datetime) -> datetime:
    """``now``, or a microsecond after the newest ``changed_at`` if the clock does not read later than it."""
    latest: datetime | None = session.scalar(select(func.max(_posts.c.changed_at)))
    return now if latest is None or now > latest else latest + timedelta(microseconds=1)


def _note_departures(session: Session, post_ids: Sequence[int], now: datetime) -> None:
    """Record every place in a feed these posts hold now (the site feed's, and each theme's, region's and
    author's, at their present date): they are about to be edited or deleted, and the archive pages that show
    them must be rewritten wherever they go."""
    rows: list[dict[str, Any]] = []
    for chunk in _chunks(list(post_ids)):
        query = select(_posts.c.id, _posts.c.published, _posts.c.language, _posts.c.links).where(_posts.c.id.in_(chunk))
        for post_id, published, language, links in session.execute(query):
            authors, themes, regions = _decode_links(links)
            places = [("site", ""), ("language", language), *(("theme", t) for t in themes),
                      *(("region", r) for r in regions), *(("author", a.slug) for a in authors)]  # fmt: skip
            rows += [{"changed_at": now, "dimension": dimension, "slug": slug, "published": published,
                      "post_id": post_id} for dimension, slug in places]  # fmt: skip
    if rows:
        session.execute(insert(_departures), rows)


def delete_posts(session: Session, guids: Collection[str], now: datetime) -> int:
    """Delete the posts with these guids (their places in the feeds recorded first); returns how many went."""
    ids = [post_id for post_id, _ in _existing_versions(session, list(guids)).values()]
    if not ids:
        return 0
    _note_departures(session, ids, _after_last_change(session, now))
    for chunk in _chunks(ids):
        for table in (_post_authors, _post_themes, _post_regions, _posts):
            column = table.c.id if table is _posts else table.c.post_id
            session.execute(delete(table).where(column.in_(chunk)))
    # The deletion is a change like an edit: the next incremental build must look (see ``last_change``).
    return len(ids)


Key = tuple[datetime, int]
"""A post's place in a feed's order: (published, post id). Feeds list by it, archive pages are bounded by it."""

Departure = tuple[str, str, Key | None]
"""A place a post left: (dimension, slug, key), the key None when it was not recorded (older rows)."""


def departures_since(session: Session, changed_since: datetime) -> set[Departure]:
    """The places in feeds that edited or deleted posts left at or after ``changed_since``."""
    query = select(_departures.c.dimension, _departures.c.slug, _departures.c.published, _departures.c.post_id).where(
        _departures.c.changed_at >= changed_since
    )
    return {(dimension, slug, (published, post_id) if published is not None and post_id is not None else None)
            for dimension, slug, published, post_id in session.execute(query)}  # fmt: skip


def forget_departures(session: Session, before: datetime) -> int:
    """Delete the departures recorded before ``before``; returns how many went."""
    result = session.execute(delete(_departures).where(_departures.c.changed_at < before))
    return int(getattr(result, "rowcount", 0) or 0)


def post_versions(session: Session, guids: Collection[str]) -> dict[str, tuple[int, datetime]]:
    """The id and ``updated`` of each stored post of these guids (published or not), by guid."""
    return _existing_versions(session, list(guids))


def _existing_versions(session: Session, guids: list[str]) -> dict[str, tuple[int, datetime]]:
    found: dict[str, tuple[int, datetime]] = {}
    for chunk in _chunks(guids):
        query = select(PostRow.id, PostRow.guid, PostRow.updated).where(PostRow.guid.in_(chunk))
        for post_id, guid, updated in session.execute(query):
            found[guid] = (post_id, updated)
    return found


def _known_authors(session: Session, authors: Iterable[Author]) -> dict[str, tuple[int, Author]]:
    """Each author's id and stored self (slug and first spelling) by name key, adding those the store has not
    met: a new author gets a slug no other author has (``core.slugs.author_slug``), kept for good."""
    wanted = {name_key(author.name): author.name for author in authors}
    known: dict[str, tuple[int, Author]] = {}

    def read(keys: list[str]) -> None:
        for chunk in _chunks(keys):
            query = select(AuthorRow.name_key, AuthorRow.id, AuthorRow.slug, AuthorRow.name).where(
                AuthorRow.name_key.in_(chunk)
            )
            known.update(
                (key, (author_id, Author(slug, name))) for key, author_id, slug, name in session.execute(query)
            )

    read(list(wanted))
    missing = [key for key in wanted if key not in known]
    if missing:
        bases = {author_slug(wanted[key], ()) for key in missing}
        taken = _slugs_like(session, bases)
        rows = []
        for key in missing:
            slug = author_slug(wanted[key], taken)
            taken.add(slug)
            rows.append({"slug": slug, "name": wanted[key], "name_key": key})
        session.execute(insert(_authors), rows)
        read(missing)
    return known


def _slugs_like(session: Session, bases: Collection[str]) -> set[str]:
    """The author slugs stored that are one of ``bases`` or begin with one and a hyphen (its hashed forms)."""
    taken: set[str] = set()
    for base in bases:
        query = select(AuthorRow.slug).where(or_(AuthorRow.slug == base, AuthorRow.slug.startswith(f"{base}-")))
        taken.update(session.scalars(query))
    return taken


def _credited(post: Post, known: dict[str, tuple[int, Author]]) -> list[tuple[int, Author]]:
    """The post's authors as stored: by id, under their stored slug and name, each once."""
    credited: dict[int, Author] = {}
    for author in post.authors:
        author_id, stored = known[name_key(author.name)]
        credited.setdefault(author_id, stored)
    return list(credited.items())


def encode_links(authors: Sequence[Author], themes: Sequence[str], regions: Sequence[str]) -> str:
    """The ``posts.links`` copy of a post's link table rows (migration 0007 writes the same for older rows)."""
    return orjson.dumps({"a": [[a.slug, a.name] for a in authors], "t": list(themes), "r": list(regions)}).decode()


def _decode_links(links: str) -> tuple[tuple[Author, ...], tuple[str, ...], tuple[str, ...]]:
    data = orjson.loads(links)
    return tuple(Author(slug, name) for slug, name in data["a"]), tuple(data["t"]), tuple(data["r"])


def _post_values(post: Post, source: str | None, now: datetime, known: dict[str, tuple[int, Author]]) -> dict[str, Any]:
    authors = [author for _, author in _credited(post, known)]
    return {
        "links": encode_links(authors, post.themes, post.regions),
        "changed_at": now,
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


def _insert_links(session: Session, posts: Sequence[tuple[int, Post]], known: dict[str, tuple[int, Author]]) -> None:
    authors, themes, regions = [], [], []
    for post_id, post in posts:
        authors += [
            {"post_id": post_id, "author_id": author_id, "position": i, "published": post.published}
            for i, (author_id, _author) in enumerate(_credited(post, known))
        ]
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


ScopeKind = Literal["site", "theme", "region", "author", "language"]


@dataclass(frozen=True, slots=True)
class Scope:
    """Which posts a listing covers: all of them, or those of one theme, region or author (by slug), or of one
    language (by its canonical tag)."""

    theme: str | None = None
    region: str | None = None
    author: str | None = None
    language: str | None = None

    @property
    def kind(self) -> ScopeKind:
        """Which of the five kinds of listing this is."""
        if self.theme is not None:
            return "theme"
        if self.region is not None:
            return "region"
        if self.language is not None:
            return "language"
        return "author" if self.author is not None else "site"

    @property
    def params(self) -> dict[str, Any]:
        """The bound parameters the listing's conditions take (its slug)."""
        return {"slug": self.theme or self.region or self.author or self.language}


# Listing statements are built once per shape and run with parameters: a feed build runs about a thousand of
# them, and building and keying a statement cost three times what SQLite takes to answer it.
_SLUG: BindParameter[str] = bindparam("slug")
_NOW: BindParameter[datetime] = bindparam("now")


@functools.cache
def _scope_columns(kind: ScopeKind) -> tuple[Any, Any, tuple[Any, ...]]:
    """(published column, post id column, conditions on ``:slug``) to filter and order a listing of ``kind`` by.

    A scoped listing reads the link table's own (slug, published, post_id) index: one range scan, no sort.
    """
    if kind == "theme":
        return _post_themes.c.published, _post_themes.c.post_id, (_post_themes.c.theme == _SLUG,)
    if kind == "region":
        return _post_regions.c.published, _post_regions.c.post_id, (_post_regions.c.region == _SLUG,)
    if kind == "author":
        author_id = select(AuthorRow.id).where(AuthorRow.slug == _SLUG).scalar_subquery()
        return _post_authors.c.published, _post_authors.c.post_id, (_post_authors.c.author_id == author_id,)
    if kind == "language":
        return _posts.c.published, _posts.c.id, (_posts.c.language == _SLUG,)
    return _posts.c.published, _posts.c.id, ()


@functools.cache
def _newest_ids_query(kind: ScopeKind, bounded_below: bool, limited: bool) -> Select[int]:
    published, post_id, conditions = _scope_columns(kind)
    query = select(post_id).where(*conditions, published <= _NOW)
    if bounded_below:
        query = query.where(published > bindparam("since"))
    query = query.order_by(published.desc(), post_id.desc()).offset(bindparam("offset", type_=Integer))
    return query.limit(bindparam("limit", type_=Integer)) if limited else query


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
    loaded: dict[int, Post] | None = None,
) -> list[Post]:
    """Published posts (``published <= now``), newest first, optionally of one theme, region or author slug.

    ``loaded`` is a cache of posts by id shared across calls: a build that reads many overlapping feeds then
    loads each post once.
    """
    scope = Scope(theme, region, author)
    query = _newest_ids_query(scope.kind, since is not None, limit is not None)
    parameters = scope.params | {"now": now, "since": since, "offset": offset, "limit": limit}
    return _load_cached(session, list(session.connection().scalars(query, parameters)), loaded)


def _load_cached(session: Session, ids: list[int], loaded: dict[int, Post] | None) -> list[Post]:
    """The posts with these ids, in this order, read through the ``loaded`` cache when there is one."""
    if loaded is None:
        return _load(session, ids)
    missing = [post_id for post_id in ids if post_id not in loaded]
    if missing:
        found_ids, found = _load_with_ids(session, missing)
        loaded.update(zip(found_ids, found, strict=True))
    return [loaded[post_id] for post_id in ids]


@functools.cache
def _bounded_query(
    kind: ScopeKind, what: Literal["keys", "count"], lower: bool, upper: bool, limited: bool = False
) -> Select[Any]:
    """Published posts of a scope with ``:lower <= key < :upper`` (either bound optional): their keys, oldest
    first, or their number. Each bound is a range on ``published`` (what the index is searched by) and a filter
    on the post id among posts of that very moment: an OR of the two alone made SQLite scan every post."""
    published, post_id, conditions = _scope_columns(kind)
    query = select(func.count()) if what == "count" else select(published, post_id).order_by(published, post_id)
    query = query.where(*conditions, published <= _NOW)
    if lower:
        low_published: BindParameter[datetime] = bindparam("low_published")
        low_id: BindParameter[int] = bindparam("low_id", type_=Integer)
        query = query.where(published >= low_published, or_(published > low_published, post_id >= low_id))
    if upper:
        high_published: BindParameter[datetime] = bindparam("high_published")
        high_id: BindParameter[int] = bindparam("high_id", type_=Integer)
        query = query.where(published <= high_published, or_(published < high_published, post_id < high_id))
    return query.limit(bindparam("limit", type_=Integer)) if limited else query


def _bounds(scope: Scope, now: datetime, lower: Key | None, upper: Key | None) -> dict[str, Any]:
    parameters = scope.params | {"now": now}
    if lower is not None:
        parameters |= {"low_published": lower[0], "low_id": lower[1]}
    if upper is not None:
        parameters |= {"high_published": upper[0], "high_id": upper[1]}
    return parameters


def keys_between(
    session: Session, scope: Scope, now: datetime, lower: Key | None, upper: Key | None, limit: int | None = None
) -> list[Key]:
    """The keys of the published posts of ``scope`` from ``lower`` (included) to ``upper`` (excluded), oldest
    first, at most ``limit``; a bound of None is open."""
    query = _bounded_query(scope.kind, "keys", lower is not None, upper is not None, limit is not None)
    parameters = _bounds(scope, now, lower, upper) | {"limit": limit}
    return [(published, post_id) for published, post_id in session.connection().execute(query, parameters)]


def count_between(session: Session, scope: Scope, now: datetime, lower: Key | None, upper: Key | None) -> int:
    """How many published posts of ``scope`` lie from ``lower`` (included) to ``upper`` (excluded)."""
    query = _bounded_query(scope.kind, "count", lower is not None, upper is not None)
    return session.connection().scalar(query, _bounds(scope, now, lower, upper)) or 0


def posts_between(
    session: Session,
    scope: Scope,
    now: datetime,
    lower: Key | None,
    upper: Key | None,
    loaded: dict[int, Post] | None = None,
) -> list[Post]:
    """The published posts of ``scope`` from ``lower`` (included) to ``upper`` (excluded), newest first;
    ``loaded`` as for ``newest_posts``."""
    newest_first = [post_id for _, post_id in reversed(keys_between(session, scope, now, lower, upper))]
    return _load_cached(session, newest_first, loaded)


def archive_cuts(session: Session, feed: str) -> list[Key]:
    """Where the archive pages of ``feed`` (its path) begin, oldest first; the first page has no cut."""
    query = (
        select(_cuts.c.published, _cuts.c.post_id)
        .where(_cuts.c.feed == feed)
        .order_by(_cuts.c.published, _cuts.c.post_id)
    )
    return [(published, post_id) for published, post_id in session.execute(query)]


def add_archive_cuts(session: Session, feed: str, cuts: Collection[Key]) -> None:
    """Add cuts to ``feed``'s archive (a cut already there is left as it is: two builds agree on cuts)."""
    known = set(archive_cuts(session, feed))
    rows = [{"feed": feed, "published": published, "post_id": post_id}
            for published, post_id in sorted(set(cuts) - known)]  # fmt: skip
    if rows:
        session.execute(insert(_cuts), rows)


def authors_with_posts(session: Session, now: datetime) -> list[Author]:
    """Every author credited on at least one published post, by slug."""
    query = (
        select(AuthorRow.slug, AuthorRow.name)
        .where(
            select(_post_authors.c.post_id)
            .where(_post_authors.c.author_id == AuthorRow.id, _post_authors.c.published <= now)
            .exists()
        )
        .order_by(AuthorRow.slug)
    )
    return [Author(slug, name) for slug, name in session.execute(query)]


def languages_with_posts(session: Session, now: datetime) -> list[str]:
    """Every language (canonical tag) of a published post, sorted."""
    query = select(_posts.c.language).where(_posts.c.published <= now).distinct().order_by(_posts.c.language)
    return list(session.scalars(query))


def changed_posts(
    session: Session,
    *,
    changed_since: datetime,
    already_seen: Collection[str],
    published_after: datetime,
    now: datetime,
) -> list[tuple[int, Post]]:
    """Posts (with their ids) the store wrote at or after ``changed_since`` (less the guids ``already_seen`` at
    exactly that moment), or whose publication time came since ``published_after``: what a feed rebuild must look at.

    A post written since and now dated in the future is among them: it was unpublished or rescheduled, and the
    feeds that showed it must drop it.
    """
    query = select(_posts.c.id, _posts.c.guid, _posts.c.published, _posts.c.changed_at).where(
        or_(
            _posts.c.changed_at >= changed_since,
            and_(_posts.c.published > published_after, _posts.c.published <= now),
        ),
    )
    seen = set(already_seen)
    # Sort out the posts the last build saw before loading any: a whole batch can share one moment.
    wanted = [post_id for post_id, guid, published, changed_at in session.execute(query)
              if changed_at > changed_since or guid not in seen or published_after < published <= now]  # fmt: skip
    return list(zip(*_load_with_ids(session, wanted), strict=True))


def region_slugs(session: Session, now: datetime) -> list[str]:
    """Every region slug of a published post."""
    query = (
        select(_post_regions.c.region)
        .where(_post_regions.c.published <= now)
        .distinct()
        .order_by(_post_regions.c.region)
    )
    return list(session.scalars(query))


def last_change(session: Session) -> tuple[datetime | None, list[str]]:
    """When the store last wrote a post, and the guids written at that very moment.

    Both together make an exact high-water mark: a post written later in the same clock tick is still found.
    """
    moment: datetime | None = session.scalar(select(func.max(PostRow.changed_at)))
    if moment is None:
        return None, []
    return moment, list(session.scalars(select(PostRow.guid).where(PostRow.changed_at == moment)))


def change_marker(session: Session) -> str:
    """A value that any write of posts changes, read in one statement: the newest ``changed_at`` of the posts
    (every add or edit is stamped later than it, see ``upsert_posts``), their count, and the newest time and
    count of the recorded departures (every edit and deletion adds some, at whatever time the clock reads)."""
    newest_post = select(func.max(_posts.c.changed_at)).scalar_subquery()
    posts = select(func.count()).select_from(_posts).scalar_subquery()
    newest_departure = select(func.max(_departures.c.changed_at)).scalar_subquery()
    departures = select(func.count()).select_from(_departures).scalar_subquery()
    row = session.execute(select(newest_post, posts, newest_departure, departures)).one()
    return repr(tuple(row))


def published_between(session: Session, after: datetime, until: datetime) -> bool:
    """Whether any post's publication time is in ``(after, until]``: a scheduled post that came of age."""
    query = select(select(_posts.c.id).where(_posts.c.published > after, _posts.c.published <= until).exists())
    return bool(session.scalar(query))


def posts_in_window(
    session: Session, since: datetime, until: datetime, themes: Collection[str] | None = None
) -> list[Post]:
    """Posts published in ``(since, until]``, newest first; with ``themes``, only those on one of them."""
    if themes is None:
        query = select(_posts.c.id).where(_posts.c.published > since, _posts.c.published <= until)
    else:
        query = (
            select(_post_themes.c.post_id)
            .where(
                _post_themes.c.theme.in_(list(themes)),
                _post_themes.c.published > since,
                _post_themes.c.published <= until,
            )
            .distinct()
        )
    return _load(session, list(session.scalars(query)))


_edition_posts = Base.metadata.tables[EditionPostRow.__tablename__]


def unheld_posts(session: Session, cadence: str, after: datetime, until: datetime) -> tuple[list[int], list[Post]]:
    """The posts published in ``(after, until]`` that no edition of ``cadence`` holds, newest first, with their
    ids: what an edition of the cadence made now takes (``app.digests.edition_posts`` says with which bounds)."""
    held = (
        select(_edition_posts.c.post_id)
        .where(_edition_posts.c.cadence == cadence, _edition_posts.c.post_id == _posts.c.id)
        .exists()
    )
    query = select(_posts.c.id).where(_posts.c.published > after, _posts.c.published <= until, ~held)
    return _load_with_ids(session, list(session.scalars(query)))


def held_posts(session: Session, edition_id: int) -> list[Post]:
    """The posts an edition holds (``ledger.hold_posts``, when it was made), newest first, as they are now."""
    query = select(_edition_posts.c.post_id).where(_edition_posts.c.edition_id == edition_id)
    return _load(session, list(session.scalars(query)))


def count_posts(session: Session) -> int:
    """How many posts the store holds (published or not)."""
    return session.scalar(select(func.count()).select_from(PostRow)) or 0


def theme_counts(session: Session, now: datetime) -> dict[str, int]:
    """Published posts per theme slug."""
    query = (
        select(_post_themes.c.theme, func.count()).where(_post_themes.c.published <= now).group_by(_post_themes.c.theme)
    )
    return dict(session.execute(query).all())


# Built once with an expanding parameter: constructing these per call cost more than running them.
_IDS: BindParameter[list[int]] = bindparam("ids", expanding=True)
_LOAD_POSTS = select(
    _posts.c.id, _posts.c.guid, _posts.c.title, _posts.c.url, _posts.c.summary, _posts.c.content_html,
    _posts.c.published, _posts.c.updated, _posts.c.language, _posts.c.image_url, _posts.c.image_alt, _posts.c.links,
).where(_posts.c.id.in_(_IDS))  # fmt: skip
# Authors, themes and regions of many posts from the link tables, already in each post's order.
_LOAD_LINKS = union_all(
    select(_post_authors.c.post_id, literal("a"), AuthorRow.slug, AuthorRow.name, _post_authors.c.position)
    .join(AuthorRow, AuthorRow.id == _post_authors.c.author_id)
    .where(_post_authors.c.post_id.in_(_IDS)),
    select(_post_themes.c.post_id, literal("t"), _post_themes.c.theme, literal(""), _post_themes.c.position).where(
        _post_themes.c.post_id.in_(_IDS)
    ),
    select(_post_regions.c.post_id, literal("r"), _post_regions.c.region, literal(""), _post_regions.c.position).where(
        _post_regions.c.post_id.in_(_IDS)
    ),
).order_by(literal_column("position"))


def _load(session: Session, ids: list[int]) -> list[Post]:
    """The posts with these ids, newest first, with their authors, themes and regions (two queries a chunk)."""
    return _load_with_ids(session, ids)[1]


def _load_with_ids(session: Session, ids: list[int]) -> tuple[list[int], list[Post]]:
    """``_load``, with the id of each post answered alongside it."""
    rows: list[Any] = []
    connection = session.connection()  # Core statements: the ORM's execution layer would only add time
    for chunk in _chunks(ids):
        rows += connection.execute(_LOAD_POSTS, {"ids": chunk}).all()
    rows.sort(key=lambda row: (row[6], row[0]), reverse=True)
    posts = []
    loaded_ids = []
    for post_id, guid, title, url, summary, content, published, updated, language, image_url, image_alt, links in rows:
        loaded_ids.append(post_id)
        authors, themes, regions = _decode_links(links)
        posts.append(
            Post(
                guid=guid,
                title=title,
                url=url,
                summary=summary,
                content_html=content,
                published=published,
                updated=updated,
                language=language,
                authors=authors,
                themes=themes,
                regions=regions,
                image=Image(image_url, image_alt) if image_url else None,
            )
        )
    return loaded_ids, posts


def _chunks(values: list[Any]) -> Iterable[list[Any]]:
    for start in range(0, len(values), _IN_CHUNK):
        yield values[start : start + _IN_CHUNK]


def post_page(
    session: Session,
    *,
    now: datetime,
    limit: int,
    theme: str | None = None,
    region: str | None = None,
    author: str | None = None,
    language: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    before: Key | None = None,
) -> list[tuple[int, Post]]:
    """A page of the API's list of posts: at most ``limit`` published posts (with their ids), newest first, of all
    the filters given (theme, region and author by slug, a canonical language tag, published after ``since`` and
    by ``until``), that come after the key ``before`` (published, id) in that order."""
    published, post_id = _posts.c.published, _posts.c.id
    query = select(post_id).where(published <= now)
    if theme is not None:
        query = query.where(post_id.in_(select(_post_themes.c.post_id).where(_post_themes.c.theme == theme)))
    if region is not None:
        query = query.where(post_id.in_(select(_post_regions.c.post_id).where(_post_regions.c.region == region)))
    if author is not None:
        author_ids = select(AuthorRow.id).where(AuthorRow.slug == author)
        query = query.where(
            post_id.in_(select(_post_authors.c.post_id).where(_post_authors.c.author_id.in_(author_ids)))
        )
    if language is not None:
        query = query.where(_posts.c.language == language)
    if since is not None:
        query = query.where(published > since)
    if until is not None:
        query = query.where(published <= until)
    if before is not None:
        query = query.where(or_(published < before[0], and_(published == before[0], post_id < before[1])))
    ids = list(session.connection().scalars(query.order_by(published.desc(), post_id.desc()).limit(limit)))
    loaded_ids, posts = _load_with_ids(session, ids)
    return list(zip(loaded_ids, posts, strict=True))


def post_by_reference(session: Session, reference: str, now: datetime | None) -> tuple[int, Post] | None:
    """The post whose guid is ``reference`` (or, failing that, whose id it is), with its id; published by ``now``
    (None: whenever)."""
    published = [] if now is None else [_posts.c.published <= now]
    post_id = session.scalar(select(_posts.c.id).where(_posts.c.guid == reference, *published))
    if post_id is None and reference.isdigit() and len(reference) < 19:
        post_id = session.scalar(select(_posts.c.id).where(_posts.c.id == int(reference), *published))
    if post_id is None:
        return None
    loaded_ids, posts = _load_with_ids(session, [post_id])
    return (loaded_ids[0], posts[0]) if posts else None
