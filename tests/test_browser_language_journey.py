"""Issue 19's journey in a real browser: every link in an email leads to pages in the subscriber's language.

Headless Chromium whose Accept-Language is French subscribes on the real app (uvicorn) with a real SMTP server
catching the mail; the confirmation arrives in French, its link opens French pages, the subscriber switches their
emails to Portuguese in the preference centre, the next email (the "preferences changed" notice) arrives in
Portuguese, and its preferences link opens the preference centre in Portuguese. Every link an email gives to the
site says the email's language; the subscriber's own links say none (their pages follow the subscriber's language
as it is when opened). The words looked for come from the shipped catalogs (web and email), each checked to differ
from the English it translates, so an English page or email fails the test.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from lxml import html as lxml_html
from playwright.sync_api import Browser, expect

from syndication.mailing.render import translations as email_catalog
from syndication.web.languages import Languages, Words
from tests.browser import artifact, chromium_browser, requires_chromium
from tests.support import poll
from tests.test_browser_pages import browsing
from tests.test_email_languages import english_fragments
from tests.web_site import WebSite, link_in_email, web_site

pytestmark = requires_chromium

LANGUAGES = '[digest]\nlanguages = ["en", "es", "fr", "pt"]\n'
ADDRESS = "zoe@example.org"
MAIL_TIMEOUT = 10.0


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium_browser() as launched:
        yield launched


def worded(words: Words, message: str, **values: object) -> str:
    """``message`` as the pages of ``words``' language say it; a message the catalog leaves in English fails."""
    text = words.gettext(message, **values)
    assert text != message % values, f"{words.language}: {message!r} is not translated"
    return text


def email_worded(language: str, message: str, **values: object) -> str:
    """``message`` as the emails in ``language`` say it (the shipped email catalog), translated."""
    text = email_catalog(language).gettext(message) % values
    assert text != message % values, f"{language}: {message!r} is not translated"
    return text


def mail_number(site: WebSite, count: int) -> EmailMessage:
    """The ``count``-th email to the subscriber, waiting for it (the pages send mail after answering)."""
    received = poll(lambda: len(site.smtp.received_for(ADDRESS)) >= count, MAIL_TIMEOUT, interval=0.02)
    assert received, f"email {count} to {ADDRESS} never came ({len(site.smtp.received_for(ADDRESS))} did)"
    return site.smtp.received_for(ADDRESS)[count - 1].parsed()


def parts(message: EmailMessage) -> tuple[str, str]:
    """The plain-text and HTML bodies of ``message``."""
    text, html = message.get_body(("plain",)), message.get_body(("html",))
    assert text is not None and html is not None
    return text.get_content(), html.get_content()


def assert_written_in(message: EmailMessage, language: str, subject: str, base: str) -> None:
    """``message`` is in ``language``: its subject, its ``lang``, no English sentence of the emails in what a
    reader reads, and every link to the site but the subscriber's own says ``language``."""
    text, html = parts(message)
    assert str(message["Subject"]) == subject
    document = lxml_html.document_fromstring(html)
    assert document.get("lang") == language
    for hidden in document.xpath("//style"):
        hidden.drop_tree()
    seen = "\n".join([subject, text, document.text_content()])
    english = [fragment for fragment in english_fragments() if re.search(rf"(?<!\w){re.escape(fragment)}(?!\w)", seen)]
    assert english == [], f"English in the {language} email: {english}"
    hrefs = [str(href) for href in document.xpath("//a/@href")]
    ours = [url for url in [*hrefs, *re.findall(r"https?://\S+", text)] if url.startswith(base)]
    own = ("/subscribe/confirm/", "/preferences/", "/unsubscribe/")  # the subscriber's links: no lang, by design
    general = [url for url in ours if not urlsplit(url).path.startswith(own)]
    assert f"{base}/?lang={language}" in hrefs  # the site's name at the top
    assert all(parse_qs(urlsplit(url).query).get("lang") == [language] for url in general), general
    assert all("lang" not in parse_qs(urlsplit(url).query) for url in ours if url not in general), ours


def test_a_french_browser_subscribes_confirms_switches_to_portuguese_and_gets_portuguese(
    browser: Browser, tmp_path: Path
) -> None:
    with web_site(tmp_path, f"sqlite:///{tmp_path / 'store.db'}", LANGUAGES) as site:
        base = site.settings.site.base_url
        languages = Languages(site.settings)
        fr, pt = languages.words("fr"), languages.words("pt")
        with browsing(browser, site, width=420, javascript=False, locale="fr") as (page, refused):
            # The subscribe page, in French because the browser asks for it; French emails are offered first.
            page.goto(site.server.url("/subscribe"))
            expect(page.locator("html")).to_have_attribute("lang", "fr")
            expect(page.get_by_role("heading", level=1)).to_have_text(worded(fr, "Subscribe"))
            page.get_by_label(worded(fr, "Email address")).fill(ADDRESS)
            page.get_by_role("textbox", name=worded(fr, "Name")).fill("Zoé")
            page.get_by_label("Resilience").check()
            emails_language = page.get_by_label(worded(fr, "Language of the emails"))
            expect(emails_language).to_have_value("fr")
            page.get_by_role("button", name=worded(fr, "Subscribe")).click()
            expect(page.get_by_role("heading", level=1)).to_have_text(worded(fr, "Check your inbox"))

            # The confirmation: French through and through.
            confirmation = mail_number(site, 1)
            title = site.settings.site.title
            assert_written_in(
                confirmation, "fr", email_worded("fr", "Confirm your subscription to %(title)s", title=title), base
            )
            _, confirmation_html = parts(confirmation)
            assert email_worded("fr", "Yes, subscribe me") in confirmation_html

            # Its link opens French pages, though nothing in it says French: the subscriber chose it.
            page.goto(link_in_email(site.smtp, ADDRESS, "subscribe/confirm"))
            expect(page.locator("html")).to_have_attribute("lang", "fr")
            assert site.status_of(ADDRESS) == "pending"
            page.get_by_role("button", name=worded(fr, "Yes, subscribe me")).click()
            expect(page.get_by_role("heading", level=1)).to_have_text(worded(fr, "You are subscribed"))
            expect(page.locator("html")).to_have_attribute("lang", "fr")
            assert site.status_of(ADDRESS) == "active"

            # The preference centre the welcome page leads to, in French; the emails switched to Portuguese.
            page.get_by_role("link", name=worded(fr, "Choose your themes, how often and the language")).click()
            expect(page.get_by_role("heading", level=1)).to_have_text(worded(fr, "Your subscription"))
            expect(page.locator("html")).to_have_attribute("lang", "fr")
            emails_language = page.get_by_label(worded(fr, "Language of the emails"))
            expect(emails_language).to_have_value("fr")
            emails_language.select_option(value="pt")
            page.get_by_role("button", name=worded(fr, "Save my choices")).click()

            # The answer is in the language the form was shown in (the subscriber read the form in French; as
            # test_web_subscribe holds), with the choice saved: Portuguese from now on.
            expect(page.locator("html")).to_have_attribute("lang", "fr")
            expect(page.get_by_role("status")).to_contain_text(worded(fr, "Saved. %(summary)s", summary="").strip())
            expect(page.get_by_label(worded(fr, "Language of the emails"))).to_have_value("pt")

            # The next email, the notice that the preferences changed, is in Portuguese.
            notice = mail_number(site, 2)
            assert_written_in(
                notice, "pt", email_worded("pt", "Your %(title)s preferences were changed", title=title), base
            )
            notice_text, _ = parts(notice)
            assert email_worded("pt", "From now on you receive:") in notice_text

            # Its preferences link says no language: the page follows the subscriber's, Portuguese now, though the
            # browser asks for French.
            page.goto(link_in_email(site.smtp, ADDRESS, "preferences"))
            expect(page.locator("html")).to_have_attribute("lang", "pt")
            expect(page.get_by_role("heading", level=1)).to_have_text(worded(pt, "Your subscription"))
            expect(page.get_by_label(worded(pt, "Language of the emails"))).to_have_value("pt")
            page.screenshot(path=artifact("journey-preferences-pt.png"), full_page=True)
        assert refused == []  # the pages asked for nothing outside the site
        assert len(site.smtp.received_for(ADDRESS)) == 2
