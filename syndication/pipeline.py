"""The use cases, and the one place that wires the adapters together.

The command line, the web app and the scheduler call these functions and nothing else of the adapters.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from syndication import __version__
from syndication.clock import Clock, system_clock
from syndication.config import FeedSettings, Settings
from syndication.core.digest import Digest, compose_digest
from syndication.core.models import GatherReport, Notice, Post, Region
from syndication.delivery.smtp import SmtpClient, send_one
from syndication.errors import SourceError
from syndication.feeds.catalog import CONTENT_TYPES, FORMATS, Feed, FeedDocument, Format, Site, feeds_of, updated_of
from syndication.feeds.directory import render_index, render_opml
from syndication.feeds.json_feed import render_json
from syndication.feeds.output import FeedOutput
from syndication.feeds.rss_atom import render_rss_and_atom
from syndication.feeds.websub import notify_hub
from syndication.mailing.message import Envelope, build_encoded, build_message
from syndication.mailing.render import Links, MailRenderer, RenderedEmail
from syndication.sources import open_source
from syndication.sources.base import CursorMoved, PullEvent, Rejected, Source, Warned
from syndication.sources.jsonl import read_jsonl_file
from syndication.sources.normalise import Vocabulary
from syndication.store import cursors, database
from syndication.store import posts as post_store
from syndication.workers import worker_context


@dataclass(frozen=True)
class Service:
    """Settings, an open store and a clock: what every use case needs."""

    settings: Settings
    engine: Engine
    clock: Clock = system_clock

    @classmethod
    def open(cls, settings: Settings, clock: Clock = system_clock, *, require_schema: bool = True) -> Service:
        """Open the store named by the settings, refusing one that is not initialised."""
        engine = database.open_engine(settings.database.url)
        if require_schema:
            try:
                database.require_current(engine)
            except BaseException:
                engine.dispose()
                raise
        return cls(settings, engine, clock)

    def __enter__(self) -> Service:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close every pooled database connection."""
        self.engine.dispose()

    @property
    def vocabulary(self) -> Vocabulary:
        """The themes, regions and defaults the sources check items against."""
        return Vocabulary(
            themes=self.settings.theme_list,
            regions=self.settings.region_list,
            language=self.settings.site.language,
            summary_words=self.settings.gather.summary_words,
        )


def init_store(settings: Settings) -> str:
    """Create or upgrade the store's schema; running it twice is harmless. Returns the schema revision."""
    engine = database.open_engine(settings.database.url)
    try:
        return database.upgrade(engine)
    finally:
        engine.dispose()


def gather(service: Service, source_names: Sequence[str] | None = None) -> list[GatherReport]:
    """Pull every configured source (or the named ones) into the store, one report per source."""
    chosen = [service.settings.source(n) for n in source_names] if source_names else service.settings.sources
    vocabulary = service.vocabulary
    return [_pull_into_store(service, open_source(entry, vocabulary)) for entry in chosen]


def import_file(service: Service, path: Path) -> GatherReport:
    """Import one JSON Lines file in full, without touching any source's cursor."""
    report = GatherReport(source=str(path))
    try:
        _store_events(
            service, report, read_jsonl_file(path, service.vocabulary), source_label="import", cursor_key=None
        )
    except SourceError as error:
        report.failure = str(error)
    return report


def _pull_into_store(service: Service, source: Source) -> GatherReport:
    report = GatherReport(source=source.name)
    with database.transaction(service.engine) as session:
        cursor = cursors.load_cursor(session, source.name)
    try:
        _store_events(service, report, source.pull(cursor), source_label=source.name, cursor_key=source.name)
    except SourceError as error:
        report.failure = str(error)
    return report


def _store_events(
    service: Service,
    report: GatherReport,
    events: Iterable[PullEvent],
    *,
    source_label: str,
    cursor_key: str | None,
) -> None:
    """Store posts in batches, one transaction each; the cursor commits with the last batch only.

    A pull that fails half-way keeps the batches already stored and leaves the cursor where it was, so the
    next pull reads the rest again (storing is idempotent).
    """
    batch: list[Post] = []
    now = service.clock()
    size = service.settings.gather.batch_size
    try:
        for event in events:
            if isinstance(event, Post):
                report.seen += 1
                if event.published > now:
                    report.warnings.append(Notice(report.source, event.guid, "dated in the future; held until then"))
                batch.append(event)
                if len(batch) >= size:
                    _store_batch(service, report, batch, source_label, None, None)
                    batch = []
            elif isinstance(event, Rejected):
                report.rejections.append(Notice(report.source, event.where, event.reason))
            elif isinstance(event, Warned):
                report.warnings.append(Notice(report.source, event.where, event.message))
            elif isinstance(event, CursorMoved):
                _store_batch(service, report, batch, source_label, cursor_key, event)
                batch = []
    finally:
        # Close the pull here, on this thread, even when interrupted: a source that parses in worker processes
        # shuts them down as it closes (left to the garbage collector, that could happen on another thread).
        close = getattr(events, "close", None)
        if close is not None:
            close()
    if batch:
        _store_batch(service, report, batch, source_label, None, None)


def _store_batch(
    service: Service,
    report: GatherReport,
    batch: list[Post],
    source_label: str,
    cursor_key: str | None,
    cursor: CursorMoved | None,
) -> None:
    with database.transaction(service.engine) as session:
        if batch:
            outcome = post_store.upsert_posts(session, batch, service.clock(), source_label)
            report.added += outcome.added
            report.updated += outcome.updated
            report.unchanged += outcome.unchanged
        if cursor_key is not None and cursor is not None:
            cursors.save_cursor(session, cursor_key, cursor.state, service.clock())


def list_posts(
    service: Service,
    *,
    theme: str | None = None,
    region: str | None = None,
    since: datetime | None = None,
    limit: int | None = None,
) -> list[Post]:
    """Published posts, newest first, filtered as asked."""
    with database.transaction(service.engine) as session:
        return post_store.newest_posts(
            session, now=service.clock(), limit=limit, theme=theme, region=region, since=since
        )


def theme_post_counts(service: Service) -> dict[str, int]:
    """Published posts per theme slug."""
    with database.transaction(service.engine) as session:
        return post_store.theme_counts(session, service.clock())


# --- Feeds -----------------------------------------------------------------------------------------------------

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


def publish_feeds(
    service: Service, directory: Path | None = None, *, full: bool = False, archives: bool = True
) -> FeedBuildReport:
    """Write every feed that changed since the last build (or all of them), then the manifest.

    Subscription documents hold the newest ``[feeds] items`` posts; older posts stay reachable through RFC 5005
    archive pages of ``archive_page_size`` posts, oldest first, which never change once full. Only documents
    whose bytes changed are rewritten; dates come from the posts, never the clock, so a build with nothing new
    leaves every file as it was. ``archives=False`` leaves archive pages for a later build (a first build of a
    large store can then serve its subscription documents at once).
    """
    config = service.settings.feeds
    with FeedOutput(directory or config.output_dir) as output:
        site = feed_site(service.settings)
        now = service.clock()
        fingerprint = _feed_fingerprint(service.settings)
        previous = output.state
        with database.transaction(service.engine) as session:
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
            job = _FeedJob(service.settings, output.directory, site, now, fallback, archived, changed, archives)
            done = _build_feeds_on_two_cores(session, output, job, feeds_to_build)
            report.feeds, report.written, report.unchanged = done.feeds, done.written, done.unchanged
            changed_subscriptions = done.changed_urls
            archived.update(done.archived)
            last_change, seen_at_change = post_store.last_change(session)
            post_store.forget_departures(session, before=now - DEPARTURES_KEPT)
        updated = fallback
        output.write("feeds.opml", render_opml(site, feeds, updated), CONTENT_TYPES["opml"], updated)
        output.write("index.html", render_index(site, feeds), CONTENT_TYPES["html"], updated)
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


# --- Digests ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DigestPreview:
    """A digest as it would be sent: the composition, the rendered email and the complete MIME message."""

    digest: Digest
    email: RenderedEmail
    message: bytes


def compose(
    service: Service, since: datetime, until: datetime, followed: Collection[str] | None = None
) -> Digest | None:
    """The digest of the window ``(since, until]`` for a reader of ``followed`` themes (None: everything)."""
    until = min(until, service.clock())  # a post dated in the future is not published yet
    with database.transaction(service.engine) as session:
        posts = post_store.posts_in_window(session, since, until, themes=None if followed is None else followed)
    return compose_digest(
        posts,
        service.settings.theme_list,
        since=since,
        until=until,
        followed=followed,
        section_cap=service.settings.digest.section_cap,
    )


def preview_digest(
    service: Service,
    *,
    since: datetime,
    until: datetime,
    followed: Collection[str] | None = None,
    language: str | None = None,
    intro: str | None = None,
    renderer: MailRenderer | None = None,
) -> DigestPreview | None:
    """Render a digest without sending anything; None when the window holds nothing for these themes."""
    digest = compose(service, since, until, followed)
    if digest is None:
        return None
    language = language or service.settings.site.language
    email = (renderer or MailRenderer(service.settings)).render_digest(
        digest, language, preview_links(service.settings), intro
    )
    envelope = digest_envelope(service.settings, email, "reader@example.invalid", "", until, "preview")
    return DigestPreview(digest, email, build_message(envelope, email.text, email.html))


def personalised_message(
    settings: Settings,
    variant: RenderedEmail,
    *,
    to_address: str,
    to_name: str,
    links: Links,
    date: datetime,
    message_key: str,
    extra: Sequence[tuple[str, str]] = (),
) -> bytes:
    """One recipient's complete message from a variant rendered once: substitution, encoding, headers.

    Byte for byte what rendering the digest with this recipient's links would give (the tests hold that).
    """
    text_qp, html_qp = variant.encoded_for(links)
    envelope = digest_envelope(settings, variant, to_address, to_name, date, message_key, extra)
    return build_encoded(envelope, text_qp, html_qp)


def preview_links(settings: Settings) -> Links:
    """Links that show where a recipient's own links go, for previews and test sends."""
    base = settings.site.base_url
    return Links(
        unsubscribe=f"{base}/unsubscribe/preview",
        preferences=f"{base}/preferences/preview",
        view_online=f"{base}/editions/preview",
    )


def send_notice(
    service: Service,
    email: RenderedEmail,
    to_address: str,
    to_name: str,
    key: str,
    *,
    client: SmtpClient | None = None,
) -> None:
    """Send one notice (``MailRenderer.render_notice``: a confirmation, a change of preferences, a draft to
    approve) to one address, marked auto-generated; over ``client``'s connection when given (an import sends
    many), else over one of its own. ``key`` makes its Message-ID unique. Raises DeliveryError or ConfigError."""
    settings = service.settings
    key = f"{key}.{secrets.token_hex(8)}"
    extra = (("Auto-Submitted", "auto-generated"),)
    envelope = digest_envelope(settings, email, to_address, to_name, service.clock(), key, extra)
    message = build_message(envelope, email.text, email.html)
    mail_from = settings.mail.bounce_address or settings.mail.from_address
    if client is not None:
        client.send(mail_from, to_address, message)
    else:
        send_one(settings.smtp, mail_from, to_address, message)


def digest_envelope(
    settings: Settings,
    email: RenderedEmail,
    to_address: str,
    to_name: str,
    date: datetime,
    message_key: str,
    extra: Sequence[tuple[str, str]] = (),
) -> Envelope:
    """The headers of one digest message; ``message_key`` makes its Message-ID (stable across retries)."""
    mail = settings.mail
    domain = urlsplit(settings.site.base_url).hostname or "localhost"
    return Envelope(
        from_address=mail.from_address,
        from_name=mail.from_name or settings.site.title,
        to_address=to_address,
        to_name=to_name,
        subject=email.subject,
        date=date,
        message_id=f"<{message_key}@{domain}>",
        reply_to=mail.reply_to,
        extra=tuple(extra),
    )
