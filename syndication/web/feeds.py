"""Serving the built feeds over HTTP: exactly the documents the builder's ``manifest.json`` lists, with validators.

The feed builder writes every document and, last, the manifest:
``{"version": 1, "documents": {"themes/x.atom": {"etag", "last_modified", "content_type"}}}``, either as files
under ``feeds.output_dir`` (``[feeds] storage = "folder"``) or into the store (``"database"``, so that every node
sharing the store serves the same documents). Every document, archive pages too, may change, so each is served
with ``[feeds] max_age_seconds`` and revalidated. This module answers ``/feeds/`` (the ``index.html``) and
``/feeds/{path}`` from it:

- only a path listed in the manifest is served, so there is no path traversal and an unknown feed is a plain 404;
- a rebuild is served at once: from a folder, the manifest is read again when its file changes (one ``os.stat``
  per request); from the store, when the ``feeds`` version changes (one primary-key read per request, on a thread
  of its own, requests arriving while it runs sharing the next one: ``StoreWatch``);
- conditional requests (RFC 9110 section 13): ``If-None-Match`` (weak comparison, a list, ``*``), else
  ``If-Modified-Since``, answered with a 304 without opening the document's file;
- gzip when the client's ``Accept-Encoding`` admits it, as a variant with an ETag of its own; the bodies sent
  (compressed or not) are kept in a bounded in-memory LRU keyed by path and ETag (the store keeps a document's
  bytes by path and ETag too, so a node never pairs one build's bytes with another's tag).

The endpoint is a bare ASGI callable behind a plain Starlette route: a 304 is the hot path of every feed reader's
poll, and FastAPI's request parsing and dependency machinery would only add to it.
"""

from __future__ import annotations

import asyncio
import gzip
import logging
import os
import re
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC
from email.utils import parsedate_to_datetime
from functools import lru_cache
from pathlib import Path
from typing import Any, Final

import orjson
from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from syndication.app.publishing import StoredFeeds
from syndication.app.service import Service
from syndication.config import Settings
from syndication.errors import StoreError

log = logging.getLogger(__name__)

MANIFEST: Final = "manifest.json"
MANIFEST_VERSION: Final = 1
INDEX: Final = "index.html"
DEFAULT_CACHE_BYTES: Final = 64 * 1024 * 1024

Header = tuple[bytes, bytes]

# An entity-tag as RFC 9110 section 8.8.3 writes it; group 1 is the opaque tag without its quotes.
_ENTITY_TAG = re.compile(rb'(?:W/)?"([^"]*)"')
_ENTITY_TAG_VALUE = re.compile(r'(?:W/)?"[\x21\x23-\x7e]*"')
# Header values from the manifest go out as they are, so nothing that could end a header line is let through.
_HEADER_VALUE = re.compile(r"[\x20-\x7e]+")
# The built index.html is a static page with its own inline style, no script and no form: never framed.
_PAGE_HEADERS: Final[tuple[Header, ...]] = (
    (b"content-security-policy", b"default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none';"
     b" base-uri 'none'; form-action 'none'"),
    (b"x-frame-options", b"DENY"),
)  # fmt: skip
_SEGMENT = re.compile(r"[A-Za-z0-9._~!$&'()*+,;=:@%-]+")


class ManifestError(ValueError):
    """``manifest.json`` cannot be read or is not in the builder's format."""


@dataclass(frozen=True, slots=True)
class Document:
    """One servable document: its file, both variants' ETags and the header lines every answer carries."""

    file: str
    etag: bytes
    gzip_etag: bytes
    # Opaque tags (no quotes, no W/) of the two variants: If-None-Match compares with these (weak comparison).
    opaque_tags: tuple[bytes, bytes]
    last_modified: bytes
    # Cache-Control, Last-Modified and Vary: what a 304 repeats besides the ETag.
    validators: tuple[Header, ...]
    # Content-Type and the rest, sent with a 200 only.
    metadata: tuple[Header, ...]


def gzip_etag(etag: str) -> str:
    """The ETag of the gzip variant: the identity tag with ``-gzip`` inside its quotes."""
    return etag[:-1] + '-gzip"'


class Manifest:
    """The documents one ``manifest.json`` lists. An entry becomes a Document when first asked for, so reading
    a manifest of thousands of archive pages costs one JSON parse, not thousands of validations, on the event
    loop's thread."""

    def __init__(self, output_dir: Path, entries: Mapping[str, object], settings: Settings) -> None:
        self._prefix = os.fsdecode(output_dir) + os.sep
        self._entries = entries
        self._documents: dict[str, Document | None] = {}
        self._cache_control = f"public, max-age={settings.feeds.max_age_seconds}".encode()
        self._hub = settings.feeds.websub_hub
        self._base_url = settings.site.base_url

    def get(self, name: str) -> Document | None:
        """The document listed as ``name``, or None when it is not listed or not safe to serve."""
        if name in self._documents:
            return self._documents[name]
        entry = self._entries.get(name)
        if entry is None:
            return None  # not remembered: anyone can ask for any number of unknown names
        document = self._document(name, entry)
        if document is None:
            log.warning("manifest entry %r left out: its path or a header value is unsafe or malformed", name)
        self._documents[name] = document
        return document

    def _document(self, name: str, entry: object) -> Document | None:
        if not (_safe_relative_path(name) and isinstance(entry, dict)):
            return None
        etag, last_modified, content_type = entry.get("etag"), entry.get("last_modified"), entry.get("content_type")
        if not (
            isinstance(etag, str)
            and _ENTITY_TAG_VALUE.fullmatch(etag)
            and isinstance(last_modified, str)
            and _HEADER_VALUE.fullmatch(last_modified)
            and http_date_seconds(last_modified) is not None
            and isinstance(content_type, str)
            and _HEADER_VALUE.fullmatch(content_type)
        ):
            return None
        extra: tuple[Header, ...] = _PAGE_HEADERS if content_type.startswith("text/html") else ()
        if self._hub:
            # WebSub (section 4) lets the hub and self URLs travel in Link headers too; the feeds carry them as well.
            self_url = f"{self._base_url}/feeds/{name}"
            extra += ((b"link", f'<{self._hub}>; rel="hub", <{self_url}>; rel="self"'.encode()),)
        return document_of(self._prefix + name.replace("/", os.sep), etag, last_modified, content_type,
                           self._cache_control, extra)  # fmt: skip


def document_of(
    file: str, etag: str, last_modified: str, content_type: str, cache_control: bytes, extra: tuple[Header, ...] = ()
) -> Document:
    """A Document from its validators; ``extra`` header lines go with every 200."""
    variant = gzip_etag(etag)
    return Document(
        file=file,
        etag=etag.encode(),
        gzip_etag=variant.encode(),
        opaque_tags=(_opaque(etag), _opaque(variant)),
        last_modified=last_modified.encode(),
        validators=(
            (b"cache-control", cache_control),
            (b"last-modified", last_modified.encode()),
            (b"vary", b"Accept-Encoding"),
        ),
        metadata=((b"content-type", content_type.encode()), (b"x-content-type-options", b"nosniff"), *extra),
    )


EMPTY: Final = Manifest(Path(), {}, Settings())


def read_manifest(output_dir: Path, settings: Settings) -> Manifest:
    """The manifest in ``output_dir``, or a ManifestError when it cannot be read or is not version 1."""
    path = output_dir / MANIFEST
    try:
        data = path.read_bytes()
    except OSError as error:
        raise ManifestError(f"{path}: cannot be read: {error}") from error
    return parse_manifest(data, str(path), output_dir, settings)


def parse_manifest(data: bytes, where: str, output_dir: Path, settings: Settings) -> Manifest:
    """The manifest ``data`` holds (``where`` names it in errors), or a ManifestError when it is not version 1."""
    try:
        raw: Any = orjson.loads(data)
    except orjson.JSONDecodeError as error:
        raise ManifestError(f"{where}: cannot be read: {error}") from error
    listed = raw.get("documents") if isinstance(raw, dict) else None
    if not isinstance(listed, dict) or raw.get("version") != MANIFEST_VERSION:
        raise ManifestError(f"{where}: not a version {MANIFEST_VERSION} manifest with a 'documents' object")
    return Manifest(output_dir, listed, settings)


def _safe_relative_path(name: str) -> bool:
    # Segments of URL-safe characters only, none "." or "..": nothing can point outside the folder.
    return all(_SEGMENT.fullmatch(s) and s not in (".", "..") for s in name.split("/"))


def _opaque(etag: str) -> bytes:
    return etag.removeprefix("W/")[1:-1].encode()


@lru_cache(maxsize=4096)
def http_date_seconds(value: str) -> float | None:
    """Seconds since the epoch of an HTTP-date (any of the three forms RFC 9110 section 5.6.7 admits), or None."""
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):  # OverflowError: a zone offset of many digits
        return None
    # A zone of "-0000" gives a naive datetime, which .timestamp() would read as local time.
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


class ManifestWatch:
    """The manifest last read, read again whenever its file's identity, size or mtime changes.

    The builder replaces the file atomically, so a new inode (or mtime, or size) is a new manifest. A manifest
    that cannot be read is logged once and the previous one kept: a broken build does not take the feeds down.
    """

    def __init__(self, output_dir: Path, settings: Settings) -> None:
        self._output_dir = output_dir
        self._settings = settings
        self._path = output_dir / MANIFEST
        self._signature: tuple[int, int, int, int] | None = None
        self._manifest = EMPTY

    def current(self) -> Manifest:
        """The current manifest (an empty one while none has been built)."""
        try:
            stat = self._path.stat()
        except OSError:
            if self._signature is not None:
                log.warning("%s: missing; no feed is served until the next build", self._path)
            self._signature, self._manifest = None, EMPTY
            return self._manifest
        signature = (stat.st_ino, stat.st_dev, stat.st_mtime_ns, stat.st_size)
        if signature != self._signature:
            # Recorded before reading: a manifest that fails is reported once, not on every request.
            self._signature = signature
            try:
                self._manifest = read_manifest(self._output_dir, self._settings)
            except ManifestError as error:
                log.error("%s; still serving the previous manifest", error)
        return self._manifest


class StoreWatch:
    """The manifest of the feeds kept in the store, read again whenever the ``feeds`` version has moved on.

    Every request asks for the version (one primary-key read), so a node serves a build from the moment it
    commits, whatever node built it. The reads run on one thread of their own, off the event loop, on one
    connection kept open (``StoredFeeds.check``). A request arriving while a read is under way waits for the next
    one, which starts when that one ends and answers every request that arrived meanwhile: a read started before
    a request arrived may predate a build the requester has seen committed, one started after cannot. So the
    reads never queue up beyond one, however many requests come at once.

    When the store does not answer, the manifest read last is served (logged once until the store answers again),
    as the folder's watch keeps its manifest when a build leaves a broken one.
    """

    def __init__(self, stored: StoredFeeds, settings: Settings) -> None:
        self.stored = stored
        self._settings = settings
        self._state: tuple[int | None, Manifest] = (None, EMPTY)  # the version read last and its manifest
        self._failing = False
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="feeds-version")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._running: asyncio.Future[Manifest] | None = None  # the read under way
        self._queued: asyncio.Future[Manifest] | None = None  # the read to start when it ends

    async def current(self) -> Manifest:
        """The manifest of the version the store holds now (a read started after this call was made)."""
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # a new event loop (a restarted server, a test): nothing of the last one
            self._loop, self._running, self._queued = loop, None, None
        if self._running is None:
            self._running = self._start(loop)
            waiter = self._running
        else:
            if self._queued is None:
                self._queued = loop.create_future()
            waiter = self._queued
        # Shielded: a request whose client went away must not cancel the read the others wait for.
        return await asyncio.shield(waiter)

    def _start(self, loop: asyncio.AbstractEventLoop) -> asyncio.Future[Manifest]:
        future = loop.run_in_executor(self._thread, self._read)
        future.add_done_callback(self._ended)
        return future

    def _ended(self, ended: asyncio.Future[Manifest]) -> None:
        queued, self._queued = self._queued, None
        if self._running is not ended:
            return  # from an event loop since left behind
        if queued is None:
            self._running = None
            return
        assert self._loop is not None
        self._running = self._start(self._loop)
        self._running.add_done_callback(lambda done: _settle(queued, done))

    def _read(self) -> Manifest:
        """On the reading thread: the current manifest, read again only when the version moved on."""
        known, manifest = self._state
        try:
            number, data = self.stored.check(known)
        except StoreError as error:
            if not self._failing:
                log.error("%s; still serving the feeds read before", error)
            self._failing = True
            return manifest
        if self._failing:
            log.warning("the feeds in the store can be read again")
            self._failing = False
        if number == known:
            return manifest
        if data is None:
            manifest = EMPTY  # no build has saved its feeds in the store yet
        else:
            try:
                manifest = parse_manifest(data, "the manifest in the store", Path(), self._settings)
            except ManifestError as error:
                # Recorded with its version all the same: a manifest that fails is reported once.
                log.error("%s; still serving the previous manifest", error)
        self._state = (number, manifest)
        return manifest

    def close(self) -> None:
        """Close the reading thread's connection and stop the thread."""
        self._thread.submit(self.stored.close).result()
        self._thread.shutdown(wait=True)


def _settle(waiter: asyncio.Future[Manifest], done: asyncio.Future[Manifest]) -> None:
    """Give ``waiter`` the outcome of ``done``."""
    if waiter.done():
        return
    if done.cancelled():
        waiter.cancel()
    elif (error := done.exception()) is not None:
        waiter.set_exception(error)
    else:
        waiter.set_result(done.result())


class BodyCache:
    """Bodies already read (and compressed), least recently used first out, within a byte budget.

    Only the event loop's thread touches it, so it needs no lock.
    """

    def __init__(self, max_bytes: int = DEFAULT_CACHE_BYTES) -> None:
        self.max_bytes = max_bytes
        self.size = 0
        self._entries: OrderedDict[tuple[str, bytes], bytes] = OrderedDict()

    def get(self, key: tuple[str, bytes]) -> bytes | None:
        """The body stored under ``key``, now the most recently used, or None."""
        body = self._entries.get(key)
        if body is not None:
            self._entries.move_to_end(key)
        return body

    def put(self, key: tuple[str, bytes], body: bytes) -> None:
        """Store ``body``, dropping the least recently used bodies beyond the budget (a body bigger than an
        eighth of the budget is not kept, so one huge archive cannot empty the cache)."""
        if len(body) > self.max_bytes // 8 or key in self._entries:
            return
        self._entries[key] = body
        self.size += len(body)
        while self.size > self.max_bytes:
            _, dropped = self._entries.popitem(last=False)
            self.size -= len(dropped)

    def __len__(self) -> int:
        return len(self._entries)


@lru_cache(maxsize=256)
def accepts_gzip(accept_encoding: bytes) -> bool:
    """Whether an Accept-Encoding value admits gzip (RFC 9110 section 12.5.3): ``gzip``/``x-gzip`` or ``*``
    with a q-value above 0, an explicit ``gzip;q=0`` overriding ``*``."""
    gzip_q: float | None = None
    any_q: float | None = None
    for member in accept_encoding.decode("latin-1").split(","):
        coding, *parameters = member.split(";")
        coding = coding.strip().lower()
        q = 1.0
        for parameter in parameters:
            key, _, value = parameter.partition("=")
            if key.strip().lower() == "q":
                try:
                    q = float(value.strip())
                except ValueError:
                    q = 0.0  # a malformed weight is no permission
        if coding in ("gzip", "x-gzip"):
            gzip_q = q if gzip_q is None else max(gzip_q, q)
        elif coding == "*":
            any_q = q
    if gzip_q is not None:
        return gzip_q > 0
    return any_q is not None and any_q > 0


def none_match(if_none_match: bytes, document: Document) -> bool:
    """Whether If-None-Match names either variant of ``document`` (weak comparison), or is ``*``."""
    if if_none_match == document.etag or if_none_match == document.gzip_etag:
        return True  # the usual poll: one tag, echoed as it was sent
    if if_none_match.strip() == b"*":
        return True
    return any(tag in document.opaque_tags for tag in _ENTITY_TAG.findall(if_none_match))


def not_modified_since(if_modified_since: bytes, document: Document) -> bool:
    """Whether ``document`` has not changed since the If-Modified-Since date (an invalid date is ignored)."""
    if if_modified_since == document.last_modified:
        return True  # the usual poll: the Last-Modified sent before, echoed as it was
    since = http_date_seconds(if_modified_since.decode("latin-1"))
    modified = http_date_seconds(document.last_modified.decode("latin-1"))
    return since is not None and modified is not None and modified <= since


def _read_body(file: str, compress: bool) -> bytes:
    with open(file, "rb") as handle:
        data = handle.read()
    # mtime=0: the same bytes always compress to the same bytes, as the variant's ETag promises.
    return gzip.compress(data, compresslevel=6, mtime=0) if compress else data


class FeedFiles:
    """The ASGI endpoint of ``/feeds/{path}``: a manifest lookup, then a 304, a cached body or a read of the
    document (its file, or its row in the store)."""

    def __init__(
        self,
        settings: Settings,
        service: Callable[[], Service] | None = None,
        *,
        cache_bytes: int = DEFAULT_CACHE_BYTES,
    ) -> None:
        """Serve the feeds where ``[feeds] storage`` says; from the store, ``service`` opens it when needed."""
        self.manifest = ManifestWatch(settings.feeds.output_dir, settings)
        self.store: StoreWatch | None = None
        if settings.feeds.storage == "database":
            if service is None:
                raise ValueError("feeds kept in the store are served from it: give the service that opens it")
            self.store = StoreWatch(StoredFeeds(service), settings)
        self.bodies = BodyCache(cache_bytes)

    def close(self) -> None:
        """Stop reading the store (when the feeds are served from it)."""
        if self.store is not None:
            self.store.close()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer one GET or HEAD (the route lets no other method through)."""
        name = scope["path_params"].get("path") or INDEX
        manifest = self.manifest.current() if self.store is None else await self.store.current()
        document = manifest.get(name)
        if document is None:
            await _send_plain(send, 404, b"Not found\n")
            return
        fresh, compress = freshness(scope["headers"], document)
        etag = document.gzip_etag if compress else document.etag
        if fresh:
            await send(
                {"type": "http.response.start", "status": 304, "headers": [(b"etag", etag), *document.validators]}
            )
            await send({"type": "http.response.body", "body": b""})
            return
        key = (name, etag)
        body = self.bodies.get(key)
        if body is None:
            if self.store is None:
                body = await self._read_file(document, compress)
            else:
                document, body = await self._read_stored(name, document, compress)
            if body is None:
                await _send_plain(send, 404, b"Not found\n")
                return
            etag = document.gzip_etag if compress else document.etag
            self.bodies.put((name, etag), body)
        headers = [
            (b"etag", etag),
            *document.validators,
            *document.metadata,
            (b"content-length", str(len(body)).encode()),
        ]
        if compress:
            headers.append((b"content-encoding", b"gzip"))
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else body})

    async def _read_file(self, document: Document, compress: bool) -> bytes | None:
        """The document's file, compressed when asked; None when it is gone."""
        try:
            # Off the event loop: a big archive page takes a while to read and compress. During a build a
            # file may already hold the next bytes while the manifest still names the last ones; a reader
            # then gets the new bytes under the old tag, and one extra 200 after the manifest is replaced.
            return await run_in_threadpool(_read_body, document.file, compress)
        except FileNotFoundError:
            # Listed but gone: the folder is being rebuilt or cleaned; the next manifest will say.
            log.warning("%s: listed in the manifest but missing", document.file)
            return None

    async def _read_stored(self, name: str, document: Document, compress: bool) -> tuple[Document, bytes | None]:
        """The document's bytes as the store keeps them under its ETag, compressed when asked, with the
        document they belong to. When a build committed since the manifest was read, its rows may be gone: the
        manifest is read again and the new bytes are served under their own validators."""
        assert self.store is not None
        for attempt in range(2):
            try:
                body = await run_in_threadpool(_stored_body, self.store.stored, name, document, compress)
            except StoreError as error:
                log.error("%s", error)
                return document, None
            if body is not None or attempt:
                return document, body
            renewed = (await self.store.current()).get(name)
            if renewed is None:
                return document, None
            document = renewed
        return document, None


def _stored_body(stored: StoredFeeds, name: str, document: Document, compress: bool) -> bytes | None:
    data = stored.body(name, document.etag.decode())
    if data is None or not compress:
        return data
    return gzip.compress(data, compresslevel=6, mtime=0)  # the same bytes on every node, as the ETag promises


def freshness(headers: Iterable[tuple[bytes, bytes]], document: Document) -> tuple[bool, bool]:
    """Whether a request's conditional headers let it have a 304 for ``document``, and whether it takes gzip."""
    if_none_match, if_modified_since, accept_encoding = _conditional_headers(headers)
    compress = accept_encoding is not None and accepts_gzip(accept_encoding)
    # RFC 9110 section 13.2.2: If-Modified-Since counts only when there is no If-None-Match.
    if if_none_match is not None:
        return none_match(if_none_match, document), compress
    if if_modified_since is not None:
        return not_modified_since(if_modified_since, document), compress
    return False, compress


def _conditional_headers(headers: Iterable[tuple[bytes, bytes]]) -> tuple[bytes | None, bytes | None, bytes | None]:
    """If-None-Match, If-Modified-Since and Accept-Encoding of a request (lists spread over lines joined)."""
    if_none_match: bytes | None = None
    if_modified_since: bytes | None = None
    accept_encoding: bytes | None = None
    since_lines = 0
    for key, value in headers:
        if key == b"if-none-match":
            if_none_match = value if if_none_match is None else if_none_match + b", " + value
        elif key == b"if-modified-since":
            if_modified_since = value
            since_lines += 1
        elif key == b"accept-encoding":
            accept_encoding = value if accept_encoding is None else accept_encoding + b", " + value
    # RFC 9110 section 13.1.3: an If-Modified-Since with more than one member is ignored.
    return if_none_match, (if_modified_since if since_lines == 1 else None), accept_encoding


async def _send_plain(send: Send, status: int, body: bytes) -> None:
    headers = [
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"content-length", str(len(body)).encode()),
        (b"cache-control", b"no-cache"),
        (b"x-content-type-options", b"nosniff"),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def router(files: FeedFiles) -> APIRouter:
    """The feed routes: ``/feeds/`` and ``/feeds/{path}``, GET and HEAD, answered by ``files``."""
    return APIRouter(routes=[Route("/feeds/{path:path}", files, methods=["GET"], include_in_schema=False)])
