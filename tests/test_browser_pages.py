"""The web pages in a real browser: headless Chromium walks the subscriber's and the editor's paths against the
real app under uvicorn and a real SMTP server, reading the links from the emails it receives.

The subscriber's walk runs with JavaScript switched off (the pages work without it); the editor's with it on,
to see the delivery progress follow the sending live. Screenshots land in ``test-artifacts/``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, Route, expect

from syndication.app.editions import plan_edition
from syndication.app.subscribers import add_subscriber
from syndication.core.models import EditionStatus
from syndication.store import database, ledger
from tests.browser import artifact, chromium_browser, requires_chromium
from tests.web_site import EDITOR, PASSWORD, WebSite, link_in_email, web_site

pytestmark = requires_chromium

SINCE, UNTIL = datetime(2024, 5, 1, tzinfo=UTC), datetime(2024, 6, 1, tzinfo=UTC)
TIMEOUT_MS = 10_000


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium_browser() as launched:
        yield launched


@contextmanager
def browsing(
    browser: Browser, site: WebSite, *, width: int, javascript: bool, locale: str = "en-US"
) -> Iterator[tuple[Page, list[str]]]:
    """A page of a fresh browser context that may reach the site and nothing else (other requests are refused
    and listed); ``locale`` is the language the browser asks for (its Accept-Language)."""
    origin = site.server.url()
    refused: list[str] = []

    def route(request_route: Route) -> None:
        url = request_route.request.url
        if url.startswith(origin + "/"):
            request_route.continue_()
        else:
            refused.append(url)
            request_route.abort("blockedbyclient")

    context = browser.new_context(
        viewport={"width": width, "height": 900}, java_script_enabled=javascript, locale=locale
    )
    context.set_default_timeout(TIMEOUT_MS)
    try:
        context.route("**/*", route)
        yield context.new_page(), refused
    finally:
        context.close()


def status_of(site: WebSite, address: str) -> str | None:
    return site.status_of(address)


def whole_page_shot(page: Page, name: str) -> Path:
    """A screenshot of the whole page, frames included: the viewport is made as tall as the page first, since
    Chromium leaves out-of-process frames blank in a ``full_page`` screenshot."""
    viewport = page.viewport_size
    assert viewport is not None
    height = int(page.evaluate("document.documentElement.scrollHeight"))
    page.set_viewport_size({"width": viewport["width"], "height": height})
    page.wait_for_timeout(300)  # let the frames paint at the new size
    shot = artifact(name)
    page.screenshot(path=shot)
    page.set_viewport_size(viewport)
    return shot


def test_a_subscriber_signs_up_confirms_chooses_and_leaves_without_javascript(browser: Browser, tmp_path: Path) -> None:
    with web_site(tmp_path, f"sqlite:///{tmp_path / 'store.db'}") as site:
        with browsing(browser, site, width=420, javascript=False) as (page, refused):
            page.goto(site.server.url("/themes/resilience"))
            page.get_by_role("link", name="Get Resilience by email").click()
            expect(page.get_by_role("heading", level=1)).to_have_text("Subscribe")
            # The first Tab reaches the skip link, which leads to the content.
            page.keyboard.press("Tab")
            expect(page.get_by_role("link", name="Skip to the content")).to_be_focused()
            expect(page.get_by_label("Resilience")).to_be_checked()  # ticked by the theme page's link

            page.get_by_label("Email address").fill("not an address")
            page.get_by_role("button", name="Subscribe").click()
            expect(page.get_by_role("alert")).to_contain_text("is not an email address we can write to")
            expect(page.get_by_label("Resilience")).to_be_checked()  # what was chosen is kept

            page.get_by_label("Email address").fill("Lea@Example.org")
            page.get_by_label("Name").fill("Léa")
            page.get_by_label("Climate action").check()
            page.get_by_label("Monthly").check()
            page.get_by_label("Language of the emails").select_option(label="Español")
            page.screenshot(path=artifact("pages-subscribe.png"), full_page=True)
            page.get_by_label("Email address").press("Enter")  # the keyboard sends the form too
            expect(page.get_by_role("heading", level=1)).to_have_text("Check your inbox")

            # Léa chose Spanish emails: the pages her links open are in Spanish, though her browser asks for English.
            page.goto(link_in_email(site.smtp, "lea@example.org", "subscribe/confirm"))
            expect(page.locator("html")).to_have_attribute("lang", "es")
            assert status_of(site, "lea@example.org") == "pending"  # opening the link alone confirms nothing
            page.get_by_role("button", name="Sí, quiero suscribirme").click()
            expect(page.get_by_role("heading", level=1)).to_have_text("Suscripción confirmada")
            assert status_of(site, "lea@example.org") == "active"

            page.get_by_role("link", name="Elige tus temas, la frecuencia y el idioma").click()
            expect(page.get_by_role("heading", level=1)).to_have_text("Tu suscripción")
            expect(page.get_by_label("Climate action")).to_be_checked()
            expect(page.get_by_label("Mensual")).to_be_checked()
            page.get_by_label("Climate action").uncheck()
            page.get_by_label("Circular economy").check()
            page.get_by_label("Semanal").check()
            page.get_by_role("button", name="Guardar mis preferencias").click()
            expect(page.get_by_role("status")).to_have_text(
                "Guardado. Un correo cada semana en español: Resilience, Circular economy."
            )
            page.screenshot(path=artifact("pages-preferences.png"), full_page=True)

            page.get_by_role("button", name="Dar de baja lea@example.org").click()
            expect(page.get_by_role("heading", level=1)).to_have_text("Te has dado de baja")
            assert status_of(site, "lea@example.org") == "unsubscribed"
        assert refused == []  # no outside asset, font or tracker
        with database.transaction(site.service.engine) as session:
            from syndication.store import subscribers

            lea = subscribers.subscriber_by_email(session, "lea@example.org")
        assert lea is not None and lea.themes == ("resilience", "circular-economy") and lea.cadence == "weekly"


def test_a_french_browser_gets_french_pages_and_the_switcher_keeps_its_choice(browser: Browser, tmp_path: Path) -> None:
    extra = '[digest]\nlanguages = ["en", "es", "fr", "pt"]\n'
    with web_site(tmp_path, f"sqlite:///{tmp_path / 'store.db'}", extra) as site:
        with browsing(browser, site, width=420, javascript=False, locale="fr-FR") as (page, refused):
            page.goto(site.server.url("/subscribe?themes=resilience"))
            expect(page.locator("html")).to_have_attribute("lang", "fr")
            expect(page.get_by_role("heading", level=1)).to_have_text("S’abonner")
            languages = page.get_by_role("navigation", name="Langues")
            expect(languages.get_by_role("link", name="Français")).to_have_attribute("aria-current", "true")

            languages.get_by_role("link", name="Español").click()  # the same page, its query kept, in Spanish
            expect(page.locator("html")).to_have_attribute("lang", "es")
            expect(page.get_by_role("heading", level=1)).to_have_text("Suscribirse")
            expect(page.get_by_label("Resilience")).to_be_checked()
            assert page.url.endswith("/subscribe?themes=resilience&lang=es")
            page.screenshot(path=artifact("pages-subscribe-es.png"), full_page=True)

            # The choice stays made: the form's answer and the next pages are Spanish, though the browser is French.
            page.get_by_label("Dirección de correo electrónico").fill("no es una dirección")
            page.get_by_role("button", name="Suscribirse").click()
            expect(page.get_by_role("alert")).to_contain_text("no es una dirección a la que podamos escribir")
            page.get_by_role("navigation", name="Sitio").get_by_role("link", name="Ediciones anteriores").click()
            expect(page.get_by_role("heading", level=1)).to_have_text("Ediciones anteriores")
            expect(page.locator("html")).to_have_attribute("lang", "es")
        assert refused == []


# Every element's box against the frame's width: what sticks out sideways.
OVERFLOW = """() => {
  const width = document.documentElement.clientWidth;
  return { width, scrollWidth: document.documentElement.scrollWidth,
           wide: [...document.body.querySelectorAll("*")].filter((el) => el.getBoundingClientRect().right > width + 0.5)
                 .map((el) => el.tagName.toLowerCase()).slice(0, 10) };
}"""


def test_an_editor_previews_tests_approves_and_watches_the_delivery(browser: Browser, tmp_path: Path) -> None:
    with web_site(tmp_path, f"sqlite:///{tmp_path / 'store.db'}", "[delivery]\nrate_per_second = 4\n") as site:
        service = site.service
        for address, themes, language in (
            ("ana@example.org", "", "en"),
            ("bo@example.org", "resilience", "es"),
            ("kim@example.org", "circular-economy", "en"),
        ):
            add_subscriber(service, address, themes=themes, cadence="weekly", language=language, confirmed=True)
        plan_edition(service, "weekly", SINCE, UNTIL, draft=True)
        with browsing(browser, site, width=1400, javascript=True) as (page, refused):
            page.goto(site.server.url("/editor/editions/1"))
            expect(page.get_by_role("heading", level=1)).to_have_text("Sign in")  # sent to sign in first
            page.get_by_label("Name").fill(EDITOR)
            page.get_by_label("Password").fill("not the password")
            page.get_by_role("button", name="Sign in").click()
            expect(page.get_by_role("alert")).to_contain_text("Wrong name or password.")
            page.get_by_label("Password").fill(PASSWORD)
            page.get_by_role("button", name="Sign in").click()
            expect(page.get_by_role("heading", level=1)).to_have_text("Edition 1: weekly digest")  # back where it was

            page.get_by_role("textbox", name=re.compile("^Intro")).fill(
                "Welcome to May's digest: three cities, one question."
            )
            page.get_by_role("button", name="Save", exact=True).click()
            expect(page.get_by_role("status")).to_have_text("Saved the subject and intro.")

            frames = page.locator("iframe")
            expect(frames).to_have_count(2)
            for index, width in enumerate((600, 375)):
                assert frames.nth(index).bounding_box()["width"] == pytest.approx(width, abs=1)  # type: ignore[index]
                frame = frames.nth(index).content_frame
                expect(frame.get_by_text("Welcome to May's digest")).to_be_visible()
                expect(frame.get_by_role("link", name="Malmö opens a low-emission zone")).to_be_visible()
            for child in page.frames[1:]:
                layout = child.evaluate(OVERFLOW)
                assert layout["scrollWidth"] <= layout["width"], layout  # nothing sticks out at either width
            shot = whole_page_shot(page, "editor-edition.png")
            assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

            page.get_by_label("Preview as subscriber").fill("bo@example.org")
            page.get_by_role("button", name="Preview", exact=True).click()
            expect(
                page.locator("iframe").first.content_frame.get_by_text("Sponge streets for São Paulo")
            ).to_be_visible()
            expect(page.locator("[data-subject]")).to_have_text("2 artículos nuevos sobre Resilience")

            page.get_by_label("Send this preview to").fill("editor@example.org")
            page.get_by_role("button", name="Send test").click()
            expect(page.get_by_role("status")).to_have_text("The test was sent to editor@example.org.")
            assert site.smtp.wait_for(1) and site.smtp.received_for("editor@example.org")

            page.get_by_role("button", name="Approve and send").click()
            expect(page.get_by_role("status")).to_have_text("Approved: the edition is sending.")
            # The script follows the sending: no reload, the counts and the status change on their own.
            expect(page.locator("[data-progress-summary]")).to_have_text("3 of 3 sent", timeout=20_000)
            expect(page.locator("[data-edition-status]")).to_have_text("sent")
            expect(page.locator("progress")).to_have_attribute("value", "3")
            whole_page_shot(page, "editor-edition-sent.png")

            page.get_by_role("link", name="Dashboard").first.click()
            expect(page.get_by_role("heading", level=1)).to_have_text("Dashboard")
            expect(page.get_by_role("row", name=re.compile(r"^Edition 1 Weekly"))).to_contain_text("sent")
            page.screenshot(path=artifact("editor-dashboard.png"), full_page=True)
            page.get_by_role("button", name=f"Sign out {EDITOR}").click()
            expect(page.get_by_role("status")).to_have_text("You are signed out.")
        assert refused == []
        with database.transaction(service.engine) as session:
            edition = ledger.edition(session, 1)
        assert edition is not None and edition.status == EditionStatus.SENT
        assert {r for m in site.smtp.messages for r in m.recipients} == {
            "editor@example.org",
            "ana@example.org",
            "bo@example.org",
            "kim@example.org",
        }
