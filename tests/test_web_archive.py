"""The archive over real HTTP: "view in browser" copies of a sent edition, the public copy, the editions feed,
and the theme pages."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from urllib.parse import quote

import feedparser
import pytest

from syndication.app.editions import deliver, plan_edition
from syndication.app.gathering import import_file
from syndication.app.publishing import publish_feeds
from syndication.app.subscribers import add_subscriber, subscriber_token, token_subject
from syndication.config import load_settings, signing_keys
from syndication.core.models import EditionStatus, Subscriber
from syndication.core.tokens import make_token
from syndication.errors import ConfigError
from syndication.store import database, ledger
from syndication.store import subscribers as subscriber_store
from tests.support import post_record, write_jsonl
from tests.web_site import WebSite, web_site

SINCE, UNTIL = datetime(2024, 5, 1, tzinfo=UTC), datetime(2024, 6, 1, tzinfo=UTC)


@pytest.fixture
def site(tmp_path: Path, database_url: str) -> Iterator[WebSite]:
    """A site whose weekly edition of May 2024 went to Ana (everything, English) and Bo (resilience, Spanish)."""
    with web_site(tmp_path, database_url) as running:
        service = running.service
        add_subscriber(service, "ana@example.org", name="Ana", cadence="weekly", confirmed=True)
        add_subscriber(service, "bo@example.org", themes="resilience", cadence="weekly", language="es", confirmed=True)
        plan = plan_edition(service, "weekly", SINCE, UNTIL)
        assert plan.queued == 2
        report = deliver(service)
        assert report.sent == 2 and report.finished_editions == [plan.edition.id if plan.edition else 0]
        yield running


def view_link(site: WebSite, address: str) -> str:
    """The path of the "view in browser" link of the digest ``address`` received."""
    text = site.smtp.received_for(address)[0].parsed().get_body(("plain",))
    assert text is not None
    match = re.search(r"http://127\.0\.0\.1:\d+(/editions/\d+\?t=[A-Za-z0-9._%-]+)", text.get_content())
    assert match, text.get_content()
    return match.group(1)


def test_view_in_browser_is_the_readers_own_copy(site: WebSite) -> None:
    with site.client() as client:
        bo = client.get(view_link(site, "bo@example.org"))
        ana = client.get(view_link(site, "ana@example.org"))
    assert bo.status_code == 200 and bo.headers["content-type"].startswith("text/html")
    policy = bo.headers["content-security-policy"]
    assert "script-src" not in policy and "default-src 'none'" in policy and "frame-ancestors 'self'" in policy
    assert bo.headers["cache-control"] == "no-store" and bo.headers["referrer-policy"] == "no-referrer"
    assert "Sponge streets for São Paulo" in bo.text and "Malmö opens" not in bo.text  # resilience only
    assert 'lang="es"' in bo.text
    assert "/preferences/" in bo.text and "/unsubscribe/" in bo.text  # Bo's own links, as in the email
    assert "Malmö opens a low-emission zone" in ana.text and 'lang="en"' in ana.text
    assert "Repair cafés &amp; &lt;tool&gt; libraries" in ana.text  # escaped, as in the email


def test_the_view_link_says_the_readers_language_even_where_it_no_longer_works(site: WebSite) -> None:
    """The copy is the email, in its language; the link says it too (``lang``), so that the page saying a link
    does not work (a token cut short, say) is in that language, whatever the browser asks for."""
    text = site.smtp.received_for("bo@example.org")[0].parsed().get_body(("plain",))
    assert text is not None
    link = view_link(site, "bo@example.org")
    assert re.search(rf"{re.escape(link)}&lang=es\s", text.get_content()), text.get_content()
    broken = f"{link[:-3]}abc&lang=es"
    with site.client() as client:
        copy = client.get(f"{link}&lang=es", headers={"Accept-Language": "en"})
        refused = client.get(broken, headers={"Accept-Language": "en"})
    base = site.settings.site.base_url
    assert copy.status_code == 200 and f'href="{base}/?lang=es"' in copy.text  # its links to the site too
    assert refused.status_code == 400 and '<html lang="es">' in refused.text
    assert "Este enlace no funciona" in refused.text and 'href="/editions/1?lang=es"' in refused.text


def test_the_public_copy_has_every_theme_and_no_personal_link(site: WebSite) -> None:
    with site.client() as client:
        public = client.get("/editions/1")
        listing = client.get("/editions/")
    assert public.status_code == 200
    assert public.headers["cache-control"].startswith("public")
    assert all(title in public.text for title in ("Malmö opens", "Sponge streets", "Repair cafés", "Heat pumps"))
    assert "/preferences/" not in public.text and "/unsubscribe/" not in public.text
    assert f"{site.settings.site.base_url}/subscribe" in public.text
    assert listing.status_code == 200 and 'href="/editions/1"' in listing.text
    assert 'rel="alternate" type="application/atom+xml"' in listing.text


def test_view_links_that_are_forged_or_for_something_else_are_refused(site: WebSite) -> None:
    keys = signing_keys(site.settings)
    link = view_link(site, "bo@example.org")
    token = link.split("?t=", 1)[1]
    with database.transaction(site.service.engine) as session:
        draft, _ = ledger.create_edition(session, "daily", SINCE, UNTIL, UNTIL, EditionStatus.DRAFT)
    bo_subject = token_subject(_subscriber(site, "bo@example.org"))
    cases = {
        f"/editions/1?t={token[:-3]}abc": (400, "not valid"),
        f"/editions/1?t={subscriber_token(site.service, 'preferences', _subscriber(site, 'bo@example.org'))}": (
            400,
            "not valid",
        ),
        f"/editions/1?t={quote(make_token(keys, 'view', f'{draft.id}/{bo_subject}'))}": (400, "another edition"),
        f"/editions/{draft.id}?t={quote(make_token(keys, 'view', f'{draft.id}/{bo_subject}'))}": (404, "No such"),
        f"/editions/{draft.id}": (404, "No such edition"),  # a draft is nobody's to read yet
        "/editions/999": (404, "No such edition"),
        "/editions/abc": (404, ""),
        "/editions/1?t=": (200, "Heat pumps"),  # an empty token is no token: the public copy
        "/editions/9223372036854775808": (404, ""),  # past a 64-bit id: no such page, not a failed query
        "/editions/99999999999999999999": (404, ""),
    }
    with site.client() as client:
        for path, (status, text) in cases.items():
            answer = client.get(path)
            assert answer.status_code == status, (path, answer.text)
            assert text in answer.text and "Traceback" not in answer.text, path


def _subscriber(site: WebSite, address: str) -> Subscriber:
    with database.transaction(site.service.engine) as session:
        found = subscriber_store.subscriber_by_email(session, address)
    assert found is not None
    return found


def test_the_editions_feed_lists_sent_editions_and_answers_304(site: WebSite) -> None:
    with site.client() as client:
        answer = client.get("/feeds/editions.atom")
        again = client.get("/feeds/editions.atom", headers={"If-None-Match": answer.headers["etag"]})
        any_tag = client.get("/feeds/editions.atom", headers={"If-None-Match": "*"})
        since = client.get("/feeds/editions.atom", headers={"If-Modified-Since": answer.headers["last-modified"]})
        plain = client.get("/feeds/editions.atom", headers={"Accept-Encoding": "identity"})
        other_feed = client.get("/feeds/themes/resilience.atom")
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("application/atom+xml")
    parsed = feedparser.parse(answer.content)
    assert not parsed.bozo, parsed.bozo_exception
    base = site.settings.site.base_url
    assert [entry.link for entry in parsed.entries] == [f"{base}/editions/1"]
    assert parsed.entries[0].title.startswith("Weekly digest, 1 May 2024 to 1 Jun 2024")
    assert parsed.feed.title == "Test Network: editions"
    assert any(link.rel == "self" and link.href == f"{base}/feeds/editions.atom" for link in parsed.feed.links)
    assert again.status_code == 304 and any_tag.status_code == 304 and since.status_code == 304
    # Like the built feeds: a gzip variant with a tag of its own, and the identity body for those who ask for it.
    assert answer.headers["content-encoding"] == "gzip" and answer.headers["vary"] == "Accept-Encoding"
    assert "content-encoding" not in plain.headers and plain.content == answer.content
    assert plain.headers["etag"] != answer.headers["etag"]
    assert parsedate_to_datetime(answer.headers["last-modified"]) == datetime(2024, 6, 1, tzinfo=UTC)
    assert other_feed.status_code == 404  # the feed files are not built here: the files' route still answers


def test_kept_copies_follow_the_store_a_new_edition_is_in_the_feed_at_once(site: WebSite, tmp_path: Path) -> None:
    """The app keeps the editions feed and the public copies rendered; a request still sees what the store says."""
    with site.client() as client:
        first = client.get("/feeds/editions.atom", headers={"Accept-Encoding": "identity"})
        public = client.get("/editions/1")
        assert client.get("/editions/1").content == public.content  # the kept copy is the same bytes
        june = post_record(9, title="Bike lanes in Bogotá", published="2024-06-10T10:00:00Z", themes=["resilience"])
        assert import_file(site.service, write_jsonl(tmp_path / "june.jsonl", [june])).ok
        plan = plan_edition(site.service, "weekly", UNTIL, datetime(2024, 7, 1, tzinfo=UTC))
        assert plan.edition is not None and plan.queued == 2
        assert client.get("/editions/2").status_code == 404  # not sent yet: no public copy kept either
        assert client.get("/feeds/editions.atom", headers={"Accept-Encoding": "identity"}).content == first.content
        deliver(site.service)
        second = client.get("/feeds/editions.atom", headers={"Accept-Encoding": "identity"})
        later = client.get("/editions/2")
    base = site.settings.site.base_url
    links = [entry.link for entry in feedparser.parse(second.content).entries]
    assert links == [f"{base}/editions/2", f"{base}/editions/1"] and second.headers["etag"] != first.headers["etag"]
    assert later.status_code == 200 and later.content != public.content


def test_theme_pages_list_recent_posts_with_their_feeds(site: WebSite) -> None:
    with site.client() as client:
        page = client.get("/themes/resilience")
        unknown = client.get("/themes/astrology")
        every = client.get("/themes/")
    assert page.status_code == 200 and "<h1>Resilience</h1>" in page.text
    for fmt, kind in (
        ("atom", "application/atom+xml"),
        ("rss", "application/rss+xml"),
        ("json", "application/feed+json"),
    ):
        assert f'<link rel="alternate" type="{kind}"' in page.text and f"/feeds/themes/resilience.{fmt}" in page.text
    assert "Sponge streets for São Paulo" in page.text and "Heat pumps in Kraków" in page.text
    assert "Malmö opens" not in page.text
    assert "also in Climate action" in page.text
    assert 'href="/subscribe?themes=resilience"' in page.text
    assert "set-cookie" not in page.headers  # no form, no cookie
    assert unknown.status_code == 404 and "No such theme" in unknown.text
    assert every.status_code == 200 and "2 posts" in every.text


def test_a_site_folder_replaces_shipped_pages_and_assets_and_the_rest_stay(tmp_path: Path, database_url: str) -> None:
    own = tmp_path / "site-templates"
    own.mkdir()
    (own / "themes.html").write_text(
        '{% extends "base.html" %}{% block content %}<h1>Our own list</h1>'
        "{% for theme, count in themes %}<p>{{ theme.name }}: {{ count }}</p>{% endfor %}{% endblock %}",
        encoding="utf-8",
    )
    (own / "site.css").write_text("body { color: rebeccapurple; }\n", encoding="utf-8")
    (own / "feeds_index.html").write_text("<!doctype html><title>{{ site.title }}</title><p>our feeds</p>\n")
    site_folder = tmp_path / "site"
    site_folder.mkdir()
    with web_site(site_folder, database_url, f'[web]\ntemplates_dir = "{own}"\n') as site, site.client() as client:
        themes = client.get("/themes/")
        assert themes.status_code == 200 and "<h1>Our own list</h1>" in themes.text
        assert "Climate action: 2" in themes.text  # the page's data is the app's, only the template is the site's
        css = re.search(r'href="(/assets/site\.css\?v=[0-9a-f]+)"', themes.text)
        assert css is not None and client.get(css.group(1)).text == "body { color: rebeccapurple; }\n"
        # A page the site did not replace is the shipped one.
        assert client.get("/subscribe").status_code == 200
        publish_feeds(site.service)
        assert "our feeds" in (site_folder / "feeds" / "index.html").read_text(encoding="utf-8")


def test_a_web_templates_dir_that_is_not_a_folder_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text('[web]\ntemplates_dir = "nowhere"\n', encoding="utf-8")
    with pytest.raises(ConfigError, match=r"web\.templates_dir: .*nowhere is not a folder"):
        load_settings(config)
