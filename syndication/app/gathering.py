"""Gathering: pull the configured sources (or import a file) into the store, and read the posts back."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from syndication.app.service import Service
from syndication.app.webhooks import announce_posts, new_posts
from syndication.core.models import GatherReport, Notice, Post
from syndication.core.progress import Progress, running
from syndication.errors import ItemError, SourceError
from syndication.sources import open_source
from syndication.sources.base import CursorMoved, PullEvent, Rejected, Source, Warned
from syndication.sources.jsonl import count_lines, read_jsonl_file
from syndication.sources.normalise import build_post
from syndication.store import cursors, database
from syndication.store import posts as post_store


def gather(
    service: Service, source_names: Sequence[str] | None = None, *, progress: Progress | None = None
) -> list[GatherReport]:
    """Pull every configured source (or the named ones) into the store, one report per source. ``progress`` is
    told of each source's items (posts and refusals) as they come; how many a pull brings is not known first."""
    chosen = [service.settings.source(n) for n in source_names] if source_names else service.settings.sources
    vocabulary = service.vocabulary
    return [_pull_into_store(service, open_source(entry, vocabulary), progress) for entry in chosen]


def import_file(service: Service, path: Path, *, progress: Progress | None = None) -> GatherReport:
    """Import one JSON Lines file in full, without touching any source's cursor. ``progress`` is told of each
    line read, against the file's count of lines that hold something."""
    report = GatherReport(source=str(path))
    with running(progress, f"import {path.name}", count_lines(path)) as shows:
        try:
            _store_events(
                service, report, read_jsonl_file(path, service.vocabulary), source_label="import", cursor_key=None,
                progress=shows,
            )  # fmt: skip
        except SourceError as error:
            report.failure = str(error)
    return report


def import_records(service: Service, records: Sequence[Any], *, source_label: str) -> GatherReport:
    """Import posts given as JSON Lines records already parsed (the JSON API's), with the same validation and
    storing as a file's lines: each refused record is reported as ``record N`` with the reason."""
    report = GatherReport(source=source_label)

    def events() -> Iterator[PullEvent]:
        for number, fields in enumerate(records, 1):
            where = f"record {number}"
            try:
                built = build_post(fields, where, service.vocabulary)
            except ItemError as error:
                yield Rejected(where, error.reason)
                continue
            yield built.post
            yield from (Warned(where, message) for message in built.warnings)

    with running(None, source_label, len(records)) as shows:
        _store_events(service, report, events(), source_label=source_label, cursor_key=None, progress=shows)
    return report


def _pull_into_store(service: Service, source: Source, progress: Progress | None = None) -> GatherReport:
    report = GatherReport(source=source.name)
    with database.transaction(service.engine) as session:
        cursor = cursors.load_cursor(session, source.name)
    with running(progress, f"gather {source.name}", None) as shows:
        try:
            _store_events(
                service, report, source.pull(cursor), source_label=source.name, cursor_key=source.name,
                progress=shows,
            )  # fmt: skip
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
    progress: Progress,
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
                progress.advance()
                if len(batch) >= size:
                    _store_batch(service, report, batch, source_label, None, None)
                    batch = []
            elif isinstance(event, Rejected):
                report.rejections.append(Notice(report.source, event.where, event.reason))
                progress.advance()
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
            new = new_posts(session, batch)  # None unless an endpoint wants post.published
            outcome = post_store.upsert_posts(session, batch, service.clock(), source_label)
            announce_posts(session, service.clock(), batch, new)
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
