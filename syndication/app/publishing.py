"""Publishing: build the feeds from the store, read the feeds a build kept in the store, and the feed of sent
editions."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

from sqlalchemy import Connection
from sqlalchemy.exc import SQLAlchemyError

from syndication.app.service import Service
from syndication.core.models import Edition, Post
from syndication.core.progress import Progress
from syndication.errors import StoreError
from syndication.feeds.build import FeedBuildReport, build_feeds, feed_site
from syndication.feeds.catalog import CONTENT_TYPES, FORMAT_LABELS, Feed, FeedDocument, FormatLabel
from syndication.store import feed_documents, versions

# The feed of editions before any was sent: a fixed date, so that its validators do not change by the minute.
_EPOCH: Final = datetime(2000, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class RenderedFeed:
    """A feed document served as it is made: its bytes, media type and when it last changed."""

    body: bytes
    content_type: str
    updated: datetime


def publish_feeds(
    service: Service,
    directory: Path | None = None,
    *,
    full: bool = False,
    archives: bool = True,
    progress: Progress | None = None,
) -> FeedBuildReport:
    """Write every feed that changed since the last build (or all of them), then the manifest.

    The documents go where ``[feeds] storage`` says (``output_dir``, or the store), or as files to ``directory``
    when it is given (a static export); ``archives=False`` leaves archive pages for a later build; ``progress``
    is told of each feed written.
    """
    return build_feeds(
        service.settings, service.engine, service.clock(), directory, full=full, archives=archives, progress=progress
    )


class StoredFeeds:
    """The feeds a build kept in the store (``[feeds] storage = "database"``), as a web node reads them.

    ``check`` is the hot path, one primary-key read per request: it is meant to be called from one thread only,
    which keeps one connection of its own open in autocommit mode (no pool checkout, no pre-ping, no BEGIN and
    ROLLBACK around the read, and no snapshot held between reads). ``body`` may be called from any thread, on a
    pooled connection. ``service`` opens the store when first needed.
    """

    def __init__(self, service: Callable[[], Service]) -> None:
        self._service = service
        self._connection: Connection | None = None
        self._version: Callable[[], int] | None = None

    def check(self, known: int | None) -> tuple[int, bytes | None]:
        """The ``feeds`` version, with the stored manifest's bytes when it is not ``known`` (None with the
        version when there is no manifest yet, or when it is known). StoreError when the store does not answer
        (the connection is opened afresh on the next call)."""
        try:
            if self._connection is None or self._version is None:
                connection = self._service().engine.connect().execution_options(isolation_level="AUTOCOMMIT")
                self._connection = connection
                self._version = versions.reader(connection, versions.FEEDS)
            number = self._version()
            if number == known:
                return number, None
            return number, feed_documents.manifest(self._connection)
        except (SQLAlchemyError, StoreError) as error:
            self.close()
            raise StoreError(f"the feeds in the store cannot be read: {error}") from error

    def body(self, path: str, etag: str) -> bytes | None:
        """The bytes of ``path`` under ``etag``, or None when a newer build has replaced them."""
        try:
            with self._service().engine.connect() as connection:
                return feed_documents.document_body(connection, path, etag)
        except SQLAlchemyError as error:
            raise StoreError(f"the feed document {path} cannot be read from the store: {error}") from error

    def close(self) -> None:
        """Close the checking thread's connection (call it from that thread, or once it is idle)."""
        connection, self._connection, self._version = self._connection, None, None
        if connection is not None:
            with suppress(SQLAlchemyError):  # broken already: nothing to give back
                connection.close()


def editions_feed(
    service: Service,
    editions: Sequence[Edition],
    *,
    title: str,
    description: str,
    title_of: Callable[[Edition], str],
    summary_of: Callable[[Edition], str],
) -> RenderedFeed:
    """``editions`` (the sent ones, newest first: ``app.editions.sent_editions``) as an Atom document, written by
    the feeds' own writer.

    Each entry links to the edition's page. The words are the caller's, in the site's language (the feed is one
    document for every reader): the feed's ``title`` and ``description``, and ``title_of`` and ``summary_of``
    an edition's title and one sentence about it, as the archive's pages word them.
    """
    from syndication.feeds.rss_atom import render_atom  # feedgen and lxml: a build with nothing to do needs neither

    settings = service.settings
    site = replace(feed_site(settings), full_content=False)  # a summary per edition: the page is the content
    feed = Feed("site", None, title, title, description, "editions")
    base = settings.site.base_url
    entries = [
        Post(
            guid=f"{base}/editions/{edition.id}",
            title=title_of(edition),
            url=f"{base}/editions/{edition.id}",
            summary=summary_of(edition),
            content_html="",
            published=edition.until,
            updated=edition.until,
            language=settings.site.language,
        )
        for edition in editions
    ]
    updated = max((entry.updated for entry in entries), default=_EPOCH)
    body = render_atom(FeedDocument(site, feed, "atom", entries, updated))
    return RenderedFeed(body, CONTENT_TYPES["atom"], updated)


def feed_formats() -> tuple[FormatLabel, ...]:
    """The feed formats as pages list them (name, label, media type): the one list pages link each feed in."""
    return FORMAT_LABELS
