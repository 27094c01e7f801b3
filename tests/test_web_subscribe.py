"""The subscriber's pages over real HTTP: the subscribe form and its double opt-in through a real SMTP server,
the confirmation page, the preference centre, CSRF, rate limits, the daily email cap and refused links."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from sqlalchemy import select

from syndication.app.subscribers import add_subscriber, remove_subscriber, subscriber_token, token_subject, unsubscribe
from syndication.config import signing_keys
from syndication.core.tokens import make_token
from syndication.store import database
from syndication.store import subscribers as subscriber_store
from syndication.store.schema import FormEmailRow, SubscriberRow
from tests.smtp_server import SmtpTestServer
from tests.support import NOW
from tests.web_site import WebSite, csrf_of, form_post, link_in_email, web_site

CHOICES: dict[str, str | list[str]] = {
    "email": "Zoe@Example.org",
    "name": "Zoë",
    "themes": ["resilience", "climate-action"],
    "cadence": "daily",
    "language": "es",
}


@pytest.fixture
def site(tmp_path: Path, database_url: str) -> Iterator[WebSite]:
    with web_site(tmp_path, database_url) as running:
        yield running


def link_in(smtp: SmtpTestServer, address: str, kind: str) -> str:
    """The path of the ``kind`` link in the last email to ``address``."""
    return urlsplit(link_in_email(smtp, address, kind)).path


def wait_for_emails(smtp: SmtpTestServer, count: int) -> None:
    assert smtp.wait_for(count, timeout=10), f"expected {count} emails, got {len(smtp.messages)}"


def no_traceback(response: httpx.Response) -> None:
    assert "Traceback" not in response.text and 'File "' not in response.text


# --- Subscribing ----------------------------------------------------------------------------------------------


def test_subscribe_confirm_by_button_and_reach_the_preferences(site: WebSite) -> None:
    with site.client() as client:
        page = client.get("/subscribe")
        assert page.status_code == 200 and "<h1>Subscribe</h1>" in page.text
        assert page.headers["cache-control"] == "no-store"
        assert "script-src 'self'" in page.headers["content-security-policy"]
        cookie = page.headers["set-cookie"]
        assert cookie.startswith("syndication_csrf=") and "HttpOnly" in cookie and "SameSite=lax" in cookie
        assert "Secure" not in cookie  # the site is http here; https sites get Secure (test below)
        for label in ('for="field-email"', 'for="theme-resilience"', 'for="cadence-weekly"', 'for="field-language"'):
            assert label in page.text

        answer = form_post(client, "/subscribe", CHOICES, page.text)
        assert answer.status_code == 200 and "Check your inbox" in answer.text
        assert "zoe@example.org" in answer.text

        confirm_path = link_in(site.smtp, "zoe@example.org", "subscribe/confirm")
        email = site.smtp.received_for("zoe@example.org")[0].parsed()
        assert email["Subject"] and email["Auto-Submitted"] == "auto-generated"
        # Zoë chose Spanish emails: the pages her links open are in Spanish too, whatever her browser says.
        shown = client.get(confirm_path)  # what a link scanner does: it confirms nobody
        assert shown.status_code == 200 and "Sí, quiero suscribirme" in shown.text and '<html lang="es">' in shown.text
        assert shown.headers["referrer-policy"] == "no-referrer"
        assert site.status_of("zoe@example.org") == "pending"

        done = form_post(client, confirm_path, {}, shown.text)
        assert done.status_code == 200 and "Suscripción confirmada" in done.text
        assert site.status_of("zoe@example.org") == "active"
        preferences = re.search(r'href="(http://127\.0\.0\.1:\d+/preferences/[^"]+)"', done.text)
        assert preferences, done.text
        assert "Sí, quiero suscribirme" not in client.get(confirm_path).text  # confirming again: already subscribed

    with database.transaction(site.service.engine) as session:
        row = session.scalars(select(SubscriberRow).where(SubscriberRow.email == "zoe@example.org")).one()
    assert (row.name, row.themes, row.cadence, row.language) == ("Zoë", ["climate-action", "resilience"], "daily", "es")
    assert row.consent_method == "form" and "subscribe page, from 127.0.0.1" in row.consent_source


def test_the_answer_is_the_same_whether_or_not_the_address_is_known(site: WebSite) -> None:
    service = site.service
    add_subscriber(service, "active@example.org", confirmed=True)
    add_subscriber(service, "left@example.org", confirmed=True)
    unsubscribe(service, _id(site, "left@example.org"))
    remove_subscriber(service, "removed@example.org", actor="cli:tester")
    answers = {}
    with site.client() as client:
        page = client.get("/subscribe").text
        for address in ("active@example.org", "left@example.org", "removed@example.org", "new@example.org"):
            response = form_post(client, "/subscribe", {**CHOICES, "email": address}, page)
            answers[address] = (response.status_code, response.text.replace(address, "ADDRESS"))
    assert len(set(answers.values())) == 1, "the page differs between known and unknown addresses"
    wait_for_emails(site.smtp, 3)
    time.sleep(0.3)  # the work goes on after each answer: give the others time to send what they would
    recipients = sorted(r for message in site.smtp.messages for r in message.recipients)
    # Known and subscribed: a confirmation link (leading to their preferences); left: a link to rejoin; removed:
    # nothing (their address is only a hash now).
    assert recipients == ["active@example.org", "left@example.org", "new@example.org"]
    assert site.status_of("left@example.org") == "unsubscribed" and site.status_of("removed@example.org") is None


def test_someone_who_left_comes_back_by_confirming_by_email(site: WebSite) -> None:
    service = site.service
    add_subscriber(service, "ana@example.org", themes=["resilience"], cadence="daily", confirmed=True)
    add_subscriber(service, "spam@example.org", confirmed=True)
    unsubscribe(service, _id(site, "ana@example.org"))
    with database.transaction(service.engine) as session:
        subscriber_store.set_status(session, _id(site, "spam@example.org"), "complained", NOW)
    with site.client() as client:
        page = client.get("/subscribe").text
        for address in ("ana@example.org", "spam@example.org"):
            assert form_post(client, "/subscribe", {**CHOICES, "email": address}, page).status_code == 200
        rejoin_path = link_in(site.smtp, "ana@example.org", "subscribe/rejoin")
        shown = client.get(rejoin_path)  # a link scanner rejoins nobody
        assert shown.status_code == 200 and "Subscribe again" in shown.text and "Yes, subscribe me" in shown.text
        assert site.status_of("ana@example.org") == "unsubscribed"
        done = form_post(client, rejoin_path, {}, shown.text)
        assert done.status_code == 200 and "You are subscribed" in done.text
        assert site.status_of("ana@example.org") == "active"

        unsubscribe(service, _id(site, "ana@example.org"))  # left again: the old link does not undo that
        again = form_post(client, rejoin_path, {}, client.get(rejoin_path).text)
        assert again.status_code == 409 and "changed since this link was made" in again.text
        assert site.status_of("ana@example.org") == "unsubscribed"
    time.sleep(0.3)  # the form's work goes on after its answer
    assert site.smtp.received_for("spam@example.org") == []  # a spam complaint is final
    with database.transaction(service.engine) as session:
        row = session.scalars(select(SubscriberRow).where(SubscriberRow.email == "ana@example.org")).one()
    assert (row.themes, row.cadence) == (["resilience"], "daily")  # their earlier choices
    assert row.consent_method == "form" and "double opt-in" in row.consent_source


def _id(site: WebSite, address: str) -> int:
    with database.transaction(site.service.engine) as session:
        return session.scalars(select(SubscriberRow.id).where(SubscriberRow.email == address)).one()


def test_bad_input_returns_the_form_with_a_message_per_field(site: WebSite) -> None:
    with site.client() as client:
        bad: dict[str, str | list[str]] = {
            "email": "not-an-address",
            "name": "x" * 300,
            "themes": ["climate-action", "astrology"],
            "cadence": "hourly",
            "language": "tlh",
        }
        answer = form_post(client, "/subscribe", bad)
        no_traceback(answer)
        assert answer.status_code == 400
        text = answer.text
        assert 'role="alert"' in text
        assert "Email address: &#39;not-an-address&#39; is not an email address we can write to." in text
        assert "Themes: unknown theme &#39;astrology&#39;" in text
        assert "How often: choose daily, weekly or monthly." in text
        assert "Language: unknown language &#39;tlh&#39;" in text
        assert "Name: name is 300 characters long (at most 200)" in text
        assert 'value="not-an-address"' in text and 'aria-invalid="true"' in text  # kept, and marked
        empty = form_post(client, "/subscribe", {**CHOICES, "email": ""})
        assert empty.status_code == 400 and "Email address: please enter your email address." in empty.text
    time.sleep(0.2)
    assert site.smtp.messages == [] and site.status_of("not-an-address") is None


def test_forms_without_the_csrf_token_of_this_browser_are_refused(site: WebSite) -> None:
    with site.client() as client:
        no_token = client.post("/subscribe", data=CHOICES)
        assert no_token.status_code == 403 and "This form has expired or was not sent from this site" in no_token.text
        # The refusal gives the form back with a fresh token: sending it again works.
        assert client.cookies.get("syndication_csrf")
        with site.client() as other:
            other_browser = other.get("/subscribe").text
        forged = client.post("/subscribe", data={**CHOICES, "csrf_token": csrf_of(other_browser)})
        assert forged.status_code == 403
        tampered = client.post("/subscribe", data={**CHOICES, "csrf_token": csrf_of(no_token.text) + "x"})
        assert tampered.status_code == 403
        page = client.get("/subscribe").text
        cross_site = form_post(client, "/subscribe", CHOICES, page, **{"Sec-Fetch-Site": "cross-site"})
        assert cross_site.status_code == 403
        with site.client() as stale:  # a token two days old, in both the cookie and the form: expired
            old = make_token(
                signing_keys(site.settings), "csrf", "an-old-nonce", now=datetime.now(UTC) - timedelta(days=2)
            )
            stale.cookies.set("syndication_csrf", old)
            expired = stale.post("/subscribe", data={**CHOICES, "csrf_token": old})
            assert expired.status_code == 403 and csrf_of(expired.text) != old  # the form comes back with a new one
            wrong_purpose = subscriber_token(
                site.service, "confirm", add_subscriber(site.service, "x@example.org", confirmed=True).subscriber
            )
            stale.cookies.set("syndication_csrf", wrong_purpose)
            assert stale.post("/subscribe", data={**CHOICES, "csrf_token": wrong_purpose}).status_code == 403
        assert form_post(client, "/subscribe", CHOICES, no_token.text).status_code == 200
    wait_for_emails(site.smtp, 1)
    time.sleep(0.2)
    assert [r for message in site.smtp.messages for r in message.recipients] == ["zoe@example.org"]


def test_only_urlencoded_forms_of_a_sane_size_are_read(site: WebSite) -> None:
    with site.client() as client:
        multipart = client.post("/subscribe", files={"email": (None, "a@example.org")})
        assert multipart.status_code == 415 and "application/x-www-form-urlencoded" in multipart.text
        huge = client.post(
            "/subscribe",
            content=b"email=" + b"a" * 70_000,
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        assert huge.status_code == 413
        no_traceback(huge)


@pytest.fixture
def limited(tmp_path: Path, database_url: str) -> Iterator[WebSite]:
    extra = "[web]\nsubscribe_per_client_per_hour = 4\nsubscribe_per_address_per_hour = 2\n"
    with web_site(tmp_path, database_url, extra) as running:
        yield running


def test_the_form_is_rate_limited_per_address_and_per_client(limited: WebSite) -> None:
    with limited.client() as client:
        page = client.get("/subscribe").text
        statuses = [
            form_post(client, "/subscribe", {**CHOICES, "email": "same@example.org"}, page).status_code
            for _ in range(3)
        ]
        assert statuses == [200, 200, 429]
        assert form_post(client, "/subscribe", {**CHOICES, "email": "other@example.org"}, page).status_code == 200
        # Four posts from this client (the one refused for its address counts too): the fifth is refused.
        refused = form_post(client, "/subscribe", {**CHOICES, "email": "third@example.org"}, page)
    assert refused.status_code == 429 and "Too many requests" in refused.text
    assert 0 < int(refused.headers["retry-after"]) <= 3600


def test_no_address_gets_more_than_the_daily_cap_of_emails(tmp_path: Path, database_url: str) -> None:
    extra = "[web]\nsubscribe_per_address_per_hour = 50\nconfirmations_per_address_per_day = 2\n"
    with web_site(tmp_path, database_url, extra) as site, site.client() as client:
        page = client.get("/subscribe").text
        for _ in range(4):
            assert form_post(client, "/subscribe", {**CHOICES, "email": "many@example.org"}, page).status_code == 200
        form_post(client, "/subscribe", {**CHOICES, "email": "sentinel@example.org"}, page)
        wait_for_emails(site.smtp, 3)
        time.sleep(0.1)
        assert len(site.smtp.received_for("many@example.org")) == 2
        with database.transaction(site.service.engine) as session:
            counts = [row.count for row in session.scalars(select(FormEmailRow))]
        assert sorted(counts) == [1, 2]  # kept in the store, as address hashes: no address in the table
        with database.transaction(site.service.engine) as session:
            assert all("@" not in row.email_hash for row in session.scalars(select(FormEmailRow)))


# --- Links ----------------------------------------------------------------------------------------------------


def test_forged_expired_and_wrong_purpose_links_are_refused(site: WebSite) -> None:
    outcome = add_subscriber(site.service, "pat@example.org")
    pat = outcome.subscriber
    keys = signing_keys(site.settings)
    good = subscriber_token(site.service, "confirm", pat)
    expired = make_token(keys, "confirm", token_subject(pat), now=NOW - timedelta(days=3650))
    other_key = make_token(["another-key-that-is-long-enough"], "confirm", token_subject(pat))
    cases = {
        f"/subscribe/confirm/{good[:-2]}xx": "not valid",
        f"/subscribe/confirm/{expired}": "has expired",
        f"/subscribe/confirm/{other_key}": "not valid",
        f"/subscribe/confirm/{subscriber_token(site.service, 'preferences', pat)}": "not valid",
        f"/preferences/{subscriber_token(site.service, 'unsubscribe', pat)}": "not valid",
        f"/preferences/{good}": "not valid",
        "/preferences/preview": "not valid",
    }
    with site.client() as client:
        for path, reason in cases.items():
            page = client.get(path)
            no_traceback(page)
            assert page.status_code == 400, path
            assert "This link does not work" in page.text and reason in page.text, (path, page.text)
            assert page.headers["referrer-policy"] == "no-referrer"
        # Posting to a refused link changes nothing either.
        form_page = client.get("/subscribe").text
        posted = form_post(client, f"/subscribe/confirm/{expired}", {}, form_page)
        assert posted.status_code == 400
    assert site.status_of("pat@example.org") == "pending"


def test_preferences_change_send_a_notice_and_lead_out(site: WebSite) -> None:
    kim = add_subscriber(site.service, "kim@example.org", name="Kim", confirmed=True).subscriber
    path = f"/preferences/{subscriber_token(site.service, 'preferences', kim)}"
    with site.client() as client:
        page = client.get(path)
        assert page.status_code == 200 and "kim@example.org" in page.text
        assert re.search(r'value="weekly" id="cadence-weekly"\s+checked>', page.text)
        assert not re.search(r'value="daily" id="cadence-daily"\s+checked>', page.text)
        bad = form_post(client, path, {"themes": ["nope"], "cadence": "weekly", "language": "en"}, page.text)
        assert bad.status_code == 400 and "Themes: unknown theme &#39;nope&#39;" in bad.text

        saved = form_post(
            client,
            path,
            {"name": "Kim L.", "themes": ["circular-economy"], "cadence": "monthly", "language": "es"},
            page.text,
        )
        assert saved.status_code == 200 and 'role="status"' in saved.text
        # The answer is in the language the form was shown in; from now on Kim's links open Spanish pages.
        assert '<html lang="en">' in saved.text
        assert "Saved. One email every month in Spanish: Circular economy." in saved.text
        wait_for_emails(site.smtp, 1)
        notice = site.smtp.received_for("kim@example.org")[0].parsed()
        notice_text = notice.get_body(("plain",))
        assert notice_text is not None and "Circular economy" in notice_text.get_content()
        same = form_post(
            client,
            path,
            {"name": "Kim L.", "themes": ["circular-economy"], "cadence": "monthly", "language": "es"},
            page.text,
        )
        assert "No ha cambiado nada" in same.text and '<html lang="es">' in same.text

        left = form_post(client, f"{path}/unsubscribe", {}, page.text)
        assert left.status_code == 200 and "Te has dado de baja" in left.text
        assert site.status_of("kim@example.org") == "unsubscribed"
        after = client.get(f"{path}?lang=en")  # the URL's language over Kim's own
        assert after.status_code == 409 and "is unsubscribed: nothing is sent to it" in after.text
        refused = form_post(client, path, {"themes": [], "cadence": "weekly", "language": "en"}, page.text)
        assert refused.status_code == 409 and "Volver a suscribirse" in refused.text
    with database.transaction(site.service.engine) as session:
        row = session.scalars(select(SubscriberRow).where(SubscriberRow.email == "kim@example.org")).one()
    assert (row.name, row.themes, row.cadence, row.language) == ("Kim L.", ["circular-economy"], "monthly", "es")


def test_preference_posts_need_the_csrf_token_too(site: WebSite) -> None:
    kim = add_subscriber(site.service, "kim@example.org", confirmed=True).subscriber
    path = f"/preferences/{subscriber_token(site.service, 'preferences', kim)}"
    with site.client() as client:
        refused = client.post(path, data={"themes": "resilience", "cadence": "daily", "language": "en"})
        assert refused.status_code == 403 and "This form has expired" in refused.text
        left = client.post(f"{path}/unsubscribe", data={})
        assert left.status_code == 403
    assert site.status_of("kim@example.org") == "active"


def test_cookies_are_secure_on_an_https_site(tmp_path: Path) -> None:
    from syndication.config import load_settings
    from syndication.web.app import create_app
    from tests.live_server import live_server
    from tests.support import write_config
    from tests.web_site import KEY

    config = write_config(tmp_path, f"sqlite:///{tmp_path / 'store.db'}")  # base_url https://news.example.org
    settings = load_settings(config, environ={"SYNDICATION_SECRET_KEY": KEY})
    with live_server(create_app(settings)) as server, httpx.Client(base_url=server.url()) as client:
        cookie = client.get("/subscribe").headers["set-cookie"]
    assert "Secure" in cookie and "HttpOnly" in cookie and "SameSite=lax" in cookie


def test_unknown_pages_and_assets_answer_as_pages_of_the_site(site: WebSite) -> None:
    with site.client() as client:
        missing = client.get("/no/such/page")
        wrong_method = client.get("/editor/editions/1/approve")
        stylesheet = client.get("/assets/site.css")
        again = client.get("/assets/site.css", headers={"If-None-Match": stylesheet.headers["etag"]})
        unknown_asset = client.get("/assets/evil.js")
    assert missing.status_code == 404 and "Page not found" in missing.text
    assert missing.headers["content-type"].startswith("text/html")
    assert wrong_method.status_code == 405 and "POST" in wrong_method.headers["allow"]
    assert stylesheet.status_code == 200 and stylesheet.headers["content-type"].startswith("text/css")
    assert "immutable" in stylesheet.headers["cache-control"] and again.status_code == 304
    assert unknown_asset.status_code == 404
    page = httpx.get(site.server.url("/subscribe")).text
    assert f'href="/assets/site.css?v={stylesheet.headers["etag"].strip(chr(34))}"' in page


def test_without_a_signing_key_forms_say_not_available_and_other_pages_work(site: WebSite) -> None:
    from syndication.web.app import create_app
    from tests.live_server import live_server

    keyless = site.settings.model_copy(update={"secret_key": None})
    with live_server(create_app(keyless)) as server, httpx.Client(base_url=server.url()) as client:
        form = client.get("/subscribe")
        theme = client.get("/themes/resilience")
        posted = client.post("/subscribe", data={**CHOICES, "csrf_token": ""})
        link = client.get("/preferences/anything")
    assert form.status_code == 200 and theme.status_code == 200
    assert posted.status_code == 503 and "Not available right now" in posted.text and posted.headers["retry-after"]
    assert link.status_code == 503
    no_traceback(posted)
