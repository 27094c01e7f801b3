"""The feed build: which documents changed since the last build, written on two cores, with their archive pages.

Subscription documents hold the newest ``[feeds] items`` posts; older posts stay reachable through RFC 5005
archive pages. Only documents whose bytes changed are rewritten; dates come from the posts, never the clock.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from syndication import __version__
from syndication.config import FeedSettings, Settings
from syndication.core.models import Post, Region
from syndication.feeds.catalog import CONTENT_TYPES, FORMATS, Feed, FeedDocument, Format, Site, feeds_of, updated_of
from syndication.feeds.directory import render_index, render_opml
from syndication.feeds.json_feed import render_json
from syndication.feeds.output import FeedOutput
from syndication.feeds.rss_atom import render_rss_and_atom
from syndication.feeds.websub import notify_hub
from syndication.runtime.workers import worker_context
from syndication.store import database
from syndication.store import posts as post_store

_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
# How long the feeds an edited post left are remembered. An output directory last built longer ago than this
# rebuilds every subscription document instead of asking which feeds were left (the answer may be gone).
DEPARTURES_KEPT = timedelta(days=30)


@dataclass
class FeedBuildReport:
    """What one feed build did."""

    directory: Path
    full: bool
    feeds: int = 0
    written: list[str] = field(default_factory=list)
    unchanged: int = 0
    hub_refused: list[str] = field(default_factory=list)

    @property
    def archive_pages_written(self) -> int:
        """How many archive pages were written."""
        return sum(1 for path in self.written if path.startswith("archive/"))


def feed_site(settings: Settings) -> Site:
    """The site as the feed writers see it."""
    return Site(
        title=settings.site.title,
        base_url=settings.site.base_url,
        language=settings.site.language,
        themes=settings.theme_list,
        regions=settings.region_list,
        full_content=settings.feeds.content == "full",
        hub=settings.feeds.websub_hub,
    )


def build_feeds(
    settings: Settings,
    engine: Engine,
    now: datetime,
    directory: Path | None = None,
    *,
    full: bool = False,
    archives: bool = True,
) -> FeedBuildReport:
    """Write every feed that changed since the last build (or all of them), then the manifest.

    Subscription documents hold the newest ``[feeds] items`` posts; older posts stay reachable through RFC 5005
    archive pages of ``archive_page_size`` posts, oldest first, which never change once full. Only documents
    whose bytes changed are rewritten; dates come from the posts, never the clock, so a build with nothing new
    leaves every file as it was. ``archives=False`` leaves archive pages for a later build (a first build of a
    large store can then serve its subscription documents at once).
    """
    config = settings.feeds
    with FeedOutput(directory or config.output_dir) as output:
        site = feed_site(settings)
        fingerprint = _feed_fingerprint(settings)
        previous = output.state
        with database.transaction(engine) as session:
            authors = post_store.authors_with_posts(session, now)
            if not site.regions:
                site = replace(site, regions=tuple(Region(slug, slug.replace("-", " ").title()) for slug in
                                                   post_store.region_slugs(session, now)))  # fmt: skip
            feeds = feeds_of(site, authors)
            incremental = not full and previous.get("fingerprint") == fingerprint
            report = FeedBuildReport(output.directory, full=not incremental)
            newest_overall = post_store.newest_posts(session, now=now, limit=1)
            fallback = newest_overall[0].updated if newest_overall else _EPOCH
            archived: dict[str, int] = dict(previous.get("archived", {})) if incremental else {}
            changed, feeds_to_build = _changes_since(session, output, feeds, now) if incremental else ([], feeds)
            job = _FeedJob(settings, output.directory, site, now, fallback, archived, changed, archives)
            done = _build_feeds_on_two_cores(session, output, job, feeds_to_build)
            report.feeds, report.written, report.unchanged = done.feeds, done.written, done.unchanged
            changed_subscriptions = done.changed_urls
            archived.update(done.archived)
            last_change, seen_at_change = post_store.last_change(session)
            post_store.forget_departures(session, before=now - DEPARTURES_KEPT)
        updated = fallback
        output.write("feeds.opml", render_opml(site, feeds, updated), CONTENT_TYPES["opml"], updated)
        index = render_index(site, feeds, settings.web.templates_dir)
        output.write("index.html", index, CONTENT_TYPES["html"], updated)
        output.save(
            {
                "fingerprint": fingerprint,
                "changed_through": (last_change or _EPOCH).isoformat(),
                "seen_at_change": seen_at_change,
                "published_through": now.isoformat(),
                "archived": archived,
            }
        )
    if site.hub and changed_subscriptions:
        report.hub_refused = notify_hub(site.hub, changed_subscriptions)
    return report


def _changes_since(
    session: Session, output: FeedOutput, feeds: list[Feed], now: datetime
) -> tuple[list[Post], list[Feed]]:
    """The posts changed since the last build, and the feeds to rebuild: those the changes touch or left, and
    any whose documents are missing."""
    previous = output.state
    changed_since = datetime.fromisoformat(previous["changed_through"])
    last_build = datetime.fromisoformat(previous["published_through"])
    changed = post_store.changed_posts(
        session,
        # Posts are written by one gather at a time (the scheduler's leader or a command), so the newest change
        # the last build saw, with the posts written at that moment, is an exact high-water mark.
        changed_since=changed_since,
        already_seen=previous.get("seen_at_change", []),
        published_after=last_build,
        now=now,
    )
    if last_build < now - DEPARTURES_KEPT:
        return changed, feeds  # the feeds edits left since then may be forgotten: rebuild them all
    touched = _feeds_touched(changed)
    # A feed an edited post left must drop it: rebuild those too.
    touched |= post_store.departures_since(session, changed_since)
    rebuild = [
        feed
        for feed in feeds
        if (feed.dimension, feed.slug) in touched or not all(output.knows(feed.document_path(fmt)) for fmt in FORMATS)
    ]
    return changed, rebuild


def _scope(feed: Feed) -> post_store.Scope:
    return post_store.Scope(
        theme=feed.slug if feed.dimension == "theme" else None,
        region=feed.slug if feed.dimension == "region" else None,
        author=feed.slug if feed.dimension == "author" else None,
    )


def _feeds_touched(posts: Iterable[Post]) -> set[tuple[str, str | None]]:
    touched: set[tuple[str, str | None]] = set()
    for post in posts:
        touched.add(("site", None))
        touched.update(("theme", slug) for slug in post.themes)
        touched.update(("region", slug) for slug in post.regions)
        touched.update(("author", author.slug) for author in post.authors)
    return touched


@dataclass(frozen=True)
class _FeedJob:
    """What building any feed needs, picklable so a worker process can build a share of them."""

    settings: Settings
    directory: Path
    site: Site
    now: datetime
    fallback: datetime
    archived: dict[str, int]
    changed: list[Post]
    archives: bool


@dataclass
class _FeedsDone:
    """What building some feeds did."""

    feeds: int = 0
    written: list[str] = field(default_factory=list)
    unchanged: int = 0
    changed_urls: list[str] = field(default_factory=list)
    archived: dict[str, int] = field(default_factory=dict)
    documents: dict[str, dict[str, Any]] = field(default_factory=dict)

    def merge(self, other: _FeedsDone) -> None:
        self.feeds += other.feeds
        self.written += other.written
        self.unchanged += other.unchanged
        self.changed_urls += other.changed_urls
        self.archived.update(other.archived)


# Below this many feeds a worker process costs more to start than it saves.
_PARALLEL_FROM_FEEDS = 64


def _build_feeds_on_two_cores(session: Session, output: FeedOutput, job: _FeedJob, feeds: list[Feed]) -> _FeedsDone:
    """Build ``feeds``; a large build shares them with a worker process that has its own connection.

    Each process claims the next feed from a shared counter, so the worker's start-up time and a busy core even
    out on their own (a fixed half each left one process waiting a second for the other).
    """
    if len(feeds) < _PARALLEL_FROM_FEEDS or (os.cpu_count() or 1) < 2:
        return _build_feeds(session, output, job, feeds)
    context = worker_context()
    next_feed = context.Value("i", 0)
    with ProcessPoolExecutor(max_workers=1, mp_context=context, initializer=_share_counter,
                             initargs=(next_feed,)) as pool:  # fmt: skip
        future = pool.submit(_build_feeds_in_worker, job, feeds, output.documents)
        done = _build_feeds(session, output, job, _claimed(feeds, next_feed))
        other = future.result()
    output.documents.update(other.documents)
    done.merge(other)
    return done


# The worker's end of the shared counter: a synchronised value reaches a process only as it starts.
_next_feed: Any = None


def _share_counter(counter: Any) -> None:
    global _next_feed
    _next_feed = counter


def _claimed(feeds: Sequence[Feed], counter: Any) -> Iterator[Feed]:
    """The feeds this process claims, one at a time, until none is left."""
    while True:
        with counter.get_lock():
            index = counter.value
            counter.value = index + 1
        if index >= len(feeds):
            return
        yield feeds[index]


def _build_feeds_in_worker(job: _FeedJob, feeds: list[Feed], documents: dict[str, dict[str, Any]]) -> _FeedsDone:
    engine = database.open_engine(job.settings.database.url)
    try:
        with FeedOutput(job.directory, documents=documents) as output, database.transaction(engine) as session:
            done = _build_feeds(session, output, job, _claimed(feeds, _next_feed))
            output.flush()  # the parent writes the manifest: these files must be there first
        done.documents = {path: output.documents[path] for path in output.touched}
        return done
    finally:
        engine.dispose()


def _build_feeds(session: Session, output: FeedOutput, job: _FeedJob, feeds: Iterable[Feed]) -> _FeedsDone:
    """Write each feed's subscription documents and the archive pages that are new or changed."""
    config = job.settings.feeds
    done = _FeedsDone()
    loaded: dict[int, Post] = {}  # a post is in several feeds (site, themes, region, authors): read it once
    for feed in feeds:
        done.feeds += 1
        scope = _scope(feed)
        posts = post_store.newest_posts(session, now=job.now, limit=config.items, theme=scope.theme,
                                        region=scope.region, author=scope.author, loaded=loaded)  # fmt: skip
        full_pages = post_store.count_published(session, scope, job.now) // config.archive_page_size
        updated = updated_of(posts, job.fallback)
        subscription = {fmt: FeedDocument(job.site, feed, fmt, posts, updated, prev_archive_page=full_pages or None)
                        for fmt in FORMATS}  # fmt: skip
        done.changed_urls += _write_feed(output, subscription, done)
        if not job.archives:
            continue
        pages = set(range(job.archived.get(feed.path, 0) + 1, full_pages + 1))
        for post in job.changed:
            if post.published <= job.now and (feed.dimension, feed.slug) in _feeds_touched([post]):
                before = post_store.count_published(session, scope, job.now, before=post.published)
                pages.add(before // config.archive_page_size + 1)
        _write_archive_pages(session, output, done, job.site, feed, scope, job.now, sorted(pages), full_pages, config)
        done.archived[feed.path] = full_pages
    return done


def _write_feed(
    output: FeedOutput, documents: Mapping[Format, FeedDocument], done: _FeedsDone, *, immutable: bool = False
) -> list[str]:
    """Write one feed's documents in every format; returns the URLs of those that changed."""
    rss, atom = render_rss_and_atom(documents["rss"], documents["atom"])
    bodies = {"rss": rss, "atom": atom, "json": render_json(documents["json"])}
    changed = []
    for fmt, document in documents.items():
        path = document.path
        if output.write(path, bodies[fmt], CONTENT_TYPES[fmt], document.updated, immutable=immutable):
            done.written.append(path)
            changed.append(document.self_url)
        else:
            done.unchanged += 1
    return changed


def _write_archive_pages(
    session: Session,
    output: FeedOutput,
    report: _FeedsDone,
    site: Site,
    feed: Feed,
    scope: post_store.Scope,
    now: datetime,
    pages: list[int],
    full_pages: int,
    config: FeedSettings,
) -> None:
    """Write the given full archive pages; consecutive pages are read in one pass over the index."""
    wanted = [page for page in pages if 1 <= page <= full_pages]
    index = 0
    while index < len(wanted):
        run_end = index
        while run_end + 1 < len(wanted) and wanted[run_end + 1] == wanted[run_end] + 1:
            run_end += 1
        first = wanted[index]
        pages_read = post_store.oldest_first(session, scope, now, config.archive_page_size, first_page=first)
        for page, posts in zip(range(first, wanted[run_end] + 1), pages_read, strict=False):
            newest_first = list(reversed(posts))
            updated = updated_of(newest_first, _EPOCH)
            documents = {fmt: FeedDocument(site, feed, fmt, newest_first, updated, archive_page=page,
                                           prev_archive_page=page - 1 or None) for fmt in FORMATS}  # fmt: skip
            _write_feed(output, documents, report, immutable=True)
        index = run_end + 1


def _feed_fingerprint(settings: Settings) -> str:
    """Everything besides the posts that shapes a feed's bytes; when it changes, every document is rebuilt."""
    shape = (
        __version__,
        settings.site.model_dump_json(),
        [t.model_dump_json() for t in settings.themes],
        [r.model_dump_json() for r in settings.regions],
        settings.feeds.model_dump_json(exclude={"output_dir", "max_age_seconds"}),
    )
    return hashlib.sha256(repr(shape).encode()).hexdigest()[:16]
