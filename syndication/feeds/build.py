"""The feed build: which documents changed since the last build, written on two cores, with their archive pages.

Every published post of a feed is in exactly one of its documents: the subscription document holds the newest,
RFC 5005 archive pages the older ones. A page's bounds are fixed when it is made and stored (``feed_archive_cuts``):
the subscription document holds the posts after the last cut, at least ``[feeds] items`` once the feed has that
many; when it reaches ``items + archive_page_size`` its oldest ``archive_page_size`` posts become a new page. Bounds
never move, so an edit, a back-dated or an unpublished post changes only the pages that held it and now hold it;
a page that back-dated posts fill past twice the page size is split in place, its newer part becoming new pages.
A page is named after where it begins, so it keeps its URL for good, and pages can change: none is ``immutable``.

Only documents whose bytes changed are rewritten, and an incremental build writes the same bytes a full build
would: a document's bytes depend on its posts and bounds only (dates in it come from the posts, never the clock).

A build with nothing to do stops before naming any feed (Babel's language data), compiling a catalog or importing
the writers (feedgen, lxml, Jinja): the manifest keeps a key of everything its documents follow from besides the
clock (the store's change marker, the settings that shape them, the catalog and index template files' sizes and
times, the versions), and the build returns at once when that key is the same, no post came of age since, and
every subscription document and list it wrote is still there. Anything else takes the whole way (``_quiet_key``).
"""

from __future__ import annotations

import bisect
import hashlib
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import babel
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from syndication import __version__
from syndication.config import FeedSettings, Settings
from syndication.core.models import Post, Region
from syndication.core.progress import Progress, running
from syndication.feeds.catalog import (
    CONTENT_TYPES,
    DESCRIPTIONS,
    ENGLISH,
    FORMATS,
    Feed,
    FeedDocument,
    FeedWords,
    Format,
    Site,
    feeds_of,
    updated_of,
)
from syndication.feeds.json_feed import render_json
from syndication.feeds.output import FeedOutput, FeedsMovedOn
from syndication.feeds.websub import notify_hub
from syndication.resources import catalog_file, catalog_languages, catalogs, translations, web_templates
from syndication.store import database
from syndication.store import posts as post_store

_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
# How long the feeds an edited post left are remembered. An output directory last built longer ago than this
# rebuilds every subscription document instead of asking which feeds were left (the answer may be gone).
DEPARTURES_KEPT = timedelta(days=30)
# The web pages' catalog, which words the feeds' descriptions and lists too (``feeds.catalog.FeedWords``).
WEB_DOMAIN = "web"
# The lists of feeds written beside the feeds, every build.
LISTS = ("feeds.opml", "index.html")
INDEX_TEMPLATE = "feeds_index.html"


@dataclass
class FeedBuildReport:
    """What one feed build did."""

    directory: Path | None  # None: the store (``[feeds] storage = "database"``)
    full: bool
    feeds: int = 0
    written: list[str] = field(default_factory=list)
    unchanged: int = 0
    hub_refused: list[str] = field(default_factory=list)

    @property
    def place(self) -> str:
        """Where the feeds went, as a message names it: the folder, or the store."""
        return "the store" if self.directory is None else str(self.directory)

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


def feed_words(language: str) -> FeedWords | None:
    """The feeds' words in ``language``, from the web pages' catalog of it (a regional tag, ``pt-BR``, from its
    base language's when it has none of its own); None when there is none."""
    po_file = catalog_file(catalogs(), language, WEB_DOMAIN)
    return None if po_file is None else FeedWords(language, translations(po_file))


def build_feeds(
    settings: Settings,
    engine: Engine,
    now: datetime,
    directory: Path | None = None,
    *,
    full: bool = False,
    archives: bool = True,
    progress: Progress | None = None,
) -> FeedBuildReport:
    """Write every feed that changed since the last build (or all of them), then the manifest; ``progress`` is
    told of each feed written, against the feeds this build writes.

    Each document's posts and links follow from the posts and the stored page bounds (see the module's
    docstring); only documents whose bytes changed are rewritten, each with the build's time as its
    Last-Modified, so a build with nothing new leaves every file as it was. ``archives=False`` leaves archive
    pages for a later build (a first build of a large store can then serve its subscription documents at once).

    The documents go to ``directory`` when given (a static export: files, whatever the storage), else where
    ``[feeds] storage`` says: ``output_dir``, or the store. A build into the store that finds another build
    saved meanwhile (two processes building at once) builds again from that one's manifest.
    """
    config = settings.feeds
    place = directory if directory is not None else (None if config.storage == "database" else config.output_dir)
    for attempt in range(1, _ATTEMPTS + 1):
        try:
            return _build_once(settings, engine, now, place, full=full, archives=archives, progress=progress)
        except FeedsMovedOn:
            if attempt == _ATTEMPTS:
                raise
    raise AssertionError("unreachable")


# Builds tried when other builds keep saving first (feeds in the store only).
_ATTEMPTS = 3


def _build_once(
    settings: Settings,
    engine: Engine,
    now: datetime,
    place: Path | None,
    *,
    full: bool,
    archives: bool,
    progress: Progress | None,
) -> FeedBuildReport:
    """One build into ``place`` (a folder, or the store when None): ``build_feeds`` without its retry."""
    config = settings.feeds
    with FeedOutput(place, engine=engine) as output:
        if not full and _nothing_changed(settings, engine, output, now, archives):
            return FeedBuildReport(output.directory, full=False)
        from syndication.feeds.directory import render_index, render_opml  # lxml and Jinja: only to write them

        site = feed_site(settings)
        watched = _watched_files(settings)  # before reading them: a file changed from now on is seen next time
        fingerprint = _feed_fingerprint(settings)
        previous = output.state
        with database.transaction(engine) as session:
            authors = post_store.authors_with_posts(session, now)
            if not site.regions:
                site = replace(site, regions=tuple(Region(slug, slug.replace("-", " ").title()) for slug in
                                                   post_store.region_slugs(session, now)))  # fmt: skip
            feeds = feeds_of(site, authors, post_store.languages_with_posts(session, now), feed_words)
            incremental = not full and previous.get("fingerprint") == fingerprint
            report = FeedBuildReport(output.directory, full=not incremental)
            newest_overall = post_store.newest_posts(session, now=now, limit=1)
            marks = _changes_since(session, output, feeds, now) if incremental else {}
            feeds_to_build = [feed for feed in feeds if not incremental or (feed.dimension, feed.slug) in marks]
            plans = [_plan_feed(session, output, config, feed, now, marks.get((feed.dimension, feed.slug)), archives)
                     for feed in feeds_to_build]  # fmt: skip
            last_change, seen_at_change = post_store.last_change(session)
            post_store.forget_departures(session, before=now - DEPARTURES_KEPT)
            marker = post_store.change_marker(session)
        # The new cuts are stored before any page is written, and a worker process reads them. A build that
        # stops half way saves no manifest: the next one sees the same changes again (``feeds build --full``
        # rewrites every page, should a page beside a cut made then still be the old one).
        job = _FeedJob(settings, output.directory, site, now, archives)
        with running(progress, "feed build", len(plans)) as shows, database.transaction(engine) as session:
            done = _build_feeds_on_two_cores(session, output, job, plans, shows)
        report.feeds, report.written, report.unchanged = done.feeds, done.written, done.unchanged
        changed_subscriptions = done.changed_urls
        updated = newest_overall[0].updated if newest_overall else _EPOCH
        words = feed_words(site.language) or ENGLISH
        output.write("feeds.opml", render_opml(site, feeds, updated, words), CONTENT_TYPES["opml"], now)
        index = render_index(site, feeds, settings.web.templates_dir, words)
        output.write("index.html", index, CONTENT_TYPES["html"], now)
        output.save(
            {
                "fingerprint": fingerprint,
                "changed_through": (last_change or _EPOCH).isoformat(),
                "seen_at_change": seen_at_change,
                "published_through": now.isoformat(),
                "quiet": _quiet_key(settings, marker, archives, watched),
                "feed_paths": [feed.path for feed in feeds],
            },
            now,
            sweep=report.full,
        )
    if site.hub and changed_subscriptions:
        report.hub_refused = notify_hub(site.hub, changed_subscriptions)
    return report


FeedKey = tuple[str, str | None]  # (dimension, slug): which feed
Marks = set[post_store.Key] | None  # the places in a feed that changed; None: any place may have


def _changes_since(session: Session, output: FeedOutput, feeds: list[Feed], now: datetime) -> dict[FeedKey, Marks]:
    """The feeds to rebuild, each with the places in it that changed since the last build: where changed posts
    are now and where edited or deleted posts were. A feed whose documents are missing is rebuilt whole."""
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
        return dict.fromkeys(((feed.dimension, feed.slug) for feed in feeds), None)  # departures may be forgotten
    marks: dict[FeedKey, Marks] = {}
    for post_id, post in changed:
        for key in _feeds_of_post(post):
            places = marks.setdefault(key, set())
            if post.published <= now and places is not None:
                places.add((post.published, post_id))
    for dimension, slug, place in post_store.departures_since(session, changed_since):
        key = (dimension, slug or None)
        places = marks.setdefault(key, set())
        if place is None or places is None:
            marks[key] = None  # recorded without its place: every page of that feed is looked at
        else:
            places.add(place)
    for feed in feeds:
        if not all(output.knows(feed.document_path(fmt)) for fmt in FORMATS):
            marks[(feed.dimension, feed.slug)] = None
    return marks


def _nothing_changed(settings: Settings, engine: Engine, output: FeedOutput, now: datetime, archives: bool) -> bool:
    """Whether the last build's documents are still all there and what they follow from is as it was then: the
    store's change marker, the settings, catalogs and index template (``_quiet_key``), and no post that came of
    age since. A build that finds so would write nothing (not even its lists, whose bytes would be the same)."""
    state = output.state
    quiet, feed_paths = state.get("quiet"), state.get("feed_paths")
    if not isinstance(quiet, str) or not isinstance(feed_paths, list):
        return False
    try:
        last_build = datetime.fromisoformat(state["published_through"])
    except (KeyError, TypeError, ValueError):
        return False
    if not now - DEPARTURES_KEPT <= last_build <= now:
        return False  # a late build rebuilds every subscription document (``_changes_since``): let it
    paths = [*(f"{path}.{fmt}" for path in feed_paths for fmt in FORMATS), *LISTS]
    if not all(output.knows(path) for path in paths):
        return False
    with database.transaction(engine) as session:
        if post_store.published_between(session, last_build, now):
            return False
        marker = post_store.change_marker(session)
    return quiet == _quiet_key(settings, marker, archives)


def _quiet_key(settings: Settings, marker: str, archives: bool, files: list[_FileStat] | None = None) -> str:
    """Everything a build's documents and lists follow from besides the clock, cheap to read: the store's change
    marker, the settings the fingerprint holds and the index's templates folder, the web catalogs' and index
    templates' sizes and modification times (``files``, read now when not given), and the versions of this
    package and Babel (which names languages). Files are compared by their stat, not read: a touched catalog
    takes the whole way, which then decides from its contents (``_feed_fingerprint``) what to rewrite."""
    shape = (
        __version__,
        babel.__version__,
        marker,
        archives,
        _settings_shape(settings),
        str(settings.web.templates_dir),
        _watched_files(settings) if files is None else files,
    )
    return hashlib.sha256(repr(shape).encode()).hexdigest()[:16]


_FileStat = tuple[str, int | None, int | None]  # a file's name, modification time (ns) and size; None: no file


def _watched_files(settings: Settings) -> list[_FileStat]:
    """Each web catalog's and index template's stat (``_quiet_key``)."""
    folder = catalogs()
    files = [
        *((str(path.relative_to(folder)), path) for path in folder.glob(f"*/LC_MESSAGES/{WEB_DOMAIN}.po")),
        *((str(templates), templates / INDEX_TEMPLATE)
          for templates in (settings.web.templates_dir, web_templates()) if templates is not None),
    ]  # fmt: skip
    stats: list[_FileStat] = []
    for name, path in sorted(files):
        try:
            stat = path.stat()
        except OSError:
            stats.append((name, None, None))
        else:
            stats.append((name, stat.st_mtime_ns, stat.st_size))
    return stats


def _settings_shape(settings: Settings) -> tuple[object, ...]:
    """The settings that shape a feed's bytes (a fingerprint's and a quiet key's)."""
    return (
        settings.site.model_dump_json(),
        [t.model_dump_json() for t in settings.themes],
        [r.model_dump_json() for r in settings.regions],
        settings.feeds.model_dump_json(exclude={"output_dir", "storage", "max_age_seconds"}),
    )


def _feeds_of_post(post: Post) -> set[FeedKey]:
    return {
        ("site", None),
        ("language", post.language),
        *(("theme", slug) for slug in post.themes),
        *(("region", slug) for slug in post.regions),
        *(("author", author.slug) for author in post.authors),
    }


def _scope(feed: Feed) -> post_store.Scope:
    return post_store.Scope(
        theme=feed.slug if feed.dimension == "theme" else None,
        region=feed.slug if feed.dimension == "region" else None,
        author=feed.slug if feed.dimension == "author" else None,
        language=feed.slug if feed.dimension == "language" else None,
    )


def page_id(cut: post_store.Key | None) -> str:
    """The name of the archive page beginning at ``cut`` (the oldest page has none): its start's date and time
    and the post id there, so that it never changes."""
    return "first" if cut is None else f"{cut[0]:%Y%m%d%H%M%S}-{cut[1]}"


@dataclass(frozen=True, slots=True)
class _Page:
    """A feed's archive page (or, with no upper bound, the subscription document): the keys from ``lower``
    (included; None is the start) to ``upper`` (excluded)."""

    id: str
    lower: post_store.Key | None
    upper: post_store.Key | None


@dataclass(frozen=True)
class _FeedPlan:
    """One feed to write: its pages oldest first, the subscription document last, and which pages to write."""

    feed: Feed
    pages: tuple[_Page, ...]
    write: tuple[int, ...]  # indexes of archive pages, oldest first


def _plan_feed(
    session: Session, output: FeedOutput, config: FeedSettings, feed: Feed, now: datetime, marks: Marks,
    archives: bool,
) -> _FeedPlan:  # fmt: skip
    """Cut new archive pages where the feed needs them (stored at once), and choose the pages to write: those
    holding a changed place (``marks``; None: all), those next to a new cut, and those not written yet."""
    scope, size = _scope(feed), config.archive_page_size
    cuts = post_store.archive_cuts(session, feed.path)
    new: list[post_store.Key] = []
    # The subscription document's oldest posts become pages of their own while it holds a page more than needed.
    tail = cuts[-1] if cuts else None
    count = post_store.count_between(session, scope, now, tail, None)
    if count >= config.items + size:
        keys = post_store.keys_between(session, scope, now, tail, None, limit=count - config.items + 1)
        new += [keys[k * size] for k in range(1, (count - config.items) // size + 1)]
    # A page that back-dated posts filled past twice its size is split: its oldest posts keep its name.
    bounds = [None, *cuts]
    looked_at: Iterable[int]
    if not archives:
        looked_at = ()  # no page is written now: the build that writes them looks (a full one looks at all)
    elif marks is None:
        looked_at = range(len(cuts))
    else:
        looked_at = sorted({bisect.bisect_right(cuts, place) for place in marks} - {len(cuts)})
    for index in looked_at:
        lower, upper = bounds[index], cuts[index]
        if post_store.count_between(session, scope, now, lower, upper) > 2 * size:
            keys = post_store.keys_between(session, scope, now, lower, upper)
            new += [keys[k * size] for k in range(1, len(keys) // size)]
    if new:
        post_store.add_archive_cuts(session, feed.path, new)
        cuts = sorted({*cuts, *new})
    pages = tuple(_Page(page_id(lower), lower, upper) for lower, upper in zip([None, *cuts], [*cuts, None],
                                                                              strict=True))  # fmt: skip
    if not archives:
        return _FeedPlan(feed, pages, ())
    if marks is None:
        return _FeedPlan(feed, pages, tuple(range(len(cuts))))
    write = {bisect.bisect_right(cuts, place) for place in marks}
    for cut in new:
        # The pages on either side of a new cut have new bounds or links; and when the cut was made in the
        # subscription document, the page before the new one linked to that document and now links to it.
        index = bisect.bisect_right(cuts, cut)
        write.update(range(index - 2, index + 2))
    write.update(index for index, page in enumerate(pages[:-1])
                 if not output.knows(feed.document_path("atom", page.id)))  # fmt: skip
    return _FeedPlan(feed, pages, tuple(sorted(index for index in write if 0 <= index < len(cuts))))


@dataclass(frozen=True)
class _FeedJob:
    """What building any feed needs, picklable so a worker process can build a share of them."""

    settings: Settings
    directory: Path | None  # None: the store
    site: Site
    now: datetime
    archives: bool


@dataclass
class _FeedsDone:
    """What building some feeds did."""

    feeds: int = 0
    written: list[str] = field(default_factory=list)
    unchanged: int = 0
    changed_urls: list[str] = field(default_factory=list)
    documents: dict[str, dict[str, Any]] = field(default_factory=dict)

    def merge(self, other: _FeedsDone) -> None:
        self.feeds += other.feeds
        self.written += other.written
        self.unchanged += other.unchanged
        self.changed_urls += other.changed_urls


# Below this many feeds a worker process costs more to start than it saves.
_PARALLEL_FROM_FEEDS = 64


def _build_feeds_on_two_cores(
    session: Session, output: FeedOutput, job: _FeedJob, plans: list[_FeedPlan], progress: Progress
) -> _FeedsDone:
    """Write the planned feeds; a large build shares them with a worker process that has its own connection.

    Each process claims the next feed from a shared counter, so the worker's start-up time and a busy core even
    out on their own (a fixed half each left one process waiting a second for the other). ``progress`` counts
    the feeds claimed by either process, as this one claims its next.
    """
    if len(plans) < _PARALLEL_FROM_FEEDS or (os.cpu_count() or 1) < 2:
        return _build_feeds(session, output, job, _counted(plans, progress))
    from concurrent.futures import ProcessPoolExecutor  # multiprocessing: only for a large build

    from syndication.runtime.workers import worker_context

    context = worker_context()
    next_feed = context.Value("i", 0)
    with ProcessPoolExecutor(max_workers=1, mp_context=context, initializer=_share_counter,
                             initargs=(next_feed,)) as pool:  # fmt: skip
        future = pool.submit(_build_feeds_in_worker, job, plans, output.documents)
        shown = 0

        def claimed(index: int) -> None:  # ``index`` feeds were claimed before: built, or being built
            nonlocal shown
            progress.advance(index - shown)
            shown = index

        done = _build_feeds(session, output, job, _claimed(plans, next_feed, claimed))
        other = future.result()
        progress.advance(len(plans) - shown)
    output.documents.update(other.documents)
    done.merge(other)
    return done


# The worker's end of the shared counter: a synchronised value reaches a process only as it starts.
_next_feed: Any = None


def _share_counter(counter: Any) -> None:
    global _next_feed
    _next_feed = counter


def _claimed(
    plans: Sequence[_FeedPlan], counter: Any, on_claim: Callable[[int], None] | None = None
) -> Iterator[_FeedPlan]:
    """The feeds this process claims, one at a time, until none is left; ``on_claim`` is told each claim's index
    (how many feeds both processes had claimed before it)."""
    while True:
        with counter.get_lock():
            index = counter.value
            counter.value = index + 1
        if on_claim is not None:
            on_claim(min(index, len(plans)))
        if index >= len(plans):
            return
        yield plans[index]


def _counted(plans: Iterable[_FeedPlan], progress: Progress) -> Iterator[_FeedPlan]:
    """``plans``, each counted done once the next is asked for (or the last is built)."""
    for plan in plans:
        yield plan
        progress.advance()


def _build_feeds_in_worker(job: _FeedJob, plans: list[_FeedPlan], documents: dict[str, dict[str, Any]]) -> _FeedsDone:
    engine = database.open_engine(job.settings.database.url)
    try:
        with (
            FeedOutput(job.directory, documents=documents, engine=engine) as output,
            database.transaction(engine) as session,
        ):
            done = _build_feeds(session, output, job, _claimed(plans, _next_feed))
            output.flush()  # the parent writes the manifest: these documents must be there first
        done.documents = {path: output.documents[path] for path in output.touched}
        return done
    finally:
        engine.dispose()


def _build_feeds(session: Session, output: FeedOutput, job: _FeedJob, plans: Iterable[_FeedPlan]) -> _FeedsDone:
    """Write each planned feed's subscription documents and the archive pages its plan names."""
    from syndication.feeds.rss_atom import render_rss_and_atom  # feedgen and lxml: only when a feed is written

    done = _FeedsDone()
    loaded: dict[int, Post] = {}  # a post is in several feeds (site, themes, region, authors): read it once
    for plan in plans:
        done.feeds += 1
        feed, pages = plan.feed, plan.pages
        scope = _scope(feed)
        archived = pages[:-1]
        for index in (*plan.write, len(archived)):
            page = pages[index]
            posts = post_store.posts_between(session, scope, job.now, page.lower, page.upper, loaded)
            subscription = page.upper is None
            documents = {
                fmt: FeedDocument(
                    job.site, feed, fmt, posts, updated_of(posts, _EPOCH),
                    archive_page=None if subscription else page.id,
                    prev_archive_page=pages[index - 1].id if index else None,
                    next_archive_page=pages[index + 1].id if index + 1 < len(archived) else None,
                )
                for fmt in FORMATS
            }  # fmt: skip
            urls = _write_feed(output, documents, done, job.now, render_rss_and_atom)
            if subscription:
                done.changed_urls += urls
    return done


def _write_feed(
    output: FeedOutput,
    documents: Mapping[Format, FeedDocument],
    done: _FeedsDone,
    now: datetime,
    render_rss_and_atom: Callable[[FeedDocument, FeedDocument], tuple[bytes, bytes]],
) -> list[str]:
    """Write one feed's documents in every format (RSS and Atom by ``render_rss_and_atom``); returns the URLs of
    those that changed."""
    rss, atom = render_rss_and_atom(documents["rss"], documents["atom"])
    bodies = {"rss": rss, "atom": atom, "json": render_json(documents["json"])}
    changed = []
    for fmt, document in documents.items():
        path = document.path
        if output.write(path, bodies[fmt], CONTENT_TYPES[fmt], now):
            done.written.append(path)
            changed.append(document.self_url)
        else:
            done.unchanged += 1
    return changed


def _feed_fingerprint(settings: Settings) -> str:
    """Everything besides the posts that shapes a feed's bytes; when it changes, every document is rebuilt."""
    shape = (
        __version__,
        *_settings_shape(settings),
        # The descriptions as each catalog words them: a translation changed rewrites every document.
        [
            (language, [words.gettext(text, site="", name="", language="") for text in DESCRIPTIONS.values()])
            for language in catalog_languages(catalogs(), WEB_DOMAIN)
            if (words := feed_words(language)) is not None
        ],
    )
    return hashlib.sha256(repr(shape).encode()).hexdigest()[:16]
