"""Where a build puts the feeds: a folder on disk, or the store; changed documents only, and the manifest last.

``manifest.json`` maps each document's path to its strong ETag (from its bytes), Last-Modified (when a build
last changed its bytes, never going back) and Content-Type. It also keeps the build state an incremental rebuild
starts from. It is written last, so a reader never sees a manifest naming a document that is not there yet.

In a folder (``[feeds] storage = "folder"``, and ``feeds build --out DIR`` whatever the storage), files are
written by one background thread: creating a file costs about a millisecond of waiting on the disk here, time the
build spends rendering the next feed instead.

In the store (``storage = "database"``, ``store.feed_documents``), the changed documents' bytes go in by path
and ETag, batched (an executemany per few megabytes, on one background thread, so a build of tens of thousands of
archive pages never holds more than a few batches of bodies), and the manifest with the ``feeds`` version in one
transaction at the end: every web node sharing the store serves the new build from the moment it commits.
"""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime, parsedate_to_datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Final

import orjson
from sqlalchemy import Engine

from syndication.errors import StoreError
from syndication.store import database, versions
from syndication.store import feed_documents as stored

MANIFEST = "manifest.json"
MANIFEST_VERSION = 1
# The key of a stored manifest holding the ``feeds`` version it was committed at.
STORE_VERSION: Final = "store_version"
# A batch of documents goes to the store once it holds this many bytes or documents.
_BATCH_BYTES = 4 * 1024 * 1024
_BATCH_DOCUMENTS = 500
# Batches handed to the writer thread and not yet stored, at most: the build waits beyond that.
_BATCHES_AHEAD = 2


class FeedsMovedOn(StoreError):
    """Another build committed its manifest while this one ran: this one's is not saved (its next try starts
    from the other's)."""


class FeedOutput:
    """One build's view of where the feeds go: the folder ``directory``, or the store of ``engine`` when
    ``directory`` is None."""

    def __init__(
        self,
        directory: Path | None,
        documents: dict[str, dict[str, Any]] | None = None,
        *,
        engine: Engine | None = None,
    ) -> None:
        """Open the folder or the store and its manifest; with ``documents`` (a worker's share), none is read."""
        if directory is None and engine is None:
            raise ValueError("feeds go to a folder or to a store: neither was given")
        self.directory = directory
        self.documents: dict[str, dict[str, Any]] = {}
        self.state: dict[str, Any] = {}
        self.touched: set[str] = set()  # paths written or confirmed by this build
        # One thread keeps the writes in the order they were asked for (a path written twice ends as the last).
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="feed-writer")
        self._pending: list[Future[None]] = []
        self._engine = engine if directory is None else None
        self._batch: list[stored.StoredDocument] = []
        self._batch_bytes = 0
        self._batch_time: datetime | None = None
        self._loaded: dict[str, str] = {}  # each path's ETag in the manifest read: what a save may remove
        self._based_on = 0  # the ``feeds`` version of the stored manifest read
        if documents is not None:
            self.documents = dict(documents)
            return
        data: Any = self._read_manifest()
        if isinstance(data, dict) and data.get("version") == MANIFEST_VERSION:
            self.documents = dict(data.get("documents", {}))
            self.state = dict(data.get("state", {}))
            self._loaded = {path: str(entry.get("etag")) for path, entry in self.documents.items()}

    @property
    def in_store(self) -> bool:
        """Whether the documents go to the store rather than a folder."""
        return self._engine is not None

    def _read_manifest(self) -> object:
        """The manifest as parsed (None when there is none or it cannot be read); in the store, remembers the
        version it was saved at, which a save then expects to move on from."""
        if self.directory is not None:
            try:
                return orjson.loads((self.directory / MANIFEST).read_bytes())
            except (OSError, orjson.JSONDecodeError):
                return None  # no usable manifest: every document is written afresh
        assert self._engine is not None
        with database.transaction(self._engine) as session:
            body = stored.manifest(session)
            if body is None:
                self._based_on = versions.version(session, versions.FEEDS)
                return None
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError:
            data = None
        number = data.get(STORE_VERSION) if isinstance(data, dict) else None
        if isinstance(number, int):
            self._based_on = number
        else:
            with database.transaction(self._engine) as session:
                self._based_on = versions.version(session, versions.FEEDS)
        return data

    def write(self, path: str, body: bytes, content_type: str, now: datetime) -> bool:
        """Write ``body`` at ``path`` unless the same bytes are already there; True when the document changed.

        ``now`` (the build's time) becomes its Last-Modified: a reader sending the time of its last fetch as
        If-Modified-Since must hear of every change since, whatever dates the posts carry.
        """
        etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
        previous = self.documents.get(path, {})
        self.touched.add(path)
        if previous.get("etag") == etag and self._still_there(path):
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
        if self.directory is not None:
            self._pending.append(self._writer.submit(write_atomically, self.directory / path, body))
        else:
            self._store(stored.StoredDocument(path, etag, content_type, body), now)
        return True

    def _still_there(self, path: str) -> bool:
        # A stored manifest's documents are in the store for as long as it is the manifest (a save removes only
        # what the new one no longer names); a folder's files can be removed by hand.
        return self.directory is None or (self.directory / path).exists()

    def _store(self, document: stored.StoredDocument, now: datetime) -> None:
        """Add ``document`` to the batch, handing the batch to the writer thread once it is big enough."""
        self._batch.append(document)
        self._batch_bytes += len(document.body)
        self._batch_time = now
        if self._batch_bytes >= _BATCH_BYTES or len(self._batch) >= _BATCH_DOCUMENTS:
            self._send_batch()

    def _send_batch(self) -> None:
        if not self._batch:
            return
        batch, self._batch, self._batch_bytes = self._batch, [], 0
        assert self._engine is not None and self._batch_time is not None
        self._pending.append(self._writer.submit(_store_batch, self._engine, batch, self._batch_time))
        while len(self._pending) > _BATCHES_AHEAD:  # bodies in memory stay bounded if the store is slower
            self._pending.pop(0).result()

    def flush(self) -> None:
        """Wait until every document asked for is written; raises the first write that failed."""
        if self._engine is not None:
            self._send_batch()
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
        """Whether the manifest lists ``path`` and its document is there."""
        return path in self.documents and self._still_there(path)

    def save(self, state: dict[str, Any], now: datetime, *, sweep: bool = False) -> None:
        """Write the manifest (last, once every document is written) with the next build's state.

        In a folder it replaces ``manifest.json`` atomically. In the store, one transaction moves the ``feeds``
        version on, stores the manifest and removes the rows of the documents this build replaced (with
        ``sweep``, every row the manifest does not name); FeedsMovedOn when another build committed since this
        one read the manifest (nothing is saved then).
        """
        self.flush()
        self.state = state
        data: dict[str, Any] = {"version": MANIFEST_VERSION, "state": state,
                                "documents": dict(sorted(self.documents.items()))}  # fmt: skip
        if self.directory is not None:
            write_atomically(self.directory / MANIFEST, orjson.dumps(data, option=orjson.OPT_INDENT_2))
            return
        assert self._engine is not None
        listed = {path: entry["etag"] for path, entry in self.documents.items()}
        replaced = [path for path, etag in listed.items() if self._loaded.get(path) not in (None, etag)]
        with database.transaction(self._engine) as session:
            number = stored.next_version(session)  # first: a build saving at the same time waits here
            if number != self._based_on + 1:
                raise FeedsMovedOn(
                    f"another feed build saved version {number - 1} of the feeds while this one ran from version"
                    f" {self._based_on}: this one is not saved"
                )
            data[STORE_VERSION] = number
            stored.save_manifest(session, orjson.dumps(data), now)
            stored.remove_replaced(session, listed, replaced)
            if sweep:
                stored.remove_unlisted(session, listed)
        self._based_on, self._loaded = number, listed


def _store_batch(engine: Engine, batch: list[stored.StoredDocument], now: datetime) -> None:
    # A transaction of its own: rows no manifest names yet are read by nobody, and the build's last transaction
    # stays short (on SQLite a long one would hold the store's only write lock).
    with database.transaction(engine) as session:
        stored.add_documents(session, batch, now)


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
