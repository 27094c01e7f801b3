"""Recorded answers of outside servers, built by code, and a real local HTTP server that plays them back."""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import datetime
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit
from xml.sax.saxutils import escape, quoteattr


@dataclass(frozen=True)
class Seen:
    """One request the server received: path, query (last value of each name) and headers (lower-case)."""

    path: str
    query: dict[str, str]
    headers: dict[str, str]
    method: str = "GET"
    form: dict[str, str] = field(default_factory=dict)


@dataclass
class Reply:
    """What the server answers. ``omit_length`` leaves out Content-Length: the size shows only while reading."""

    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    omit_length: bool = False


Route = Callable[[Seen], Reply]


class RecordedServer:
    """A ThreadingHTTPServer on 127.0.0.1 answering each path with its route, logging every request."""

    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        self.requests: list[Seen] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._server.recorded = self  # type: ignore[attr-defined]
        # A short poll interval: shutdown() waits for the next poll, and every test stops a server.
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.02,), daemon=True)

    @property
    def port(self) -> int:
        """The port the server listens on."""
        return int(self._server.server_address[1])

    def url(self, path: str = "") -> str:
        """The address of ``path`` on this server."""
        return f"http://127.0.0.1:{self.port}{path}"

    def route(self, path: str, answer: Route | Reply) -> None:
        """Answer ``path`` with ``answer`` (a fixed Reply or a function of the request)."""
        self.routes[path] = answer if callable(answer) else (lambda _seen: answer)

    def seen(self, path: str) -> list[Seen]:
        """The requests made for ``path``, in order."""
        with self._lock:
            return [request for request in self.requests if request.path == path]

    def answer(self, request: Seen) -> Reply:
        """Log ``request`` and find its reply (404 for an unknown path)."""
        with self._lock:
            self.requests.append(request)
        route = self.routes.get(request.path)
        return route(request) if route else Reply(404, b"not found", {"Content-Type": "text/plain"})

    def start(self) -> None:
        """Start serving in a background thread."""
        self._thread.start()

    def close(self) -> None:
        """Stop serving and close the listening socket."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


class _Handler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode("utf-8", "replace")
        self._answer("POST", {name: values[-1] for name, values in parse_qs(body).items()})

    def do_GET(self) -> None:
        self._answer("GET", {})

    def _answer(self, method: str, form: dict[str, str]) -> None:
        recorded: RecordedServer = self.server.recorded  # type: ignore[attr-defined]
        parts = urlsplit(self.path)
        query = {name: values[-1] for name, values in parse_qs(parts.query).items()}
        headers = {name.lower(): value for name, value in self.headers.items()}
        reply = recorded.answer(Seen(parts.path, query, headers, method, form))
        self.send_response(reply.status)
        for name, value in reply.headers.items():
            self.send_header(name, value)
        if not reply.omit_length:
            self.send_header("Content-Length", str(len(reply.body)))
        self.end_headers()
        # The client may stop reading, as it should when it refuses an oversized body.
        with suppress(BrokenPipeError, ConnectionResetError):
            self.wfile.write(reply.body)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # quiet: the tests read ``RecordedServer.requests`` instead


@contextmanager
def serving() -> Iterator[RecordedServer]:
    """A started RecordedServer, stopped and closed on the way out."""
    server = RecordedServer()
    server.start()
    try:
        yield server
    finally:
        server.close()


def document(
    body: bytes, content_type: str, *, etag: str | None = None, last_modified: datetime | None = None
) -> Route:
    """A fixed document with validators, answering a matching conditional GET with 304."""
    stamp = format_datetime(last_modified, usegmt=True) if last_modified else None

    def answer(request: Seen) -> Reply:
        headers = {"Content-Type": content_type}
        if etag:
            headers["ETag"] = etag
        if stamp:
            headers["Last-Modified"] = stamp
        if (etag and request.headers.get("if-none-match") == etag) or (
            stamp and not etag and request.headers.get("if-modified-since") == stamp
        ):
            return Reply(304, b"", headers)
        return Reply(200, body, headers)

    return answer


def rss_item(number: int, **overrides: str | list[str] | None) -> dict[str, str | list[str]]:
    """The child elements of one valid RSS item; ``overrides`` replace them or (with None) remove them."""
    item: dict[str, str | list[str]] = {
        "title": f"Feed post {number}",
        "link": f"https://blog.example.org/posts/{number}",
        "guid": f"urn:feed:{number}",
        "description": f"<p>Body of feed post {number}.</p>",
        "pubDate": f"Wed, {number:02d} May 2024 10:00:00 +0000",
    }
    for key, value in overrides.items():
        if value is None:
            item.pop(key, None)
        else:
            item[key] = value
    return item


def rss_document(
    items: Sequence[Mapping[str, str | Sequence[str]]],
    *,
    link: str = "https://blog.example.org/",
    language: str = "en",
    raw_item_xml: Sequence[str] = (),
) -> bytes:
    """An RSS 2.0 document. Values are escaped text; list values repeat the element (categories);
    ``content:encoded`` goes in as CDATA, and ``raw_item_xml`` adds items as written."""
    parts = [
        '<?xml version="1.0" encoding="utf-8"?>',
        '<rss version="2.0" xmlns:content="http://purl.org/rss/1.0/modules/content/"'
        ' xmlns:dc="http://purl.org/dc/elements/1.1/" xmlns:media="http://search.yahoo.com/mrss/">',
        f"<channel><title>Example blog</title><link>{escape(link)}</link>",
        f"<description>Posts</description><language>{escape(language)}</language>",
    ]
    for item in items:
        parts.append("<item>")
        for name, value in item.items():
            if name == "content:encoded" and isinstance(value, str):
                parts.append(f"<content:encoded><![CDATA[{value}]]></content:encoded>")
            elif name == "media:thumbnail" and isinstance(value, str):
                parts.append(f"<media:thumbnail url={quoteattr(value)}/>")
            else:
                for one in [value] if isinstance(value, str) else value:
                    parts.append(f"<{name}>{escape(one)}</{name}>")
        parts.append("</item>")
    parts.extend(raw_item_xml)
    parts.append("</channel></rss>")
    return "\n".join(parts).encode("utf-8")


def atom_document(entries: Sequence[str], *, link: str = "https://atom.example.org/") -> bytes:
    """An Atom 1.0 document around ``entries`` (each an ``<entry>`` as written)."""
    return (
        '<?xml version="1.0" encoding="utf-8"?>\n'
        '<feed xmlns="http://www.w3.org/2005/Atom" xml:lang="de">'
        f'<title>Atom example</title><link href="{escape(link)}"/><id>urn:atom:feed</id>'
        "<updated>2024-05-10T10:00:00Z</updated>" + "\n".join(entries) + "</feed>"
    ).encode("utf-8")


def wp_post(number: int, **overrides: Any) -> dict[str, Any]:
    """A WordPress REST API post with ``_embed`` data; ``overrides`` replace fields or (with None) remove them."""
    post: dict[str, Any] = {
        "id": number,
        "date": f"2024-05-{number:02d}T12:00:00",
        "date_gmt": f"2024-05-{number:02d}T10:00:00",
        "modified": f"2024-05-{number:02d}T13:00:00",
        "modified_gmt": f"2024-05-{number:02d}T11:00:00",
        "guid": {"rendered": f"https://wp.example.org/?p={number}&#038;lang=en"},
        "link": f"https://wp.example.org/{number}/post-{number}/",
        "title": {"rendered": f"WordPress post {number} &#8211; &#8220;quoted&#8221;"},
        "content": {"rendered": f"<p>Content of post {number}.</p>\n", "protected": False},
        "excerpt": {"rendered": f"<p>Excerpt of post {number} [&hellip;]</p>\n", "protected": False},
        "author": 7,
        "featured_media": 100 + number,
        "_embedded": {
            "author": [{"id": 7, "name": "Kim Editor", "slug": "kim"}],
            "wp:featuredmedia": [
                {
                    "id": 100 + number,
                    "source_url": f"https://wp.example.org/uploads/{number}.jpg",
                    "alt_text": f"Picture {number}",
                    "mime_type": "image/jpeg",
                }
            ],
            "wp:term": [
                [{"id": 3, "name": "Low-Emission", "slug": "low-emission", "taxonomy": "category"}],
                [{"id": 9, "name": "Gardening", "slug": "gardening", "taxonomy": "post_tag"}],
            ],
        },
    }
    for key, value in overrides.items():
        if value is None:
            post.pop(key, None)
        else:
            post[key] = value
    return post


def wordpress_api(posts: Callable[[], Sequence[Mapping[str, Any]]], *, broken_page: int | None = None) -> Route:
    """The posts endpoint as WordPress answers it: ``modified_after``, ``orderby=modified&order=asc``,
    ``per_page`` and ``page`` honoured, X-WP-Total and X-WP-TotalPages sent, a page past the end a 400.
    ``broken_page`` answers that page with something that is not JSON."""

    def answer(request: Seen) -> Reply:
        chosen = list(posts())
        after = request.query.get("modified_after")
        if after:
            limit = datetime.fromisoformat(after.replace("Z", "+00:00")).replace(tzinfo=None)
            chosen = [p for p in chosen if datetime.fromisoformat(p["modified_gmt"]) > limit]
        chosen.sort(key=lambda p: (p["modified_gmt"], p["id"]))
        per_page = int(request.query.get("per_page", "10"))
        page = int(request.query.get("page", "1"))
        total_pages = math.ceil(len(chosen) / per_page)
        headers = {"X-WP-Total": str(len(chosen)), "X-WP-TotalPages": str(total_pages)}
        if page == broken_page:
            return Reply(200, b'[{"id": 1, "title": ', {"Content-Type": "application/json", **headers})
        if page > max(total_pages, 1):
            error = {
                "code": "rest_post_invalid_page_number",
                "message": "The page number requested is larger than the number of pages available.",
                "data": {"status": 400},
            }
            return Reply(400, json.dumps(error).encode(), {"Content-Type": "application/json"})
        body = json.dumps(chosen[(page - 1) * per_page : page * per_page]).encode()
        return Reply(200, body, {"Content-Type": "application/json; charset=UTF-8", **headers})

    return answer
