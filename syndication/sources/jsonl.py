"""JSON Lines files: one post per line, read from where the last pull stopped."""

from __future__ import annotations

import functools
import hashlib
import os
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future, ProcessPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

import orjson

from syndication.core.models import Post
from syndication.errors import ItemError, SourceError
from syndication.sources.base import CursorMoved, PullEvent, Rejected, Warned
from syndication.sources.normalise import Vocabulary, build_post
from syndication.workers import worker_context

# The cursor remembers a fingerprint of the file's first bytes, so a replaced file is read from the start.
_HEAD_BYTES = 4096


class JsonlSource:
    """A JSON Lines file; the cursor is the byte offset and line number reached."""

    def __init__(self, name: str, path: Path, vocabulary: Vocabulary) -> None:
        self.name = name
        self.path = path
        self.vocabulary = vocabulary

    def pull(self, cursor: Mapping[str, Any]) -> Iterator[PullEvent]:
        """Yield the posts of every complete line after the cursor."""
        try:
            handle = self.path.open("rb")
        except OSError as error:
            raise SourceError(f"{self.path}: cannot be read: {error.strerror or error}") from error
        with handle:
            size = handle.seek(0, 2)
            offset, line_number = int(cursor.get("offset", 0)), int(cursor.get("line", 0))
            if offset > size or cursor.get("head") != _fingerprint(handle, offset):
                offset, line_number = 0, 0
            handle.seek(offset)
            chunks = _numbered_chunks(handle, line_number)
            parse = functools.partial(_read_chunk, self.vocabulary)
            big = size - offset > PARALLEL_FROM_BYTES
            for results in _map_in_workers(parse, chunks) if big else map(parse, chunks):
                for number, length, complete, events in results:
                    if not complete and events and isinstance(events[0], Rejected):
                        # A writer may still be appending this line: leave it for the next pull.
                        yield Warned(f"line {number}", "incomplete last line left for the next pull")
                        break
                    offset += length
                    line_number = number
                    yield from events
            yield CursorMoved({"offset": offset, "line": line_number, "head": _fingerprint(handle, offset)})


# Past this size a second process parses while this one stores: on two cores the import takes the longer of
# the two instead of their sum. Smaller files are not worth starting a process for.
PARALLEL_FROM_BYTES = 8_000_000
_CHUNK_LINES = 500
LineResult = tuple[int, int, bool, list[PullEvent]]


def _numbered_chunks(handle: BinaryIO, last_line: int) -> Iterator[list[tuple[int, bytes]]]:
    chunk: list[tuple[int, bytes]] = []
    for number, raw in enumerate(handle, start=last_line + 1):
        chunk.append((number, raw))
        if len(chunk) >= _CHUNK_LINES:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _read_chunk(vocabulary: Vocabulary, chunk: list[tuple[int, bytes]]) -> list[LineResult]:
    """Parse numbered lines: (line number, bytes, ends with a newline, events) each. Runs in a worker too."""
    return [(number, len(raw), raw.endswith(b"\n"), read_line(raw, number, vocabulary)) for number, raw in chunk]


def _map_in_workers(
    parse: Callable[[list[tuple[int, bytes]]], list[LineResult]], chunks: Iterator[list[tuple[int, bytes]]]
) -> Iterator[list[LineResult]]:
    """``map(parse, chunks)`` in worker processes, in order, with a bounded number of chunks in flight."""
    workers = max(1, (os.cpu_count() or 2) - 1)
    executor = ProcessPoolExecutor(max_workers=workers, mp_context=worker_context())
    try:
        pending: deque[Future[list[LineResult]]] = deque()
        for chunk in chunks:
            pending.append(executor.submit(parse, chunk))
            if len(pending) > workers * 3:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        executor.shutdown(wait=True, cancel_futures=True)


def read_line(raw: bytes, number: int, vocabulary: Vocabulary) -> list[PullEvent]:
    """The post of one line and its warnings, or its rejection; nothing for a blank line."""
    where = f"line {number}"
    try:
        text = raw.decode("utf-8-sig" if number == 1 else "utf-8")
    except UnicodeDecodeError as error:
        return [Rejected(where, f"not valid UTF-8 (byte {error.start + 1})")]
    if not text.strip():
        return []
    try:
        fields = orjson.loads(text)
    except orjson.JSONDecodeError as error:
        return [Rejected(where, f"malformed JSON: {error.msg} (column {error.colno})")]
    except RecursionError:
        return [Rejected(where, "malformed JSON: nested too deeply")]
    try:
        built = build_post(fields, where, vocabulary)
    except ItemError as error:
        return [Rejected(where, error.reason)]
    return [built.post, *(Warned(where, message) for message in built.warnings)]


def _fingerprint(handle: BinaryIO, offset: int) -> str:
    """A hash of the file's first bytes up to ``offset``: what the cursor has read must still be there."""
    handle.seek(0)
    return hashlib.sha256(handle.read(min(offset, _HEAD_BYTES))).hexdigest()[:16]


def read_jsonl_file(path: Path, vocabulary: Vocabulary) -> Iterator[PullEvent]:
    """Every item of a whole file, ignoring cursors (``syndication import``)."""
    yield from JsonlSource(f"import:{path.name}", path, vocabulary).pull({})


def post_as_record(post: Post) -> dict[str, Any]:
    """A stored post as a JSON Lines object with the import field names, so an export can be re-imported."""
    return {
        "guid": post.guid,
        "title": post.title,
        "url": post.url,
        "summary": post.summary,
        "content_html": post.content_html,
        "authors": [author.name for author in post.authors],
        "published": iso_utc(post.published),
        "updated": iso_utc(post.updated),
        "themes": list(post.themes),
        "regions": list(post.regions),
        "language": post.language,
        "image": {"url": post.image.url, "alt": post.image.alt} if post.image else None,
    }


def iso_utc(moment: datetime) -> str:
    """``2024-05-01T10:00:00Z``: ISO 8601 in UTC with the Z suffix."""
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")
