"""The editor's pages over real HTTP: signing in and out, the dashboard, and an edition's page with its preview
(the sender's own renderer), text, test send, approval and delivery through a real SMTP server."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import httpx
import pytest

from syndication.app.digests import preview_links
from syndication.app.editions import MessageBuilder, plan_edition
from syndication.app.subscribers import add_subscriber
from syndication.core.models import DeliveryStatus, EditionStatus
from syndication.scheduling.cadences import latest_fire, parse_crontab
from syndication.scheduling.runner import Runner
from syndication.store import database, ledger
from syndication.web.sessions import SESSION_COOKIE
from tests.support import post_record, wait_for
from tests.web_site import EDITOR, PASSWORD, WebSite, csrf_of, form_post, site_posts, web_site

SINCE, UNTIL = datetime(2024, 5, 1, tzinfo=UTC), datetime(2024, 6, 1, tzinfo=UTC)


RECENT = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)


def recent_post() -> dict[str, Any]:
    """A post of a few minutes ago: the dashboard's "this period" counts it."""
    return post_record(9, title="Published just now", themes=["resilience"], published=RECENT.isoformat())


@pytest.fixture
def site(tmp_path: Path, database_url: str) -> Iterator[WebSite]:
    """A site with three weekly subscribers (one refused by the SMTP server) and a draft edition of May 2024."""
    with web_site(tmp_path, database_url, posts=[*site_posts(), recent_post()], reject=["gone@example.org"]) as running:
        service = running.service
        add_subscriber(service, "ana@example.org", cadence="weekly", confirmed=True)
        add_subscriber(service, "bo@example.org", themes="resilience", cadence="weekly", language="es", confirmed=True)
        add_subscriber(service, "gone@example.org", cadence="weekly", confirmed=True)
        plan = plan_edition(service, "weekly", SINCE, UNTIL, draft=True)
        assert plan.edition is not None and plan.edition.id == 1 and plan.queued == 3
        yield running


def sign_in(client: httpx.Client, next_page: str = "") -> httpx.Response:
    page = client.get("/editor/login", params={"next": next_page} if next_page else None)
    return form_post(client, "/editor/login", {"name": EDITOR, "password": PASSWORD, "next": next_page}, page.text)


def edition_status(site: WebSite, edition_id: int = 1) -> str:
    with database.transaction(site.service.engine) as session:
        edition = ledger.edition(session, edition_id)
    assert edition is not None
    return edition.status


# --- Signing in -----------------------------------------------------------------------------------------------


def test_editor_pages_send_the_unknown_to_the_sign_in_page(site: WebSite) -> None:
    with site.client() as client:
        for path in ("/editor/", "/editor/editions/1", "/editor/editions/1/preview?language=es"):
            answer = client.get(path)
            assert answer.status_code == 303, path
            assert answer.headers["location"].startswith("/editor/login?next=/editor/"), answer.headers["location"]
        assert client.get("/editor").headers["location"] == "/editor/"
        approve = client.post("/editor/editions/1/approve", data={"csrf_token": "x"})
        assert approve.status_code == 303 and approve.headers["location"] == "/editor/login?next=/editor/editions/1"
        assert client.get("/editor/editions/1/progress.json").status_code == 401
        # A session cookie that is forged, or a token made for something else, is nobody's session.
        client.cookies.set(SESSION_COOKIE, "YW5hOjEyMzQ.abc.def", path="/editor")
        assert client.get("/editor/").status_code == 303
        csrf = csrf_of(client.get("/subscribe").text)
        client.cookies.set(SESSION_COOKIE, csrf, path="/editor")
        assert client.get("/editor/").status_code == 303
    assert edition_status(site) == EditionStatus.DRAFT


def test_sign_in_with_the_right_password_only_and_sign_out(site: WebSite) -> None:
    with site.client() as client:
        page = client.get("/editor/login")
        assert page.status_code == 200 and 'autocomplete="current-password"' in page.text
        for name, password in ((EDITOR, "wrong password!"), ("nobody", PASSWORD), ("", "")):
            refused = form_post(client, "/editor/login", {"name": name, "password": password}, page.text)
            assert refused.status_code == 400 and "Wrong name or password." in refused.text, name
            assert SESSION_COOKIE not in refused.headers.get("set-cookie", "")
        no_token = client.post("/editor/login", data={"name": EDITOR, "password": PASSWORD})
        assert no_token.status_code == 403 and "This form has expired" in no_token.text

        signed_in = sign_in(client, "/editor/editions/1?language=es")
        assert signed_in.status_code == 303 and signed_in.headers["location"] == "/editor/editions/1?language=es"
        cookies = signed_in.headers.get_list("set-cookie")
        session = next(c for c in cookies if c.startswith(SESSION_COOKIE + "="))
        for attribute in ("HttpOnly", "SameSite=lax", "Path=/editor", "Max-Age=43200"):
            assert attribute in session, session
        assert any(c.startswith("syndication_csrf=") for c in cookies)  # a new CSRF token after signing in
        assert client.get("/editor/").status_code == 200

        dashboard = client.get("/editor/").text
        copied = client.cookies.get(SESSION_COOKIE, path="/editor")
        assert client.post("/editor/logout", data={"csrf_token": "forged"}).status_code == 403
        out = form_post(client, "/editor/logout", {}, dashboard)
        assert out.status_code == 303 and out.headers["location"] == "/editor/login?signed_out=1"
        assert 'syndication_session=""' in out.headers["set-cookie"] and "Max-Age=0" in out.headers["set-cookie"]
        assert client.get("/editor/").status_code == 303
        assert "You are signed out." in client.get("/editor/login?signed_out=1").text
    # A copy of the signed-out cookie (another device's, a stolen one) signs nobody in either; a new session does.
    with site.client() as other:
        other.cookies.set(SESSION_COOKIE, copied or "", path="/editor")
        assert other.get("/editor/").status_code == 303
    with site.client() as again:
        sign_in(again)
        assert again.get("/editor/").status_code == 200


def test_signing_in_goes_only_to_editor_pages_of_this_site(site: WebSite) -> None:
    for wanted in ("https://evil.example/", "//evil.example/editor/", "/editor/\\evil", "/subscribe"):
        with site.client() as client:
            assert sign_in(client, wanted).headers["location"] == "/editor/", wanted


def test_sign_in_attempts_are_rate_limited(tmp_path: Path, database_url: str) -> None:
    with web_site(tmp_path, database_url, "[web]\nlogins_per_client_per_hour = 2\n") as site, site.client() as client:
        page = client.get("/editor/login").text
        assert form_post(client, "/editor/login", {"name": EDITOR, "password": "nope"}, page).status_code == 400
        assert form_post(client, "/editor/login", {"name": EDITOR, "password": "nope"}, page).status_code == 400
        limited = form_post(client, "/editor/login", {"name": EDITOR, "password": PASSWORD}, page)
    assert limited.status_code == 429 and int(limited.headers["retry-after"]) > 0


# --- Dashboard ------------------------------------------------------------------------------------------------


def test_the_dashboard_shows_what_comes_and_what_went(site: WebSite) -> None:
    with site.client() as client:
        sign_in(client)
        page = client.get("/editor/")
    assert page.status_code == 200 and page.headers["cache-control"] == "no-store"
    text = page.text
    assert "<h1>Dashboard</h1>" in text and "Sign out ana" in text
    for heading in (
        "Next editions",
        "Posts per theme this period",
        "Subscribers per cadence",
        "Active subscribers per theme",
        "Last editions",
    ):
        assert f">{heading}</h2>" in text, heading
    # The recent post is under Resilience in the period of each cadence that has not fired since it came out.
    expected = []
    for cadence in ("daily", "weekly", "monthly"):
        trigger = parse_crontab(site.settings.schedule.cadences[cadence], site.settings.site.timezone)
        since = latest_fire(trigger, datetime.now(UTC))
        expected.append("1" if since is not None and since < RECENT else "0")
    resilience = re.search(r'/themes/resilience">Resilience</a></th>(.*?)</tr>', text, re.S)
    assert resilience and re.findall(r">(\d+)</td>", resilience.group(1)) == expected
    assert expected[1:] == ["1", "1"]  # an hour is always within this week's and this month's period
    per_cadence = text[text.index(">Subscribers per cadence</h2>") :]
    weekly = re.search(r'<th scope="row">Weekly</th>(.*?)</tr>', per_cadence, re.S)
    assert weekly and re.findall(r">(\d+)</td>", weekly.group(1))[:2] == ["0", "3"]  # pending 0, active 3
    assert 'href="/editor/editions/1">Edition 1</a>' in text and "status-draft" in text
    assert re.search(r"Weekly</th>\s*<td>Mon ", text)  # the weekly edition goes on a Monday


# --- An edition -----------------------------------------------------------------------------------------------


def test_the_edition_page_shows_exactly_what_will_be_sent(site: WebSite) -> None:
    builder = MessageBuilder(site.service)
    with database.transaction(site.service.engine) as session:
        edition = ledger.edition(session, 1)
    assert edition is not None
    everything = builder.edition_email(edition, None, "en")
    as_bo = builder.edition_email(edition, ("resilience",), "es")
    assert everything is not None and as_bo is not None
    links = preview_links(site.settings)
    with site.client() as client:
        sign_in(client)
        page = client.get("/editor/editions/1")
        frame = client.get("/editor/editions/1/preview?language=en")
        bo_page = client.get("/editor/editions/1", params={"subscriber": "BO@example.org"})
        bo_frame = client.get("/editor/editions/1/preview", params={"subscriber": "bo@example.org"})
        nobody = client.get("/editor/editions/1", params={"subscriber": "nobody@example.org"})
        bad_theme = client.get("/editor/editions/1", params={"themes": "astrology"})
        missing = client.get("/editor/editions/99")
        too_large = [client.get(f"/editor/editions/{2**63}{suffix}") for suffix in ("", "/preview", "/progress.json")]
    assert page.status_code == 200
    assert page.text.count("<iframe") == 2
    assert 'width="600"' in page.text and 'width="375"' in page.text and 'sandbox=""' in page.text
    assert f"<span data-subject>{everything.subject}</span>" in page.text
    assert frame.text == everything.personalised(links).html  # byte for byte the email
    assert "frame-ancestors 'self'" in frame.headers["content-security-policy"]
    text_part = everything.personalised(links).text
    assert "Malmö opens a low-emission zone" in text_part and _escape(text_part.splitlines()[0]) in page.text
    assert bo_frame.text == as_bo.personalised(links).html and "Malmö opens" not in bo_frame.text
    assert bo_page.status_code == 200 and "Sponge streets" in bo_page.text
    assert "Preview as: there is no subscriber &#39;nobody@example.org&#39;." in nobody.text
    assert "Themes: unknown theme &#39;astrology&#39;" in bad_theme.text
    assert missing.status_code == 404 and "No such edition" in missing.text
    assert [answer.status_code for answer in too_large] == [404, 404, 404]  # no id that large, not a failed query


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("'", "&#39;")


def test_an_editor_fixes_the_text_sends_a_test_and_approves(site: WebSite) -> None:
    with site.client() as client:
        sign_in(client)
        page = client.get("/editor/editions/1").text
        bad = form_post(client, "/editor/editions/1/text", {"subject": "x" * 201, "intro": "Hello"}, page)
        assert bad.status_code == 400 and "Subject: one line of at most 200 characters." in bad.text
        saved = form_post(
            client,
            "/editor/editions/1/text",
            {"subject": "May in\r\nour network\nBcc: all@example.org", "intro": "Dear readers,\nhello."},
            page,
        )
        assert saved.status_code == 303 and saved.headers["location"] == "/editor/editions/1?done=saved"
        after = client.get(saved.headers["location"]).text
        assert "Saved the subject and intro." in after
        assert "<span data-subject>May in our network Bcc: all@example.org</span>" in after  # one line, no header

        no_address = form_post(client, "/editor/editions/1/test?language=es", {"address": "nope"}, after)
        assert (
            no_address.status_code == 400 and "Test address: &#39;nope&#39; is not an email address." in no_address.text
        )
        tested = form_post(client, "/editor/editions/1/test?language=es", {"address": "Editor@Example.org"}, after)
        assert tested.status_code == 303
        assert tested.headers["location"] == "/editor/editions/1?language=es&done=tested&to=editor%40example.org"
        assert "The test was sent to editor@example.org." in client.get(tested.headers["location"]).text
        assert site.smtp.wait_for(1)
        test_mail = site.smtp.received_for("editor@example.org")[0].parsed()
        assert test_mail["Subject"] == "May in our network Bcc: all@example.org" and test_mail["Bcc"] is None
        assert test_mail["X-Syndication-Test"] == "edition 1"
        assert "hello." in _text(test_mail) and "Malmö" in _text(test_mail)

        assert client.post("/editor/editions/1/approve", data={"csrf_token": "forged"}).status_code == 403
        assert edition_status(site) == EditionStatus.DRAFT
        approved = form_post(client, "/editor/editions/1/approve", {}, after)
        assert approved.status_code == 303 and approved.headers["location"] == "/editor/editions/1?done=approved"
        progress = _wait_until_sent(client)
        assert progress["counts"] == {"sent": 2, "bounced": 1} and progress["done"] == progress["total"] == 3
        assert progress["summary"] == "2 of 3 sent (1 bounced)"
        final = client.get("/editor/editions/1").text
        assert "Bounces and failures" in final and "gone@example.org" in final and "550" in final
        assert ">Approve and send</button>" not in final  # nothing left to do with a sent edition
        again = form_post(client, "/editor/editions/1/approve", {}, final)
        assert again.status_code == 409 and "Edition 1 is sent: it cannot be approved." in again.text
        late = form_post(client, "/editor/editions/1/text", {"subject": "Too late", "intro": ""}, final)
        assert late.status_code == 409 and "only a draft or paused edition can change" in late.text
    received = {r for message in site.smtp.messages for r in message.recipients}
    assert {"ana@example.org", "bo@example.org"} <= received
    bo_mail = site.smtp.received_for("bo@example.org")[0].parsed()
    assert bo_mail["Subject"] == "May in our network Bcc: all@example.org"


def _text(message: EmailMessage) -> str:
    part = message.get_body(("plain",))
    assert part is not None
    return str(part.get_content())


def _wait_until_sent(client: httpx.Client) -> dict[str, Any]:
    def sent() -> dict[str, Any] | None:
        progress: dict[str, Any] = json.loads(client.get("/editor/editions/1/progress.json").text)
        return progress if progress["status"] == EditionStatus.SENT else None

    return wait_for(sent, "edition 1 to be sent", timeout=20)


def test_pause_resume_and_cancel_follow_the_rules(tmp_path: Path, database_url: str) -> None:
    with web_site(tmp_path, database_url, "[web]\nsend_on_approve = false\n") as site, site.client() as client:
        add_subscriber(site.service, "ana@example.org", cadence="weekly", confirmed=True)
        plan_edition(site.service, "weekly", SINCE, UNTIL, draft=True)
        sign_in(client)
        page = client.get("/editor/editions/1").text
        assert ">Pause</button>" not in page and ">Resume</button>" not in page
        steps = [
            ("pause", 409, EditionStatus.DRAFT),
            ("approve", 303, EditionStatus.SENDING),
            ("resume", 409, EditionStatus.SENDING),
            ("pause", 303, EditionStatus.PAUSED),
            ("resume", 303, EditionStatus.SENDING),
            ("cancel", 303, EditionStatus.CANCELLED),
            ("resume", 409, EditionStatus.CANCELLED),
        ]
        for action, status, after in steps:
            answer = form_post(client, f"/editor/editions/1/{action}", {}, page)
            assert answer.status_code == status, (action, answer.text)
            assert edition_status(site) == after, action
        assert form_post(client, "/editor/editions/1/delete", {}, page).status_code == 404
        time.sleep(0.2)
        assert site.smtp.messages == []  # send_on_approve is off: the scheduler would send it


# --- Making editors -------------------------------------------------------------------------------------------


def test_under_syndication_run_approving_wakes_its_scheduled_sender(tmp_path: Path, database_url: str) -> None:
    """With the scheduler in the same process, the web app starts no sender of its own: the scheduler's sends."""
    runners: list[Runner] = []
    with web_site(tmp_path, database_url, "[schedule]\ndeliver_interval_seconds = 3600\n",
                  wake_sender=lambda: runners[0].wake_deliveries()) as site:  # fmt: skip
        add_subscriber(site.service, "ana@example.org", cadence="weekly", confirmed=True)
        plan = plan_edition(site.service, "weekly", SINCE, UNTIL, draft=True)
        assert plan.edition is not None
        runner = Runner(site.settings, name="run-with-web")
        runners.append(runner)
        try:
            runner.start()  # drains once at start (the draft is not sent), then only every hour, or when woken
            with site.client() as client:
                sign_in(client)
                page = client.get(f"/editor/editions/{plan.edition.id}").text
                assert form_post(client, f"/editor/editions/{plan.edition.id}/approve", {}, page).status_code == 303
            assert site.smtp.wait_for(1, timeout=20)
            assert [m.parsed()["To"] for m in site.smtp.messages] == ["ana@example.org"]
            assert runner.sender.owner == "run-with-web"
        finally:
            runner.shutdown()
        with database.transaction(site.service.engine) as session:
            assert ledger.progress(session, plan.edition.id) == {DeliveryStatus.SENT: 1}
