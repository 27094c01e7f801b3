"""The feeds over HTTP: built by the real builder from a real store, served by the real app under uvicorn."""

from __future__ import annotations

import gzip
import json
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from syndication.app.gathering import import_file
from syndication.app.publishing import publish_feeds
from syndication.app.service import Service, init_store
from syndication.clock import fixed_clock
from syndication.config import FeedSettings, Settings, load_settings
from syndication.feeds.build import DEPARTURES_KEPT
from syndication.store import database
from syndication.store import posts as post_store
from syndication.web.app import create_app
from syndication.web.feeds import BodyCache, accepts_gzip
from tests.live_server import LiveServer, live_server
from tests.support import NOW, post_record, write_config, write_jsonl

MAX_AGE = 123
FEEDS_CONFIG = f"""
[feeds]
max_age_seconds = {MAX_AGE}
items = 10
archive_page_size = 10
"""
IDENTITY = {"Accept-Encoding": "identity"}
TITLES = {
    1: "Malmö opens a low-emission zone",
    2: "São Paulo plants 10,000 trees",
    3: "北九州市 recycles solar panels",
    4: "Pipes & <valves>: Kraków's water plan",
}


def site_posts() -> list[dict[str, Any]]:
    """Four named posts over three themes, and twenty more on climate action (an archive page of it, and more)."""
    posts = [
        post_record(1, title=TITLES[1], themes=["climate-action"], regions=["europe"]),
        post_record(2, title=TITLES[2], themes=["resilience"], regions=["latin-america"]),
        post_record(3, title=TITLES[3], themes=["circular-economy"], regions=["east-asia"]),
        post_record(4, title=TITLES[4], themes=["resilience"], regions=["europe"]),
    ]
    # Older than the named posts, so that those are in every subscription document.
    return posts + [post_record(n, themes=["climate-action"], published=f"2024-04-{n - 9:02d}T10:00:00Z")
                    for n in range(10, 30)]  # fmt: skip


def build_site(directory: Path, posts: list[dict[str, Any]], extra: str = FEEDS_CONFIG) -> Settings:
    """A SQLite store in ``directory`` holding ``posts``, with its feeds built; returns its settings."""
    config = write_config(directory, f"sqlite:///{directory / 'store.db'}", extra)
    settings = load_settings(config, environ={})
    init_store(settings)
    with Service.open(settings, fixed_clock(NOW)) as service:
        report = import_file(service, write_jsonl(directory / "posts.jsonl", posts))
        assert report.added == len(posts), report
        publish_feeds(service)
    return settings


@dataclass
class Site:
    """A built site served over HTTP."""

    settings: Settings
    server: LiveServer

    @property
    def output(self) -> Path:
        return self.settings.feeds.output_dir

    def entry(self, path: str) -> dict[str, Any]:
        """The builder's manifest entry of ``path``."""
        manifest = json.loads((self.output / "manifest.json").read_text(encoding="utf-8"))
        entry: dict[str, Any] = manifest["documents"][path]
        return entry


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    directory = tmp_path_factory.mktemp("site")
    settings = build_site(directory, site_posts())
    # Files the server must never hand out: one beside the feeds, one among them but not in the manifest.
    (directory / "secret.txt").write_text("do not serve", encoding="utf-8")
    (settings.feeds.output_dir / "stray.txt").write_text("do not serve", encoding="utf-8")
    with live_server(create_app(settings)) as server:
        yield Site(settings, server)


@pytest.fixture
def client(site: Site) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=site.server.url(), timeout=10) as client:
        yield client


@pytest.mark.parametrize(
    ("url", "path", "content_type"),
    [
        ("/feeds/all.rss", "all.rss", "application/rss+xml; charset=utf-8"),
        ("/feeds/all.atom", "all.atom", "application/atom+xml; charset=utf-8"),
        ("/feeds/all.json", "all.json", "application/feed+json; charset=utf-8"),
        ("/feeds/themes/resilience.atom", "themes/resilience.atom", "application/atom+xml; charset=utf-8"),
        ("/feeds/regions/europe.rss", "regions/europe.rss", "application/rss+xml; charset=utf-8"),
        ("/feeds/authors/ana-perez.json", "authors/ana-perez.json", "application/feed+json; charset=utf-8"),
        ("/feeds/feeds.opml", "feeds.opml", "text/x-opml; charset=utf-8"),
        ("/feeds/", "index.html", "text/html; charset=utf-8"),
        ("/feeds/index.html", "index.html", "text/html; charset=utf-8"),
    ],
)
def test_each_document_is_served_with_its_type_and_validators(
    site: Site, client: httpx.Client, url: str, path: str, content_type: str
) -> None:
    response = client.get(url, headers=IDENTITY)
    entry = site.entry(path)
    assert response.status_code == 200
    assert response.content == (site.output / path).read_bytes()
    assert response.headers["content-type"] == content_type
    assert response.headers["etag"] == entry["etag"]
    assert response.headers["etag"].startswith('"')  # strong
    assert response.headers["last-modified"] == entry["last_modified"]
    assert response.headers["cache-control"] == f"public, max-age={MAX_AGE}"
    assert response.headers["vary"] == "Accept-Encoding"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert "content-encoding" not in response.headers
    assert "link" not in response.headers  # no WebSub hub configured
    page = content_type.startswith("text/html")  # the index page is never framed, and runs nothing
    assert ("frame-ancestors 'none'" in response.headers.get("content-security-policy", "")) == page
    assert (response.headers.get("x-frame-options") == "DENY") == page


def test_the_feeds_hold_the_posts_with_their_titles_intact(client: httpx.Client) -> None:
    feed = client.get("/feeds/all.json").json()
    assert {item["title"] for item in feed["items"]} >= set(TITLES.values())
    theme = client.get("/feeds/themes/resilience.json").json()
    assert {item["title"] for item in theme["items"]} == {TITLES[2], TITLES[4]}


def test_if_none_match_gives_304_with_validators_and_no_body(site: Site, client: httpx.Client) -> None:
    first = client.get("/feeds/all.atom", headers=IDENTITY)
    etag = first.headers["etag"]
    second = client.get("/feeds/all.atom", headers={**IDENTITY, "If-None-Match": etag})
    assert second.status_code == 304
    assert second.content == b""
    assert second.headers["etag"] == etag
    assert second.headers["cache-control"] == f"public, max-age={MAX_AGE}"
    assert second.headers["last-modified"] == site.entry("all.atom")["last_modified"]
    assert second.headers["vary"] == "Accept-Encoding"


@pytest.mark.parametrize(
    ("if_none_match", "status"),
    [
        ('"0000", W/{etag}', 304),  # a list, and weak comparison
        ("{etag}, {etag}", 304),
        ("*", 304),
        ('"0000"', 200),
        ('W/"0000", "1111"', 200),
        ("{bare}", 200),  # not an entity-tag without its quotes
    ],
)
def test_if_none_match_lists_weak_tags_and_star(client: httpx.Client, if_none_match: str, status: int) -> None:
    etag = client.head("/feeds/all.rss", headers=IDENTITY).headers["etag"]
    header = if_none_match.format(etag=etag, bare=etag.strip('"'))
    response = client.get("/feeds/all.rss", headers={**IDENTITY, "If-None-Match": header})
    assert response.status_code == status
    assert (response.content == b"") == (status == 304)


@pytest.mark.parametrize(
    ("since", "status"),
    [
        ("{last_modified}", 304),
        ("Fri, 31 Dec 2100 23:59:59 GMT", 304),  # later than the newest item
        ("Thu, 01 Jan 1998 00:00:00 GMT", 200),
        ("Thursday, 31-Dec-2099 23:59:59 GMT", 304),  # the obsolete RFC 850 form is still a date
        ("yesterday", 200),  # not a date: ignored
        ("Fri, 28 Nov 2025 15:00:00 +99999999999999999999", 200),  # a zone no integer holds: ignored too
    ],
)
def test_if_modified_since(site: Site, client: httpx.Client, since: str, status: int) -> None:
    header = since.format(last_modified=site.entry("all.rss")["last_modified"])
    response = client.get("/feeds/all.rss", headers={**IDENTITY, "If-Modified-Since": header})
    assert response.status_code == status


def test_if_modified_since_counts_only_without_if_none_match(site: Site, client: httpx.Client) -> None:
    since = site.entry("all.rss")["last_modified"]
    response = client.get("/feeds/all.rss", headers={**IDENTITY, "If-None-Match": '"0000"', "If-Modified-Since": since})
    assert response.status_code == 200


def test_head_has_the_headers_of_get_and_no_body(site: Site, client: httpx.Client) -> None:
    get = client.get("/feeds/all.atom", headers=IDENTITY)
    head = client.head("/feeds/all.atom", headers=IDENTITY)
    assert head.status_code == 200
    assert head.content == b""
    assert int(head.headers["content-length"]) == len(get.content) == (site.output / "all.atom").stat().st_size
    for name in ("etag", "last-modified", "content-type", "cache-control", "vary"):
        assert head.headers[name] == get.headers[name]
    conditional = client.head("/feeds/all.atom", headers={**IDENTITY, "If-None-Match": get.headers["etag"]})
    assert conditional.status_code == 304


def raw_get(client: httpx.Client, path: str, accept_encoding: str) -> tuple[httpx.Response, bytes]:
    """A GET whose body is kept as sent (httpx would decode it)."""
    with client.stream("GET", path, headers={"Accept-Encoding": accept_encoding}) as response:
        return response, b"".join(response.iter_raw())


def test_gzip_variant_has_its_own_etag_and_the_same_bytes(site: Site, client: httpx.Client) -> None:
    plain, plain_body = raw_get(client, "/feeds/all.atom", "identity")
    zipped, zipped_body = raw_get(client, "/feeds/all.atom", "gzip")
    assert zipped.status_code == 200
    assert zipped.headers["content-encoding"] == "gzip"
    assert zipped.headers["vary"] == "Accept-Encoding"
    assert int(zipped.headers["content-length"]) == len(zipped_body) < len(plain_body)
    assert gzip.decompress(zipped_body) == plain_body == (site.output / "all.atom").read_bytes()
    assert zipped.headers["etag"] == plain.headers["etag"][:-1] + '-gzip"'
    # Either variant's tag stands for the same content, so it validates the other variant too.
    for tag in (plain.headers["etag"], zipped.headers["etag"]):
        for encoding in ("gzip", "identity"):
            response = client.get("/feeds/all.atom", headers={"Accept-Encoding": encoding, "If-None-Match": tag})
            assert response.status_code == 304
            expected = zipped.headers["etag"] if encoding == "gzip" else plain.headers["etag"]
            assert response.headers["etag"] == expected
    # The second compressed answer comes from the cache: the same bytes.
    assert raw_get(client, "/feeds/all.atom", "gzip")[1] == zipped_body


@pytest.mark.parametrize(
    ("accept_encoding", "compressed"),
    [
        ("gzip", True),
        ("br;q=1.0, gzip;q=0.5", True),
        ("x-gzip", True),
        ("*", True),
        ("identity", False),
        ("gzip;q=0", False),
        ("GZIP;Q=0.000", False),
        ("*;q=0.5, gzip;q=0", False),
        ("br, deflate", False),
        ("gzip;q=nonsense", False),
    ],
)
def test_gzip_only_when_admitted(client: httpx.Client, accept_encoding: str, compressed: bool) -> None:
    assert accepts_gzip(accept_encoding.encode()) is compressed
    response, body = raw_get(client, "/feeds/all.rss", accept_encoding)
    assert (response.headers.get("content-encoding") == "gzip") is compressed
    assert body.startswith(b"\x1f\x8b") is compressed


def test_archive_pages_are_revalidated_like_every_document_never_immutable(site: Site, client: httpx.Client) -> None:
    manifest = json.loads((site.output / "manifest.json").read_text(encoding="utf-8"))
    pages = [path for path in manifest["documents"] if path.startswith("archive/themes/climate-action/")]
    assert pages  # the theme has enough posts for archive pages
    for path in pages:
        page = client.get(f"/feeds/{path}")
        assert page.status_code == 200
        # A page can still change (an edit, a back-dated post): caches keep it max-age, then ask again.
        assert page.headers["cache-control"] == f"public, max-age={MAX_AGE}"
        again = client.get(f"/feeds/{path}", headers={"If-None-Match": page.headers["etag"]})
        assert again.status_code == 304
    current = client.get("/feeds/themes/climate-action.atom")
    assert current.headers["cache-control"] == f"public, max-age={MAX_AGE}"


@pytest.mark.parametrize(
    "path",
    [
        "/feeds/themes/nope.atom",
        "/feeds/themes/climate-action.xml",
        "/feeds/regions/atlantis.rss",
        "/feeds/authors/nobody.json",
        "/feeds/archive/themes/climate-action/999.atom",
        "/feeds/archive/themes/climate-action/20000101000000-1.atom",
        "/feeds/manifest.json",
        "/feeds/stray.txt",
        "/feeds/themes/",
        "/feeds/nope",
    ],
)
def test_unknown_documents_are_404(client: httpx.Client, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 404
    assert b"do not serve" not in response.content


def request_target(port: int | None, target: str) -> tuple[int, bytes]:
    """Status and raw answer of a GET for ``target`` exactly as written (httpx would remove the dot segments)."""
    assert port is not None
    with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
        connection.sendall(f"GET {target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".encode())
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
    return int(answer.split(b" ", 2)[1]), answer


@pytest.mark.parametrize(
    "target",
    [
        "/feeds/../config.toml",
        "/feeds/../secret.txt",
        "/feeds/%2e%2e/secret.txt",
        "/feeds/%2e%2e%2fsecret.txt",
        "/feeds/..%2F..%2Fsecret.txt",
        "/feeds//etc/passwd",
        "/feeds/%2Fetc%2Fpasswd",
        "/feeds/./all.atom",
        "/feeds/themes/../all.atom",
        "/feeds/all.atom%00.txt",
    ],
)
def test_path_traversal_is_404(site: Site, target: str) -> None:
    status, answer = request_target(site.server.port, target)
    assert status == 404
    assert b"do not serve" not in answer
    assert b"[database]" not in answer


def test_the_home_page_leads_to_the_feeds_and_slashes_are_mended_relatively(site: Site, client: httpx.Client) -> None:
    response = client.get("/")
    assert response.status_code == 200 and 'href="/feeds/"' in response.text  # the home page (test_web_home)
    # A slash added or taken off, never an absolute address made from the Host the client sent.
    for path, expected in [
        ("/feeds", "/feeds/"),
        ("/subscribe/", "/subscribe"),
        ("/editor/login/?next=/x", "/editor/login?next=/x"),
    ]:
        bare = client.get(path, headers={"Host": "evil.example"})
        assert (bare.status_code, bare.headers["location"]) == (307, expected), path
    assert client.get("/feeds/themes/nowhere.atom/").status_code == 404  # no route takes it either way: no loop
    status, answer = request_target(site.server.port, "//evil.example/feeds")  # as sent, not as httpx reads it
    assert status == 404 and b"evil.example" not in answer  # never a Location of "//evil.example/feeds/"


def test_other_methods_are_refused(client: httpx.Client) -> None:
    assert client.post("/feeds/all.atom").status_code == 405
    assert client.delete("/feeds/all.atom").status_code == 405


def test_websub_hub_and_self_in_link_header(site: Site) -> None:
    hub = "https://hub.example.org/"
    settings = site.settings.model_copy(update={"feeds": site.settings.feeds.model_copy(update={"websub_hub": hub})})
    with live_server(create_app(settings)) as server, httpx.Client(base_url=server.url(), timeout=10) as client:
        response = client.get("/feeds/themes/resilience.atom")
    assert response.status_code == 200
    assert response.headers["link"] == (
        f'<{hub}>; rel="hub", <https://news.example.org/feeds/themes/resilience.atom>; rel="self"'
    )


def test_a_reader_polls_sees_304_then_the_rebuilt_feed(tmp_path: Path) -> None:
    settings = build_site(tmp_path, site_posts())
    newest = "Bogotá opens 40 km of bike lanes"
    with live_server(create_app(settings)) as server, httpx.Client(base_url=server.url(), timeout=10) as client:
        etag_before = client.get("/feeds/themes/circular-economy.atom").headers["etag"]
        tags: dict[str, str] = {}
        for path in ("/feeds/all.atom", "/feeds/themes/resilience.rss"):
            first = client.get(path)
            assert first.status_code == 200
            assert newest not in first.text
            tags[path] = first.headers["etag"]
            assert client.get(path, headers={"If-None-Match": tags[path]}).status_code == 304

        post = post_record(200, title=newest, themes=["resilience"], published="2024-05-31T09:00:00Z")
        # An hour later: the builder finds what changed by the store's change times.
        with Service.open(settings, fixed_clock(NOW + timedelta(hours=1))) as service:
            assert import_file(service, write_jsonl(tmp_path / "new.jsonl", [post])).added == 1
            publish_feeds(service)

        for path, old_tag in tags.items():
            polled = client.get(path, headers={"If-None-Match": old_tag})
            assert polled.status_code == 200
            assert polled.headers["etag"] != old_tag
            assert newest in polled.text
            assert client.get(path, headers={"If-None-Match": polled.headers["etag"]}).status_code == 304
        # A feed the new post is not in keeps its tag.
        unchanged = client.get("/feeds/themes/circular-economy.atom", headers={"If-None-Match": etag_before})
        assert unchanged.status_code == 304


# --- The manifest as the server reads it: written by hand here, for what the builder never writes ------------


def write_manifest(output: Path, documents: dict[str, dict[str, Any]], *, raw: bytes | None = None) -> None:
    """A manifest in the builder's format; ``raw`` writes those bytes instead."""
    output.mkdir(parents=True, exist_ok=True)
    body = raw if raw is not None else json.dumps({"version": 1, "documents": documents}).encode()
    temporary = output / ".manifest.tmp"
    temporary.write_bytes(body)
    temporary.replace(output / "manifest.json")


def entry(tag: str) -> dict[str, Any]:
    return {
        "etag": f'"{tag}"',
        "last_modified": "Tue, 05 Nov 2024 10:00:00 GMT",
        "content_type": "application/atom+xml; charset=utf-8",
    }


@pytest.fixture
def bare(tmp_path: Path) -> Iterator[tuple[Path, httpx.Client]]:
    """A server over an empty feeds folder, and a client of it."""
    output = tmp_path / "feeds"
    settings = Settings(feeds=FeedSettings(output_dir=output))
    with (
        live_server(create_app(settings)) as server,
        httpx.Client(base_url=server.url(), headers=IDENTITY, timeout=10) as client,
    ):
        yield output, client


def test_nothing_is_served_before_the_first_build(bare: tuple[Path, httpx.Client]) -> None:
    _output, client = bare
    assert client.get("/feeds/").status_code == 404
    assert client.get("/feeds/all.atom").status_code == 404


def test_unsafe_manifest_entries_are_not_served(bare: tuple[Path, httpx.Client], tmp_path: Path) -> None:
    output, client = bare
    output.mkdir()
    (output / "all.atom").write_bytes(b"<feed/>")
    (tmp_path / "secret.txt").write_text("do not serve", encoding="utf-8")
    bad_header = {**entry("b"), "content_type": "text/html\r\nSet-Cookie: x=1"}
    write_manifest(
        output,
        {
            "all.atom": entry("a"),
            "../secret.txt": entry("b"),
            "/etc/passwd": entry("c"),
            "themes//x.atom": entry("d"),
            "x.atom": bad_header,
            "y.atom": {**entry("e"), "etag": "no-quotes"},
        },
    )
    assert client.get("/feeds/all.atom").content == b"<feed/>"
    for target in ("/feeds/../secret.txt", "/feeds//etc/passwd", "/feeds/themes//x.atom"):
        status, answer = request_target(client.base_url.port, target)
        assert status == 404
        assert b"do not serve" not in answer
    assert client.get("/feeds/x.atom").status_code == 404
    assert client.get("/feeds/y.atom").status_code == 404


def test_a_broken_manifest_keeps_the_previous_one(bare: tuple[Path, httpx.Client]) -> None:
    output, client = bare
    output.mkdir()
    (output / "all.atom").write_bytes(b"<feed/>")
    write_manifest(output, {"all.atom": entry("a")})
    assert client.get("/feeds/all.atom").headers["etag"] == '"a"'
    write_manifest(output, {}, raw=b'{"version": 1, "documents": {"all.atom": ')
    assert client.get("/feeds/all.atom").headers["etag"] == '"a"'
    write_manifest(output, {}, raw=b'{"version": 2, "documents": {}}')
    assert client.get("/feeds/all.atom").headers["etag"] == '"a"'
    write_manifest(output, {"all.atom": entry("b")})
    assert client.get("/feeds/all.atom").headers["etag"] == '"b"'


def test_a_listed_file_that_is_gone_is_404(bare: tuple[Path, httpx.Client]) -> None:
    output, client = bare
    write_manifest(output, {"gone.atom": entry("a")})
    assert client.get("/feeds/gone.atom").status_code == 404
    # A 304 needs no file: the manifest vouches for the tag.
    assert client.get("/feeds/gone.atom", headers={"If-None-Match": '"a"'}).status_code == 304


def test_a_server_error_shows_no_traceback(bare: tuple[Path, httpx.Client], caplog: pytest.LogCaptureFixture) -> None:
    output, client = bare
    (output / "folder.atom").mkdir(parents=True)  # listed, but reading it fails
    write_manifest(output, {"folder.atom": entry("a")})
    response = client.get("/feeds/folder.atom")
    assert response.status_code == 500
    assert response.text == "Internal server error\n"
    assert response.headers["content-type"].startswith("text/plain")
    assert any("GET /feeds/folder.atom failed" in record.getMessage() for record in caplog.records)


def test_body_cache_keeps_within_its_budget() -> None:
    cache = BodyCache(max_bytes=800)
    for number in range(10):
        cache.put((f"{number}.atom", b'"t"'), bytes(100))
    assert cache.size <= 800
    assert cache.get(("0.atom", b'"t"')) is None  # the oldest went first
    assert cache.get(("9.atom", b'"t"')) == bytes(100)
    cache.get(("2.atom", b'"t"'))  # used: now the newest
    cache.put(("10.atom", b'"t"'), bytes(100))
    assert cache.get(("2.atom", b'"t"')) is not None
    assert cache.get(("3.atom", b'"t"')) is None
    cache.put(("big.atom", b'"t"'), bytes(101))  # over an eighth of the budget: not kept
    assert cache.get(("big.atom", b'"t"')) is None


def test_last_modified_never_goes_back_when_the_newest_post_leaves_a_feed(tmp_path: Path) -> None:
    settings = build_site(tmp_path, site_posts())
    manifest = settings.feeds.output_dir / "manifest.json"

    def last_modified() -> str:
        value: str = json.loads(manifest.read_text(encoding="utf-8"))["documents"]["all.atom"]["last_modified"]
        return value

    before = last_modified()
    with Service.open(settings, fixed_clock(NOW + timedelta(minutes=1))) as service:
        # The newest post is moved into the future (an editor unpublishes it): the feed's newest date goes back.
        moved = post_record(21, themes=["climate-action"], published="2030-01-01T00:00:00Z")
        assert import_file(service, write_jsonl(tmp_path / "moved.jsonl", [moved])).updated == 1
        publish_feeds(service)
    after = last_modified()
    assert parsedate_to_datetime(after) > parsedate_to_datetime(before)
    with live_server(create_app(settings)) as server, httpx.Client(base_url=server.url(), timeout=10) as client:
        response = client.get("/feeds/all.atom", headers={**IDENTITY, "If-Modified-Since": before})
        assert response.status_code == 200  # a reader that only sends If-Modified-Since still sees the change
        assert "Post number 21" not in response.text and response.headers["last-modified"] == after
        assert client.get("/feeds/all.atom", headers={**IDENTITY, "If-Modified-Since": after}).status_code == 304
    with Service.open(settings, fixed_clock(NOW + timedelta(minutes=2))) as service:
        publish_feeds(service)  # nothing new: the validators stay as they are
    assert last_modified() == after


def test_an_edit_to_a_post_of_the_last_built_batch_reaches_the_feeds(tmp_path: Path) -> None:
    # The last build's high-water mark is a moment shared by a whole batch: a later edit of one of its posts is
    # written later, and must not be mistaken for a post that build already saw.
    settings = build_site(tmp_path, site_posts())
    with Service.open(settings, fixed_clock(NOW + timedelta(minutes=1))) as service:
        edited = post_record(
            21, themes=["climate-action"], title="Post number 21, corrected", updated="2024-05-23T10:00:00Z"
        )
        assert import_file(service, write_jsonl(tmp_path / "edited.jsonl", [edited])).updated == 1
        report = publish_feeds(service)
    assert "all.atom" in report.written and "themes/climate-action.rss" in report.written
    assert "Post number 21, corrected" in (settings.feeds.output_dir / "all.atom").read_text(encoding="utf-8")


def test_a_post_moved_to_another_theme_leaves_the_feed_of_the_old_one(tmp_path: Path) -> None:
    settings = build_site(tmp_path, site_posts())
    out = settings.feeds.output_dir
    assert TITLES[4] in feedparser_titles(out / "themes/resilience.atom")
    with Service.open(settings, fixed_clock(NOW + timedelta(minutes=1))) as service:
        moved = post_record(4, title=TITLES[4], themes=["climate-action"], regions=["europe"],
                            updated="2024-05-30T10:00:00Z")  # fmt: skip
        assert import_file(service, write_jsonl(tmp_path / "moved.jsonl", [moved])).updated == 1
        report = publish_feeds(service)
    assert not report.full
    assert TITLES[4] not in feedparser_titles(out / "themes/resilience.atom")  # the feed it left
    assert TITLES[4] in feedparser_titles(out / "themes/climate-action.atom")
    assert TITLES[4] in feedparser_titles(out / "regions/europe.atom")
    with Service.open(settings, fixed_clock(NOW + timedelta(minutes=2))) as service:
        assert publish_feeds(service).written == []  # and nothing more to do afterwards


def feedparser_titles(path: Path) -> list[str]:
    """The entry titles of a built feed, as a reader sees them."""
    import feedparser

    return [entry.title for entry in feedparser.parse(path.read_bytes()).entries]


def test_departures_are_forgotten_after_a_while_and_a_late_build_still_drops_the_post(tmp_path: Path) -> None:
    settings = build_site(tmp_path, site_posts())
    out = settings.feeds.output_dir
    with Service.open(settings, fixed_clock(NOW + timedelta(minutes=1))) as service:
        moved = post_record(4, title=TITLES[4], themes=["climate-action"], updated="2024-05-30T10:00:00Z")
        assert import_file(service, write_jsonl(tmp_path / "moved.jsonl", [moved])).updated == 1
    months_later = NOW + DEPARTURES_KEPT + timedelta(days=1)
    with Service.open(settings, fixed_clock(months_later)) as service:
        publish_feeds(service, tmp_path / "mirror")  # another output directory: its build prunes what is old
        with database.transaction(service.engine) as session:
            assert post_store.departures_since(session, NOW) == set()
        # The first directory was last built before the move, and the move's departure is gone: it still drops it.
        report = publish_feeds(service)
    assert not report.full and "themes/resilience.atom" in report.written
    assert TITLES[4] not in feedparser_titles(out / "themes/resilience.atom")
    assert TITLES[4] in feedparser_titles(out / "themes/climate-action.atom")
