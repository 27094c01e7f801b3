"""JSON Lines files: one post per line, read from where the last pull stopped."""

from __future__ import annotations

import functools
import hashlib
import os
import stat
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future, ProcessPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

import orjson

from syndication.core.models import Post
from syndication.errors import ItemError, SourceError
from syndication.runtime.workers import worker_context
from syndication.sources.base import CursorMoved, PullEvent, Rejected, Warned
from syndication.sources.normalise import Vocabulary, build_post

# The cursor remembers a fingerprint of the file's first bytes, so a replaced file is read from the start.
_HEAD_BYTES = 4096

# A longer line is refused without being held in memory whole (a file of one endless line, like /dev/zero).
MAX_LINE_BYTES = 16 * 1024 * 1024
_BLOCK_BYTES = 1024 * 1024


class JsonlSource:
    """A JSON Lines file; the cursor is the byte offset and line number reached.

    ``growing`` is for a file a writer may still be appending to: an unended last line that does not parse
    is left for the next pull. A one-shot import reads its last line like any other.
    """

    def __init__(self, name: str, path: Path, vocabulary: Vocabulary, *, growing: bool = True) -> None:
        self.name = name
        self.path = path
        self.vocabulary = vocabulary
        self.growing = growing

    def pull(self, cursor: Mapping[str, Any]) -> Iterator[PullEvent]:
        """Yield the posts of the lines after the cursor; in a growing file, of its complete lines."""
        with _open_regular_file(self.path) as handle:
            size = handle.seek(0, 2)
            offset, line_number = int(cursor.get("offset", 0)), int(cursor.get("line", 0))
            if offset > size or cursor.get("head") != _fingerprint(handle, offset):
                offset, line_number = 0, 0
            offset += _rest_of_crlf(handle, offset)
            handle.seek(offset)
            limit = MAX_LINE_BYTES  # read here, in this process: workers would not see a changed value
            chunks = _numbered_chunks(_lines(handle, limit), line_number)
            parse = functools.partial(_read_chunk, self.vocabulary, limit)
            big = size - offset > PARALLEL_FROM_BYTES
            for results in _map_in_workers(parse, chunks) if big else map(parse, chunks):
                for number, length, complete, events in results:
                    if self.growing and not complete and events and isinstance(events[0], Rejected):
                        # A writer may still be appending this line: leave it for the next pull.
                        yield Warned(f"line {number}", "incomplete last line left for the next pull")
                        break
                    offset += length
                    line_number = number
                    yield from events
            yield CursorMoved({"offset": offset, "line": line_number, "head": _fingerprint(handle, offset)})


def _open_regular_file(path: Path) -> BinaryIO:
    """``path`` opened for reading; SourceError unless it is a regular file (/dev/zero would never end)."""
    try:
        # Non-blocking, so a named pipe without a writer is refused below instead of hanging the open.
        descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as error:
        raise SourceError(f"{path}: cannot be read: {error.strerror or error}") from error
    if not stat.S_ISREG(os.fstat(descriptor).st_mode):
        os.close(descriptor)
        raise SourceError(f"{path}: cannot be read: not a regular file")
    return os.fdopen(descriptor, "rb")


def _rest_of_crlf(handle: BinaryIO, offset: int) -> int:
    """1 when the last pull stopped between the CR and the LF of one line end (LF written later), else 0."""
    if offset == 0:
        return 0
    handle.seek(offset - 1)
    return 1 if handle.read(2) == b"\r\n" else 0


# Past this size a second process parses while this one stores: on two cores the import takes the longer of
# the two instead of their sum. Smaller files are not worth starting a process for.
PARALLEL_FROM_BYTES = 8_000_000
_CHUNK_LINES = 500
_CHUNK_BYTES = 8 * 1024 * 1024  # so a chunk of long lines does not hold hundreds of megabytes

# One line: its bytes without the line end (None when longer than the limit), its length with the line end,
# and whether it has one.
Line = tuple[bytes | None, int, bool]
NumberedLine = tuple[int, bytes | None, int, bool]
LineResult = tuple[int, int, bool, list[PullEvent]]


def _lines(handle: BinaryIO, limit: int) -> Iterator[Line]:
    """The lines from the handle's position on, ended by CR, LF or CRLF. A line longer than ``limit`` bytes
    is passed over block by block, never held whole, and yielded as None."""
    pending = bytearray()  # the start of a line whose end is not read yet
    length = 0  # bytes of that line so far, line end included
    too_long = False
    for block in _blocks(handle):
        for piece in block.splitlines(keepends=True):
            content = piece.rstrip(b"\r\n")
            length += len(piece)
            too_long = too_long or len(pending) + len(content) > limit
            if too_long:
                pending.clear()
            else:
                pending += content
            if len(content) < len(piece):
                yield None if too_long else bytes(pending), length, True
                pending.clear()
                length, too_long = 0, False
    if length:
        yield None if too_long else bytes(pending), length, False


def _blocks(handle: BinaryIO) -> Iterator[bytes]:
    """The handle's bytes from its position on, in blocks that never part the CR and the LF of a CRLF."""
    carry = b""
    while block := handle.read(_BLOCK_BYTES):
        block = carry + block if carry else block
        carry = b"\r" if block.endswith(b"\r") else b""
        if block := block[: len(block) - len(carry)]:
            yield block
    if carry:
        yield carry


def _numbered_chunks(lines: Iterator[Line], last_line: int) -> Iterator[list[NumberedLine]]:
    chunk: list[NumberedLine] = []
    chunk_bytes = 0
    for number, (raw, length, ended) in enumerate(lines, start=last_line + 1):
        chunk.append((number, raw, length, ended))
        chunk_bytes += length
        if len(chunk) >= _CHUNK_LINES or chunk_bytes >= _CHUNK_BYTES:
            yield chunk
            chunk, chunk_bytes = [], 0
    if chunk:
        yield chunk


def _read_chunk(vocabulary: Vocabulary, limit: int, chunk: list[NumberedLine]) -> list[LineResult]:
    """Parse numbered lines: (line number, bytes, ends with a line end, events) each. Runs in a worker too."""
    return [
        (number, length, ended, _too_long(number, limit) if raw is None else read_line(raw, number, vocabulary))
        for number, raw, length, ended in chunk
    ]


def _too_long(number: int, limit: int) -> list[PullEvent]:
    size = f"{limit // (1024 * 1024)} MiB" if limit % (1024 * 1024) == 0 else f"{limit} bytes"
    return [Rejected(f"line {number}", f"longer than {size}")]


def _map_in_workers(
    parse: Callable[[list[NumberedLine]], list[LineResult]], chunks: Iterator[list[NumberedLine]]
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
    # Nothing will be appended to an imported file: its unended last line is read like the others.
    yield from JsonlSource(f"import:{path.name}", path, vocabulary, growing=False).pull({})


def count_lines(path: Path) -> int | None:
    """How many lines of ``path`` hold something (a progress total), read block by block as ``read_jsonl_file``
    reads it; None when the file cannot be read (reading it says why)."""
    try:
        with _open_regular_file(path) as handle:
            # With a limit of 0 every line that holds a byte is "too long" (None) and a blank one is b"".
            return sum(1 for raw, _, _ in _lines(handle, 0) if raw is None)
    except (SourceError, OSError):
        return None


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
