"""WordPress sites gathered through a real local server speaking the REST API, into the real store."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from syndication.app.gathering import gather
from syndication.app.service import Service
from syndication.cli import main
from syndication.core.models import Author, Image
from syndication.store import cursors, database
from tests.recorded import RecordedServer, Reply, serving, wordpress_api, wp_post
from tests.support import opened, stored, write_config

POSTS = "/wp-json/wp/v2/posts"


@pytest.fixture
def server() -> Iterator[RecordedServer]:
    with serving() as running:
        yield running


def wordpress_source(name: str, url: str, *, per_page: int = 3, extra: str = "") -> str:
    """One ``[[sources]]`` table of kind wordpress, allowed to reach the local server."""
    return (
        f'[[sources]]\nname = "{name}"\nkind = "wordpress"\nurl = "{url}"\nper_page = {per_page}\n'
        f"allow_private_networks = true\n{extra}\n"
    )


def saved_cursor(service: Service, name: str) -> dict[str, Any]:
    with database.transaction(service.engine) as session:
        return cursors.load_cursor(session, name)


def test_three_pages_are_read_and_the_next_pull_asks_only_for_changes(
    server: RecordedServer, tmp_path: Path, database_url: str
) -> None:
    site = [wp_post(n) for n in range(1, 8)]
    server.route(POSTS, wordpress_api(lambda: site))
    config = write_config(tmp_path, database_url, extra=wordpress_source("wp", server.url()))
    with opened(config) as service:
        [report] = gather(service)
        assert (report.failure, report.rejections, report.warnings) == (None, [], [])
        assert (report.seen, report.added) == (7, 7)
        first_pull = server.seen(POSTS)
        assert [request.query.get("page") for request in first_pull] == ["1", "2", "3"]
        assert first_pull[0].query == {
            "_embed": "1",
            "per_page": "3",
            "page": "1",
            "orderby": "modified",
            "order": "asc",
        }
        assert first_pull[0].headers["accept"] == "application/json"

        post = stored(service)["https://wp.example.org/?p=1&lang=en"]
        assert post.title == "WordPress post 1 – “quoted”"
        assert post.url == "https://wp.example.org/1/post-1/"
        assert post.content_html == "<p>Content of post 1.</p>"
        assert post.summary == "Excerpt of post 1 […]"
        # The *_gmt times carry no offset but are UTC by definition: no warning, no shift.
        assert post.published == datetime(2024, 5, 1, 10, tzinfo=UTC)
        assert post.updated == datetime(2024, 5, 1, 11, tzinfo=UTC)
        assert post.authors == (Author("kim-editor", "Kim Editor"),)
        # The category "low-emission" is an alias of a theme; the tag "Gardening" is nothing and says nothing.
        assert post.themes == ("climate-action",)
        assert post.image == Image("https://wp.example.org/uploads/1.jpg", "Picture 1")
        assert saved_cursor(service, "wp") == {"modified_gmt": "2024-05-07T11:00:00Z", "seen": ["7"]}

        [again] = gather(service)
        assert (again.seen, again.added, again.updated, again.failure) == (0, 0, 0, None)
        second_pull = server.seen(POSTS)[3:]
        assert len(second_pull) == 1
        # One second before the newest change seen: the post changed in that second is skipped by its id.
        assert second_pull[0].query["modified_after"] == "2024-05-07T10:59:59Z"

        site[2] = wp_post(3, modified_gmt="2024-05-20T09:00:00", title={"rendered": "Post three, revised"})
        site.append(wp_post(8))
        site.append(wp_post(9, modified_gmt="2024-05-07T11:00:00"))  # the same second as the cursor
        [third] = gather(service)
        assert (third.seen, third.added, third.updated, third.rejections) == (3, 2, 1, [])
        assert server.seen(POSTS)[-1].query["modified_after"] == "2024-05-07T10:59:59Z"
        posts = stored(service)
        assert len(posts) == 9
        assert posts["https://wp.example.org/?p=3&lang=en"].title == "Post three, revised"
        assert saved_cursor(service, "wp")["modified_gmt"] == "2024-05-20T09:00:00Z"


def test_a_page_of_invalid_json_fails_the_source_without_storing_half(
    server: RecordedServer, tmp_path: Path, database_url: str
) -> None:
    site = [wp_post(n) for n in range(1, 8)]
    broken = {"page": 2}
    server.route(POSTS, lambda request: wordpress_api(lambda: site, broken_page=broken["page"])(request))
    # One post per transaction: only reading every page first keeps page 1 out of the store.
    extra = wordpress_source("wp", server.url()) + "[gather]\nbatch_size = 1\n"
    config = write_config(tmp_path, database_url, extra=extra)
    with opened(config) as service:
        [report] = gather(service)
        page_two = server.url(f"{POSTS}?_embed=1&per_page=3&page=2&orderby=modified&order=asc")
        assert report.failure is not None
        assert report.failure.startswith(f"{page_two}: not valid JSON: ")
        assert report.seen == 0
        assert stored(service) == {}
        assert saved_cursor(service, "wp") == {}

        broken["page"] = 0
        [retried] = gather(service)
        assert (retried.added, retried.failure) == (7, None)
        assert "modified_after" not in server.seen(POSTS)[-1].query


def test_bad_items_are_rejected_and_the_rest_kept(
    server: RecordedServer, tmp_path: Path, database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    items: list[Any] = [
        "not a post",
        wp_post(2, title={"rendered": "  "}),
        wp_post(3, date_gmt="the third of May"),
        wp_post(4, link="javascript:alert(1)"),
        wp_post(5, content={"rendered": '<p onclick="x()">Safe<script>alert(1)</script> <a href="/about">a</a></p>'}),
    ]
    server.route(
        POSTS,
        Reply(
            200,
            json.dumps(items).encode(),
            {"Content-Type": "application/json", "X-WP-TotalPages": "1", "X-WP-Total": "5"},
        ),
    )
    config = write_config(tmp_path, database_url, extra=wordpress_source("wp", server.url(), per_page=10))
    with opened(config) as service:
        capsys.readouterr()
        assert main(["--config", str(config), "gather"]) == 1
        out, err = capsys.readouterr()
        assert out.strip() == "wp: 1 read, 1 added, 0 updated, 0 unchanged, 4 rejected"
        assert err.splitlines() == [
            "rejected: wp: page 1, item 1: not a JSON object (got str)",
            "rejected: wp: post 2 (https://wp.example.org/2/post-2/): missing title",
            "rejected: wp: post 3 (https://wp.example.org/3/post-3/): unparseable published date 'the third of May'",
            "rejected: wp: post 4 (javascript:alert(1)): invalid URL 'javascript:alert(1)'"
            " (an absolute http or https URL is needed)",
        ]
        [post] = stored(service).values()
        assert post.content_html == '<p>Safe <a href="https://wp.example.org/about" rel="noopener noreferrer">a</a></p>'
        # Rejected posts still move the cursor on: they come back only once they are changed.
        assert saved_cursor(service, "wp")["modified_gmt"] == "2024-05-05T11:00:00Z"


def test_escaped_titles_excerpts_and_names_become_their_text_once(
    server: RecordedServer, tmp_path: Path, database_url: str
) -> None:
    # WordPress renders titles and excerpts as HTML and stores display names HTML-escaped (issue 18).
    embedded = wp_post(1)["_embedded"]
    embedded["author"] = [{"id": 7, "name": "Tom &amp; Jerry &lt;3", "slug": "tom"}]
    embedded["wp:featuredmedia"][0]["alt_text"] = "a < b & c"  # kept as typed: alt text is not escaped
    item = wp_post(
        1,
        title={"rendered": "Caf&eacute; &amp; more &amp;lt;b&amp;gt;"},
        excerpt={"rendered": "<p>Ampersands &amp; angle &lt;brackets&gt; [&hellip;]</p>\n", "protected": False},
        _embedded=embedded,
    )
    server.route(POSTS, wordpress_api(lambda: [item]))
    config = write_config(tmp_path, database_url, extra=wordpress_source("wp", server.url()))
    with opened(config) as service:
        assert gather(service)[0].added == 1
        [post] = stored(service).values()
    assert post.title == "Café & more &lt;b&gt;"
    assert post.summary == "Ampersands & angle <brackets> […]"
    assert post.authors == (Author("tom-jerry-3", "Tom & Jerry <3"),)
    assert post.image == Image("https://wp.example.org/uploads/1.jpg", "a < b & c")


def test_a_page_past_the_end_stops_paging_when_the_total_is_not_sent(
    server: RecordedServer, tmp_path: Path, database_url: str
) -> None:
    site = [wp_post(n) for n in range(1, 7)]
    api = wordpress_api(lambda: site)

    def without_totals(request: Any) -> Reply:
        reply = api(request)
        reply.headers = {k: v for k, v in reply.headers.items() if not k.startswith("X-WP-")}
        return reply

    server.route(POSTS, without_totals)
    config = write_config(tmp_path, database_url, extra=wordpress_source("wp", server.url()))
    with opened(config) as service:
        [report] = gather(service)
        assert (report.added, report.failure) == (6, None)
        assert [request.query["page"] for request in server.seen(POSTS)] == ["1", "2", "3"]


def test_a_site_without_the_api_fails_with_a_hint(
    server: RecordedServer, tmp_path: Path, database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    server.route("/other" + POSTS, Reply(500, b"", {}))
    sources = wordpress_source("gone", server.url("/nothing")) + wordpress_source("down", server.url("/other"))
    config = write_config(tmp_path, database_url, extra=sources)
    with opened(config):
        capsys.readouterr()
        assert main(["--config", str(config), "gather"]) == 1
        err = capsys.readouterr().err.splitlines()
    query = "?_embed=1&per_page=3&page=1&orderby=modified&order=asc"
    assert err == [
        f"failed: gone: {server.url('/nothing' + POSTS + query)}: HTTP 404 Not Found"
        " (is the WordPress REST API enabled at this address?)",
        f"failed: down: {server.url('/other' + POSTS + query)}: HTTP 500 Internal Server Error",
    ]


def test_dates_out_of_range_odd_page_counts_and_huge_numbers_fail_no_more_than_their_item_or_source(
    server: RecordedServer, tmp_path: Path, database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    items = [wp_post(1, date_gmt="9999-12-31T23:00:00-05:00"), wp_post(2, modified_gmt="0001-01-01T00:00:00+01:00")]
    headers = {"Content-Type": "application/json", "X-WP-Total": "2"}
    server.route(POSTS, Reply(200, json.dumps(items).encode(), {**headers, "X-WP-TotalPages": "²"}))
    server.route("/huge" + POSTS, Reply(200, b'[{"id": ' + b"1" * 5000 + b"}]", {**headers, "X-WP-TotalPages": "1"}))
    sources = wordpress_source("wp", server.url(), per_page=10) + wordpress_source("huge", server.url("/huge"))
    config = write_config(tmp_path, database_url, extra=sources)
    with opened(config):
        capsys.readouterr()
        assert main(["--config", str(config), "gather"]) == 1
        out, err = capsys.readouterr()
    assert "internal error" not in err and "Traceback" not in err
    assert "rejected: wp: post 1 (https://wp.example.org/1/post-1/): unparseable published date" in err
    assert "rejected: wp: post 2 (https://wp.example.org/2/post-2/): unparseable updated date" in err
    assert "wp: 0 read, 0 added, 0 updated, 0 unchanged, 2 rejected" in out  # each item alone, and the source ran
    assert f"failed: huge: {server.url('/huge' + POSTS)}" in err and "not valid JSON" in err
