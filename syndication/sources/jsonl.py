"""JSON Lines files: one post per line, read from where the last pull stopped."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from datetime import UTC, datetime
from typing import Any

from syndication.core.models import Post

from syndication.errors import ItemError, SourceError
from syndication.sources.base import CursorMoved, PullEvent, Rejected, Warned
from syndication.sources.normalise import Vocabulary, build_post

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
            head = _fingerprint(handle.read(_HEAD_BYTES))
            size = handle.seek(0, 2)
            offset, line_number = int(cursor.get("offset", 0)), int(cursor.get("line", 0))
            if cursor.get("head") != head or offset > size:
                offset, line_number = 0, 0
            handle.seek(offset)
            for raw in handle:
                line_number += 1
                where = f"line {line_number}"
                complete = raw.endswith(b"\n")
                events = self._read_line(raw, where)
                if not complete and events and isinstance(events[0], Rejected):
                    # A writer may still be appending this line: leave it for the next pull.
                    yield Warned(where, "incomplete last line left for the next pull")
                    line_number -= 1
                    break
                offset += len(raw)
                yield from events
            yield CursorMoved({"offset": offset, "line": line_number, "head": head})

    def _read_line(self, raw: bytes, where: str) -> list[PullEvent]:
        """The post of one line and its warnings, or its rejection; nothing for a blank line."""
        try:
            text = raw.decode("utf-8-sig" if where == "line 1" else "utf-8")
        except UnicodeDecodeError as error:
            return [Rejected(where, f"not valid UTF-8 (byte {error.start + 1})")]
        if not text.strip():
            return []
        try:
            fields = json.loads(text)
        except json.JSONDecodeError as error:
            return [Rejected(where, f"malformed JSON: {error.msg} (column {error.colno})")]
        except RecursionError:
            return [Rejected(where, "malformed JSON: nested too deeply")]
        try:
            built = build_post(fields, where, self.vocabulary)
        except ItemError as error:
            return [Rejected(where, error.reason)]
        return [built.post, *(Warned(where, message) for message in built.warnings)]


def _fingerprint(head: bytes) -> str:
    return hashlib.sha256(head).hexdigest()[:16]


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
