"""The feeds folder on disk: atomic writes of changed documents only, and the manifest the web app serves from.

``manifest.json`` maps each document's path to its strong ETag (from its bytes), Last-Modified (when a build
last changed its bytes, never going back) and Content-Type. It also keeps the build state an incremental rebuild
starts from. It is written last, so a reader of the folder never sees a manifest naming a document that is not
there yet.

Files are written by one background thread: creating a file costs about a millisecond of waiting on the disk
here, time the build spends rendering the next feed instead.
"""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime, parsedate_to_datetime
from pathlib import Path
from types import TracebackType
from typing import Any

import orjson

MANIFEST = "manifest.json"
MANIFEST_VERSION = 1


class FeedOutput:
    """One build's view of the feeds folder."""

    def __init__(self, directory: Path, documents: dict[str, dict[str, Any]] | None = None) -> None:
        """Open the folder and its manifest; with ``documents`` (a worker's share), no manifest is read."""
        self.directory = directory
        self.documents: dict[str, dict[str, Any]] = {}
        self.state: dict[str, Any] = {}
        self.touched: set[str] = set()  # paths written or confirmed by this build
        # One thread keeps the writes in the order they were asked for (a path written twice ends as the last).
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="feed-writer")
        self._pending: list[Future[None]] = []
        if documents is not None:
            self.documents = dict(documents)
            return
        manifest = directory / MANIFEST
        try:
            data = orjson.loads(manifest.read_bytes())
        except (OSError, orjson.JSONDecodeError):
            return  # no usable manifest: every document is written afresh
        if isinstance(data, dict) and data.get("version") == MANIFEST_VERSION:
            self.documents = dict(data.get("documents", {}))
            self.state = dict(data.get("state", {}))

    def write(self, path: str, body: bytes, content_type: str, now: datetime) -> bool:
        """Write ``body`` at ``path`` unless the same bytes are already there; True when the file changed.

        ``now`` (the build's time) becomes its Last-Modified: a reader sending the time of its last fetch as
        If-Modified-Since must hear of every change since, whatever dates the posts carry.
        """
        etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
        target = self.directory / path
        previous = self.documents.get(path, {})
        self.touched.add(path)
        if previous.get("etag") == etag and target.exists():
            return False  # the same bytes keep their validators, Last-Modified included
        modified = now.astimezone(UTC).replace(microsecond=0)
        before = _http_date(previous.get("last_modified"))
        if before is not None and modified <= before:
            # Two builds within a second, or a clock set back: Last-Modified must still move on, or a reader
            # asking If-Modified-Since would be told nothing changed.
            modified = before + timedelta(seconds=1)
        self.documents[path] = {
            "etag": etag,
            "last_modified": format_datetime(modified, usegmt=True),
            "content_type": content_type,
        }
        self._pending.append(self._writer.submit(write_atomically, target, body))
        return True

    def flush(self) -> None:
        """Wait until every file asked for is on disk; raises the first write that failed."""
        pending, self._pending = self._pending, []
        for future in pending:
            future.result()

    def close(self) -> None:
        """Finish the writes under way and stop the writer thread."""
        self._writer.shutdown(wait=True)

    def __enter__(self) -> FeedOutput:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()

    def knows(self, path: str) -> bool:
        """Whether the manifest lists ``path`` and its file exists."""
        return path in self.documents and (self.directory / path).exists()

    def save(self, state: dict[str, Any]) -> None:
        """Write the manifest (last, atomically, once every document is on disk) with the next build's state."""
        self.flush()
        self.state = state
        data = {"version": MANIFEST_VERSION, "state": state, "documents": dict(sorted(self.documents.items()))}
        write_atomically(self.directory / MANIFEST, orjson.dumps(data, option=orjson.OPT_INDENT_2))


def _http_date(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return parsedate_to_datetime(value).astimezone(UTC)
    except (TypeError, ValueError):
        return None


def write_atomically(target: Path, body: bytes) -> None:
    """Write to a temporary file beside ``target``, then rename it over: readers see the old or the new file."""
    # One writer per folder at a time (a build), so the process id makes the temporary name unique; this is
    # several times cheaper than mkstemp's random names, which matters over thousands of documents.
    temporary = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        try:
            handle = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        except FileNotFoundError:
            target.parent.mkdir(parents=True, exist_ok=True)
            handle = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        with os.fdopen(handle, "wb") as stream:
            stream.write(body)
        temporary.replace(target)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
