"""The home page, HEAD wherever GET is answered, and the favicon: real HTTP to the real app (tests/web_site.py)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from syndication.app.publishing import publish_feeds
from tests.web_site import WebSite, web_site

LANGUAGES = '[digest]\nlanguages = ["en", "es"]\n'
# Headers that differ from one answer to the next whatever the method: a request's own id, the date, and a new
# visitor's CSRF cookie (a token of its own each time).
PER_REQUEST = {"x-request-id", "date", "set-cookie"}


@pytest.fixture
def site(tmp_path: Path, database_url: str) -> Iterator[WebSite]:
    with web_site(tmp_path, database_url, LANGUAGES) as running:
        publish_feeds(running.service)  # /feeds/ is what a build wrote
        yield running


def links(html: str) -> set[str]:
    main = html.split('<main id="main"', 1)[1]  # the page's own links, not the masthead's
    return set(re.findall(r'<a href="([^"]*)"', main))


def test_the_home_page_leads_to_subscribe_editions_themes_and_feeds(site: WebSite) -> None:
    with site.client() as client:
        page = client.get("/")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert "<h1>Test Network</h1>" in page.text and "<title>Test Network</title>" in page.text
        assert links(page.text) == {"/subscribe", "/editions/", "/themes/", "/feeds/"}
        for href in links(page.text):  # every one of them is a page
            assert client.get(href).status_code == 200, href

        spanish = client.get("/", params={"lang": "es"})
        assert '<html lang="es">' in spanish.text
        assert ">Suscribirse</a>" in spanish.text and ">Ediciones anteriores</a>" in spanish.text
        assert ">Temas</a>" in spanish.text
        # A language chosen in the URL stays chosen on the way on; the feeds are the same in every language.
        assert links(spanish.text) == {"/subscribe?lang=es", "/editions/?lang=es", "/themes/?lang=es", "/feeds/"}
        browser = client.get("/", headers={"Accept-Language": "es-MX,en;q=0.5"})
        assert '<html lang="es">' in browser.text and "Accept-Language" in browser.headers["vary"]


@pytest.mark.parametrize(
    "path", ["/", "/subscribe", "/editions/", "/themes/", "/themes/climate-action", "/feeds/all.atom", "/healthz"]
)
def test_head_answers_as_get_does_without_a_body(site: WebSite, path: str) -> None:
    with site.client() as client:  # a client each: the same new visitor twice
        got = client.get(path)
    with site.client() as client:
        head = client.head(path)
    assert got.status_code == 200, path
    assert ("set-cookie" in head.headers) == ("set-cookie" in got.headers)
    assert head.status_code == got.status_code
    assert head.content == b""
    same = {key for key in got.headers if key not in PER_REQUEST}
    assert {key: head.headers.get(key) for key in same} == {key: got.headers[key] for key in same}
    assert head.headers["content-length"] == got.headers["content-length"] != "0"  # the body's, gzipped or not


def test_a_post_only_address_refuses_head_as_it_refuses_get(site: WebSite) -> None:
    with site.client() as client:
        assert client.head("/editor/logout").status_code == client.get("/editor/logout").status_code == 405


def test_every_page_links_a_shipped_icon_and_favicon_ico_leads_to_it(site: WebSite) -> None:
    with site.client() as client:
        hrefs = set()
        for path in ("/", "/subscribe", "/themes/"):
            found = re.search(r'<link rel="icon" href="([^"]+)" type="image/svg\+xml">', client.get(path).text)
            assert found is not None, path
            hrefs.add(found.group(1))
        (href,) = hrefs
        icon = client.get(href)
        assert icon.status_code == 200 and icon.headers["content-type"] == "image/svg+xml"
        assert icon.content.startswith(b"<svg") and len(icon.content) < 2048
        assert "immutable" in icon.headers["cache-control"]
        legacy = client.get("/favicon.ico")
        assert legacy.status_code == 302 and legacy.headers["location"] == href
        assert client.head("/favicon.ico").status_code == 302
