"""RSS and Atom feeds gathered from a real local server and from files, into the real store, and via the CLI."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from syndication.app.gathering import gather
from syndication.cli import main
from syndication.core.models import Author, Image
from syndication.store import cursors, database
from tests.recorded import RecordedServer, Reply, atom_document, document, rss_document, rss_item, serving
from tests.support import opened, stored, write_config

RSS = "application/rss+xml; charset=utf-8"
ATOM = "application/atom+xml"


@pytest.fixture
def server() -> Iterator[RecordedServer]:
    with serving() as running:
        yield running


def feed_source(
    name: str, *, url: str | None = None, path: Path | None = None, allow: bool = True, extra: str = ""
) -> str:
    """One ``[[sources]]`` table of kind feed."""
    where = f"url = {_toml(url)}" if url is not None else f"path = {_toml(str(path))}"
    return (
        f'[[sources]]\nname = "{name}"\nkind = "feed"\n{where}\n'
        f"allow_private_networks = {str(allow).lower()}\n{extra}\n"
    )


def _toml(value: str | None) -> str:
    assert value is not None
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def gather_cli(config: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    capsys.readouterr()
    status = main(["--config", str(config), "gather"])
    out, err = capsys.readouterr()
    return status, out, err


def test_rss_from_a_url_is_stored_then_asked_for_conditionally(
    server: RecordedServer, tmp_path: Path, database_url: str
) -> None:
    body = rss_document(
        [
            rss_item(1, title="Fish &amp; chips <b>now</b>", author="jane@example.org (Jane Doe)"),
            rss_item(2, category=["Climate", "Gardening", "WASTE"]),
            rss_item(3, **{"content:encoded": "<p>Full text of three.</p>", "description": "Short three."}),
        ]
    )
    server.route("/feed.xml", document(body, RSS, etag='"rev-1"'))
    config = write_config(tmp_path, database_url, extra=feed_source("blog", url=server.url("/feed.xml")))
    with opened(config) as service:
        [report] = gather(service)
        assert (report.failure, report.rejections, report.warnings) == (None, [], [])
        assert (report.seen, report.added) == (3, 3)
        posts = stored(service)
        one = posts["urn:feed:1"]
        assert one.title == "Fish & chips now"
        assert one.url == "https://blog.example.org/posts/1"
        assert one.authors == (Author("jane-doe", "Jane Doe"),)
        assert one.published == one.updated == datetime(2024, 5, 1, 10, tzinfo=UTC)
        assert one.summary == "Body of feed post 1."
        assert one.language == "en"
        # Known categories (and aliases, in any case) become themes; unknown ones pass silently.
        assert posts["urn:feed:2"].themes == ("climate-action", "circular-economy")
        assert posts["urn:feed:3"].content_html == "<p>Full text of three.</p>"
        assert posts["urn:feed:3"].summary == "Short three."

        [again] = gather(service)
        assert (again.seen, again.added, again.updated, again.failure) == (0, 0, 0, None)
        requests = server.seen("/feed.xml")
        assert len(requests) == 2
        assert "if-none-match" not in requests[0].headers
        assert requests[1].headers["if-none-match"] == '"rev-1"'
        with database.transaction(service.engine) as session:
            assert cursors.load_cursor(session, "blog") == {"url": server.url("/feed.xml"), "etag": '"rev-1"'}


def test_a_feed_without_validators_is_read_again_and_adds_nothing(
    server: RecordedServer, tmp_path: Path, database_url: str
) -> None:
    server.route("/feed.xml", Reply(200, rss_document([rss_item(1), rss_item(2)]), {"Content-Type": RSS}))
    config = write_config(tmp_path, database_url, extra=feed_source("blog", url=server.url("/feed.xml")))
    with opened(config) as service:
        assert gather(service)[0].added == 2
        [again] = gather(service)
        assert (again.seen, again.added, again.updated, again.unchanged) == (2, 0, 0, 2)
        assert len(stored(service)) == 2


def test_an_updated_atom_entry_is_updated_in_place(server: RecordedServer, tmp_path: Path, database_url: str) -> None:
    def entry(title: str, updated: str) -> str:
        return (
            f'<entry><title type="html">{title}</title><id>urn:atom:1</id><link href="articles/one"/>'
            f"<published>2024-05-02T08:00:00+02:00</published><updated>{updated}</updated>"
            '<summary type="text">Plain &lt;3 summary</summary>'
            '<content type="xhtml"><div xmlns="http://www.w3.org/1999/xhtml"><p>Hello <em>there</em></p></div>'
            '</content><author><name>Ana Pérez</name></author><category term="resilience"/></entry>'
        )

    server.route(
        "/atom", document(atom_document([entry("First &amp;amp; best", "2024-05-02T06:00:00Z")]), ATOM, etag='"a"')
    )
    config = write_config(tmp_path, database_url, extra=feed_source("atom", url=server.url("/atom")))
    with opened(config) as service:
        assert gather(service)[0].added == 1
        [post] = stored(service).values()
        assert post.title == "First & best"
        # Atom resolves relative links against the document's own URL.
        assert post.url == server.url("/articles/one")
        assert post.published == datetime(2024, 5, 2, 6, tzinfo=UTC)
        assert post.content_html == "<p>Hello <em>there</em></p>"
        assert post.summary == "Plain <3 summary"
        assert post.language == "de"
        assert post.themes == ("resilience",)

        server.route("/atom", document(atom_document([entry("Second take", "2024-05-04T09:30:00Z")]), ATOM, etag='"b"'))
        [report] = gather(service)
        assert (report.seen, report.added, report.updated) == (1, 0, 1)
        [post] = stored(service).values()
        assert post.title == "Second take"
        assert post.updated == datetime(2024, 5, 4, 9, 30, tzinfo=UTC)
        assert post.published == datetime(2024, 5, 2, 6, tzinfo=UTC)


def test_a_feed_file_is_read_again_only_when_it_changes(tmp_path: Path, database_url: str) -> None:
    feed = tmp_path / "feed.xml"
    feed.write_bytes(rss_document([rss_item(1), rss_item(2)]))
    config = write_config(tmp_path, database_url, extra=feed_source("file", path=Path("feed.xml")))
    with opened(config) as service:
        assert gather(service)[0].added == 2
        [unchanged] = gather(service)
        assert (unchanged.seen, unchanged.added, unchanged.failure) == (0, 0, None)

        feed.write_bytes(rss_document([rss_item(1), rss_item(2), rss_item(3)]))
        [changed] = gather(service)
        assert (changed.seen, changed.added, changed.unchanged) == (3, 1, 2)
        assert sorted(stored(service)) == ["urn:feed:1", "urn:feed:2", "urn:feed:3"]


def test_bad_entries_are_rejected_by_position_and_good_ones_kept(
    server: RecordedServer, tmp_path: Path, database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    body = rss_document(
        [
            rss_item(1),
            rss_item(2, title=None),
            rss_item(3, link="ftp://files.example.org/three"),
            rss_item(4, pubDate="sometime in May"),
            rss_item(5, pubDate=None),
            rss_item(6),
        ]
    )
    server.route("/feed.xml", Reply(200, body, {"Content-Type": RSS}))
    config = write_config(tmp_path, database_url, extra=feed_source("blog", url=server.url("/feed.xml")))
    with opened(config) as service:
        status, out, err = gather_cli(config, capsys)
        assert status == 1
        assert "blog: 2 read, 2 added, 0 updated, 0 unchanged, 4 rejected" in out
        assert err.splitlines() == [
            "rejected: blog: entry 2 (urn:feed:2): missing title",
            "rejected: blog: entry 3 (urn:feed:3): invalid URL 'ftp://files.example.org/three'"
            " (an absolute http or https URL is needed)",
            "rejected: blog: entry 4 (urn:feed:4): unparseable published date 'sometime in May'",
            "rejected: blog: entry 5 (urn:feed:5): missing published date",
        ]
        assert sorted(stored(service)) == ["urn:feed:1", "urn:feed:6"]


def test_hostile_content_is_sanitised_and_relative_links_made_absolute(
    server: RecordedServer, tmp_path: Path, database_url: str
) -> None:
    hostile = (
        '<p onclick="steal()">Hi <a href="javascript:alert(1)">click</a> <a href="/about">about</a>'
        '<script>alert(1)</script><img src="pics/a.png" onerror="steal()"></p><iframe src="https://evil.example/">'
    )
    item = rss_item(
        7,
        link="posts/7",
        title='<em onclick="steal()">Safe</em> title',
        **{"content:encoded": hostile, "media:thumbnail": "thumbs/7.jpg"},
    )
    body = rss_document([item], link="/blog/")
    server.route("/feeds/main.xml", Reply(200, body, {"Content-Type": RSS}))
    config = write_config(tmp_path, database_url, extra=feed_source("blog", url=server.url("/feeds/main.xml")))
    with opened(config) as service:
        [report] = gather(service)
        assert (report.added, report.rejections) == (1, [])
        [post] = stored(service).values()
    # RSS links resolve against the channel's <link>, itself resolved against the feed's address.
    assert post.url == server.url("/blog/posts/7")
    assert post.title == "Safe title"
    for forbidden in ("script", "onclick", "onerror", "javascript:", "iframe", "steal"):
        assert forbidden not in post.content_html
    assert f'href="{server.url("/about")}"' in post.content_html
    assert f'src="{server.url("/blog/posts/pics/a.png")}"' in post.content_html
    assert post.image == Image(server.url("/blog/posts/thumbs/7.jpg"), "")


def test_text_and_html_constructs_both_arrive_as_the_text_they_say(tmp_path: Path, database_url: str) -> None:
    # Atom says which constructs are text and which HTML; an HTML one is read once, never twice (issue 18).
    entries = [
        '<entry><title type="text">Ampersands &amp; angle &lt;brackets&gt;</title><id>urn:atom:text</id>'
        '<link href="https://atom.example.org/text"/><updated>2024-05-02T08:00:00Z</updated>'
        '<summary type="text">Plain &amp; &lt;text&gt; summary</summary>'
        '<content type="html">&lt;p&gt;Body&lt;/p&gt;</content>'
        "<author><name>Tom &amp; &lt;Jerry&gt;</name></author></entry>",
        '<entry><title type="html">Caf&amp;eacute; &amp;amp; more</title><id>urn:atom:html</id>'
        '<link href="https://atom.example.org/html"/><updated>2024-05-03T08:00:00Z</updated>'
        '<summary type="html">&lt;p&gt;Ampersands &amp;amp; angle &amp;lt;brackets&amp;gt;&lt;/p&gt;</summary>'
        '<content type="html">&lt;p&gt;Body&lt;/p&gt;</content></entry>',
    ]
    (tmp_path / "feed.atom").write_bytes(atom_document(entries))
    # RSS titles are text unless they look like markup; descriptions are HTML.
    item = rss_item(1, title="AT&T <brackets>", description="<p>Fish &amp; chips &lt;3</p>")
    item["content:encoded"] = "<p>Full text.</p>"
    (tmp_path / "feed.rss").write_bytes(rss_document([item]))
    sources = feed_source("atom", path=Path("feed.atom")) + feed_source("rss", path=Path("feed.rss"))
    config = write_config(tmp_path, database_url, extra=sources)
    with opened(config) as service:
        assert [(report.added, report.rejections) for report in gather(service)] == [(2, []), (1, [])]
        posts = stored(service)
    text, html, rss = posts["urn:atom:text"], posts["urn:atom:html"], posts["urn:feed:1"]
    assert (text.title, text.summary) == ("Ampersands & angle <brackets>", "Plain & <text> summary")
    assert text.authors == (Author("tom-jerry", "Tom & <Jerry>"),)
    assert (html.title, html.summary) == ("Café & more", "Ampersands & angle <brackets>")
    assert (rss.title, rss.summary) == ("AT&T <brackets>", "Fish & chips <3")
    assert text.content_html == html.content_html == "<p>Body</p>"


def test_a_loopback_feed_is_refused_by_default(
    server: RecordedServer, tmp_path: Path, database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    server.route("/feed.xml", Reply(200, rss_document([rss_item(1)]), {"Content-Type": RSS}))
    url = server.url("/feed.xml")
    config = write_config(tmp_path, database_url, extra=feed_source("blog", url=url, allow=False))
    with opened(config) as service:
        status, out, err = gather_cli(config, capsys)
        assert status == 1
        assert err.splitlines() == [
            f"failed: blog: {url}: refused: 127.0.0.1 is a loopback address"
            " (set allow_private_networks = true to allow it)"
        ]
        assert "blog: 0 read, 0 added, 0 updated, 0 unchanged, 0 rejected, source failed" in out
        assert stored(service) == {}
        assert server.requests == []


def test_a_failing_source_does_not_stop_the_others(
    server: RecordedServer, tmp_path: Path, database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    server.route("/broken.xml", Reply(500, b"boom", {"Content-Type": "text/plain"}))
    server.route("/page.html", Reply(200, b"<html><body><p>Hello</p></body></html>", {"Content-Type": "text/html"}))
    server.route("/big.xml", Reply(200, rss_document([rss_item(n) for n in range(1, 20)]), {"Content-Type": RSS}))
    server.route("/good.xml", Reply(200, rss_document([rss_item(1), rss_item(2)]), {"Content-Type": RSS}))
    sources = "".join(
        [
            feed_source("broken", url=server.url("/broken.xml")),
            feed_source("html", url=server.url("/page.html")),
            feed_source("big", url=server.url("/big.xml"), extra="max_bytes = 2000"),
            feed_source("good", url=server.url("/good.xml")),
        ]
    )
    config = write_config(tmp_path, database_url, extra=sources)
    with opened(config) as service:
        status, out, err = gather_cli(config, capsys)
        assert status == 1
        assert err.splitlines() == [
            f"failed: broken: {server.url('/broken.xml')}: HTTP 500 Internal Server Error",
            f"failed: html: {server.url('/page.html')}: not an RSS or Atom feed: text/html is not an XML media type",
            f"failed: big: {server.url('/big.xml')}: refused: the response is "
            f"{len(rss_document([rss_item(n) for n in range(1, 20)]))} bytes, over max_bytes = 2000",
        ]
        assert "broken: 0 read, 0 added, 0 updated, 0 unchanged, 0 rejected, source failed" in out
        assert "good: 2 read, 2 added, 0 updated, 0 unchanged, 0 rejected" in out
        assert sorted(stored(service)) == ["urn:feed:1", "urn:feed:2"]


def test_a_broken_feed_with_entries_is_read_with_a_warning(
    server: RecordedServer, tmp_path: Path, database_url: str
) -> None:
    whole = rss_document([rss_item(1), rss_item(2)]).decode()
    cut = whole[: whole.index("</item>", whole.index("urn:feed:2")) + len("</item>")]  # no closing tags
    server.route("/feed.xml", Reply(200, cut.encode(), {"Content-Type": RSS}))
    config = write_config(tmp_path, database_url, extra=feed_source("blog", url=server.url("/feed.xml")))
    with opened(config) as service:
        [report] = gather(service)
        assert (report.added, report.failure, report.rejections) == (2, None, [])
        [warning] = report.warnings
        assert warning.where == "feed"
        assert warning.reason.startswith("not well-formed, read as far as possible: ")


def test_images_come_from_image_enclosures_and_media(server: RecordedServer, tmp_path: Path, database_url: str) -> None:
    enclosed = (
        "<item><title>Enclosed</title><link>https://blog.example.org/e</link><guid>urn:e</guid>"
        "<pubDate>Thu, 02 May 2024 10:00:00 GMT</pubDate>"
        '<enclosure url="https://cdn.example.org/talk.mp3" type="audio/mpeg" length="9"/>'
        '<enclosure url="https://cdn.example.org/e.png" type="image/png" length="9"/></item>'
    )
    plain = rss_item(3)
    server.route("/feed.xml", Reply(200, rss_document([plain], raw_item_xml=[enclosed]), {"Content-Type": RSS}))
    config = write_config(tmp_path, database_url, extra=feed_source("blog", url=server.url("/feed.xml")))
    with opened(config) as service:
        assert gather(service)[0].added == 2
        posts = stored(service)
    assert posts["urn:e"].image == Image("https://cdn.example.org/e.png", "")
    assert posts["urn:feed:3"].image is None


def test_a_body_that_names_a_local_file_is_never_opened_as_one(
    server: RecordedServer, tmp_path: Path, database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # feedparser opens bytes that look like a path as a local file: a server could make us publish our own files.
    secret = tmp_path / "secret.xml"
    secret.write_bytes(rss_document([rss_item(99, title="SECRET LOCAL FILE")]))
    server.route("/path.xml", Reply(200, str(secret).encode(), {"Content-Type": RSS}))
    config = write_config(tmp_path, database_url, extra=feed_source("path", url=server.url("/path.xml")))
    with opened(config) as service:
        status, _out, err = gather_cli(config, capsys)
        assert status == 1 and f"failed: path: {server.url('/path.xml')}: not an RSS or Atom feed" in err
        assert stored(service) == {}
