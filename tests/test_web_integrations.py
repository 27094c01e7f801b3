"""The owner's pages for integrations (issue 21), over real HTTP with the real app, on SQLite and PostgreSQL: API
tokens created on ``/editor/tokens`` (shown once, on the answering page, never cached), used against the JSON API
and revoked there; webhooks added on ``/editor/webhooks`` (the signing secret shown once), delivered to a real
HTTP receiver, their attempts listed, and removed; refused forms shown again with the reason beside the field and
nothing made; CSRF required; an editor's role kept out. Each change is in the audit log as the owner's."""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from syndication.app.api import list_tokens
from syndication.app.audit import audit_events
from syndication.app.subscribers import add_subscriber
from syndication.app.team import add_person
from syndication.app.webhooks import add_endpoint, deliver_webhooks, list_endpoints
from syndication.core.api_tokens import SCOPES
from syndication.core.team import Role
from syndication.core.webhooks import EVENT_TYPES
from syndication.web.integrations import EVENT_WORDS, SCOPE_WORDS
from tests import test_webhooks
from tests.test_web_editor import sign_in
from tests.test_webhooks import Receiver, verify
from tests.web_site import EDITOR, WebSite, csrf_of, form_post, web_site

TOKEN_TEXT = re.compile(r"synd_[1-9][0-9]*_[A-Za-z0-9_-]{43}")
SECRET_TEXT = re.compile(r"whsec_[A-Za-z0-9+/=]{40,}")
OWNER = f"editor:{EDITOR}"
receiver = test_webhooks.receiver  # the fixture: an HTTP server on 127.0.0.1 keeping what it is sent


@pytest.fixture
def site(tmp_path: Path, database_url: str) -> Iterator[WebSite]:
    """A site whose configured editor (an owner) signs in; webhooks to private addresses refused (the default)."""
    with web_site(tmp_path, database_url) as running:
        yield running


@pytest.fixture
def open_site(tmp_path: Path, database_url: str) -> Iterator[WebSite]:
    """A site that allows webhooks to private addresses: the receiver listens on 127.0.0.1."""
    with web_site(tmp_path, database_url, "[webhooks]\nallow_private = true\n") as running:
        yield running


@contextmanager
def owner(site: WebSite) -> Iterator[httpx.Client]:
    """A client signed in as the site's configured editor, an owner of the team."""
    with site.client() as client:
        assert sign_in(client).status_code == 303
        yield client


def api_status(site: WebSite, token: str) -> int:
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=site.server.url(), timeout=10, headers=headers) as api:
        return api.get("/api/v1/status").status_code


def field_error(page: str, name: str) -> str:
    """The error shown beside the field ``name`` (its ``<name>-error`` element's text)."""
    match = re.search(rf'id="{name}-error">([^<]*)<', page)
    assert match, f"no error beside {name}"
    return html.unescape(match.group(1))


def audited(site: WebSite) -> list[tuple[str, str, str, int | None]]:
    """The audit log of integrations, oldest first (the team's own events left out)."""
    events = audit_events(site.service, limit=1000)
    return [
        (e.actor, e.action, e.subject_kind, e.subject_id)
        for e in reversed(events)
        if e.action.startswith(("token.", "webhook."))
    ]


# --- API tokens -------------------------------------------------------------------------------------------------


def test_an_owner_creates_a_token_sees_it_once_uses_it_and_revokes_it(site: WebSite) -> None:
    with site.client() as stranger:
        assert stranger.get("/editor/tokens").status_code == 303  # signed out: to the sign-in page
    with owner(site) as client:
        dashboard = client.get("/editor/").text
        assert 'href="/editor/tokens"' in dashboard and 'href="/editor/webhooks"' in dashboard
        page = client.get("/editor/tokens")
        assert page.status_code == 200 and "No token yet." in page.text
        assert page.headers["cache-control"] == "no-store"

        made = form_post(client, "/editor/tokens", {"name": "  Shop   CMS ", "scopes": ["read", "posts"]}, page.text)
        # Answered with the page itself, the token in it: no redirect (its URL would carry the secret), no cache.
        assert made.status_code == 200 and "location" not in made.headers
        assert made.headers["cache-control"] == "no-store"
        tokens = TOKEN_TEXT.findall(made.text)
        assert len(set(tokens)) == 1, made.text
        text = tokens[0]
        assert "Copy it now: it is not shown again." in made.text
        assert "Shop CMS" in made.text
        (token,) = list_tokens(site.service)
        assert (token.name, token.scopes, token.created_by) == ("Shop CMS", ("read", "posts"), OWNER)

        assert api_status(site, text) == 200

        listed = client.get("/editor/tokens")
        assert listed.status_code == 200
        assert "Shop CMS" in listed.text and f'data-token="{token.id}"' in listed.text
        assert TOKEN_TEXT.search(listed.text) is None  # never shown again, nor its secret part
        assert text.split("_", 2)[2] not in listed.text  # the secret: everything after synd_<id>_ (it may hold "_")
        assert f"by {EDITOR}</td>" in listed.text  # who created it

        revoked = form_post(client, f"/editor/tokens/{token.id}/revoke", {}, listed.text)
        assert revoked.status_code == 303
        assert revoked.headers["location"] == "/editor/tokens?done=revoked"
        after = client.get(revoked.headers["location"]).text
        assert "The token was revoked" in after and "Revoked " in after
        assert f'/editor/tokens/{token.id}/revoke"' not in after  # no revoke button left for it
    assert api_status(site, text) == 401
    assert list_tokens(site.service)[0].revoked_at is not None
    assert audited(site) == [(OWNER, "token.created", "token", token.id), (OWNER, "token.revoked", "token", token.id)]


def test_a_refused_token_form_says_why_beside_each_field_and_makes_nothing(site: WebSite) -> None:
    with owner(site) as client:
        page = client.get("/editor/tokens").text
        empty = form_post(client, "/editor/tokens", {"name": "   "}, page)
        assert empty.status_code == 400
        assert "Name: say who or what" in field_error(empty.text, "name")
        assert "Scopes: choose at least one" in field_error(empty.text, "scopes")
        assert 'aria-invalid="true"' in empty.text and TOKEN_TEXT.search(empty.text) is None

        unknown = form_post(client, "/editor/tokens", {"name": "CRM", "scopes": ["read", "admin"]}, page)
        assert unknown.status_code == 400
        assert "'admin'" in field_error(unknown.text, "scopes")
        assert 'value="CRM"' in unknown.text  # what was typed is kept
        assert re.search(r'value="read" id="scope-read"\s+checked', unknown.text)

        long = form_post(client, "/editor/tokens", {"name": "x" * 201, "scopes": ["read"]}, page)
        assert long.status_code == 400 and "at most 200 characters" in field_error(long.text, "name")

        missing = form_post(client, "/editor/tokens/999/revoke", {}, page)
        assert missing.status_code == 404 and "There is no token 999." in missing.text
    assert list_tokens(site.service) == []
    assert audited(site) == []


# --- Webhooks ---------------------------------------------------------------------------------------------------


def test_an_owner_adds_a_webhook_sees_its_secret_once_watches_its_attempts_and_removes_it(
    open_site: WebSite, receiver: Receiver
) -> None:
    site = open_site
    with owner(site) as client:
        page = client.get("/editor/webhooks")
        assert page.status_code == 200 and "No webhook yet." in page.text
        events = ["subscriber.confirmed", "subscriber.unsubscribed"]
        added = form_post(client, "/editor/webhooks", {"url": receiver.url, "events": events}, page.text)
        assert added.status_code == 200 and "location" not in added.headers
        assert added.headers["cache-control"] == "no-store"
        assert "Copy its signing secret now: it is not shown again." in added.text
        secrets = SECRET_TEXT.findall(added.text)
        assert len(set(secrets)) == 1, added.text
        secret = secrets[0]
        (view,) = list_endpoints(site.service)
        assert (view.endpoint.url, view.endpoint.events) == (receiver.url, tuple(events))
        assert view.endpoint.secret == secret

        listed = client.get("/editor/webhooks").text
        assert receiver.url in listed and secret not in listed  # masked from now on
        assert f"whsec_…{secret[-4:]}" in listed and "No attempt yet." in listed

        # Two events: the receiver fails the first and takes the second; the delivery use case posts them.
        receiver.answers = [500]
        add_subscriber(site.service, "ana@example.org", themes=[], cadence="weekly", confirmed=True)
        add_subscriber(site.service, "bo@example.org", themes=[], cadence="weekly", confirmed=True)
        report = deliver_webhooks(site.service)
        assert (report.delivered, report.retrying) == (1, 1), report
        assert len(receiver.received) == 2
        for message in receiver.received:
            verify(secret, message)  # signed with the secret the page showed

        shown = client.get("/editor/webhooks").text
        rows = re.findall(r"<tr data-attempt>(.*?)</tr>", shown, re.S)
        assert len(rows) == 2, shown
        ids = {message.headers["webhook-id"] for message in receiver.received}
        assert {re.search(r"msg_[0-9a-f]+", row).group(0) for row in rows} == ids  # type: ignore[union-attr]
        assert all("subscriber.confirmed" in row for row in rows)
        assert sum("HTTP 500" in row and "not delivered" in row for row in rows) == 1
        assert sum("HTTP 200" in row and "· delivered" in row for row in rows) == 1
        assert "1 delivered" in shown and "1 waiting" in shown

        endpoint_id = view.endpoint.id
        removed = form_post(client, f"/editor/webhooks/{endpoint_id}/remove", {}, shown)
        assert removed.status_code == 303
        assert removed.headers["location"] == "/editor/webhooks?done=removed"
        after = client.get(removed.headers["location"]).text
        assert "The webhook was removed" in after and receiver.url not in after
    assert list_endpoints(site.service) == []
    assert audited(site) == [
        (OWNER, "webhook.added", "webhook", endpoint_id),
        (OWNER, "webhook.removed", "webhook", endpoint_id),
    ]
    added_event = next(e for e in audit_events(site.service) if e.action == "webhook.added")
    assert added_event.details == {"url": receiver.url, "events": events}  # never the secret


def test_a_private_address_is_refused_unless_allowed_and_nothing_is_made(site: WebSite) -> None:
    with owner(site) as client:
        page = client.get("/editor/webhooks").text
        assert "Loopback and private network addresses are refused." in page
        for url, host in (("http://127.0.0.1:9/hooks", "127.0.0.1"), ("http://localhost/x", "localhost")):
            refused = form_post(client, "/editor/webhooks", {"url": url, "events": ["post.published"]}, page)
            assert refused.status_code == 400
            said = field_error(refused.text, "url")
            assert host in said and "[webhooks] allow_private = true" in said
            assert f'value="{url}"' in refused.text
            assert re.search(r'value="post.published" id="event-post-published"\s+checked', refused.text)
            assert SECRET_TEXT.search(refused.text) is None

        not_web = form_post(client, "/editor/webhooks", {"url": "ftp://example.org/x"}, page)
        assert not_web.status_code == 400
        assert "https://" in field_error(not_web.text, "url")
        assert "choose at least one event" in field_error(not_web.text, "events")

        unknown = form_post(
            client, "/editor/webhooks", {"url": "https://example.org/x", "events": ["post.deleted"]}, page
        )
        assert unknown.status_code == 400 and "'post.deleted'" in field_error(unknown.text, "events")

        missing = form_post(client, "/editor/webhooks/999/remove", {}, page)
        assert missing.status_code == 404 and "There is no webhook 999." in missing.text
    assert list_endpoints(site.service) == []
    assert audited(site) == []


# --- Who may post ---------------------------------------------------------------------------------------------


def test_posts_without_the_csrf_token_are_refused(site: WebSite) -> None:
    with owner(site) as client:
        page = client.get("/editor/tokens").text
        made = form_post(client, "/editor/tokens", {"name": "CMS", "scopes": ["read"]}, page)
        (token,) = list_tokens(site.service)
        assert made.status_code == 200
        endpoint, _secret = add_endpoint(
            site.service, "https://example.org/hooks", ["post.published"], actor="cli:test"
        )
        posts = {
            "/editor/tokens": {"name": "Other", "scopes": ["read"]},
            f"/editor/tokens/{token.id}/revoke": {},
            "/editor/webhooks": {"url": "https://example.org/hooks", "events": ["post.published"]},
            f"/editor/webhooks/{endpoint.id}/remove": {},
        }
        for path, data in posts.items():
            for token_field in ({}, {"csrf_token": "forged"}):
                answer = client.post(path, data={**data, **token_field})
                assert answer.status_code == 403, (path, token_field)
                assert "Please try again" in answer.text
    assert [(t.name, t.revoked_at) for t in list_tokens(site.service)] == [("CMS", None)]
    assert [view.endpoint.id for view in list_endpoints(site.service)] == [endpoint.id]


def test_an_editor_role_cannot_manage_tokens_or_webhooks(site: WebSite) -> None:
    password = "another long enough password"
    add_person(site.service, "bo", None, Role.EDITOR, password, actor="cli:test")
    with site.client() as client:
        login = client.get("/editor/login").text
        signed = form_post(client, "/editor/login", {"name": "bo", "password": password, "next": ""}, login)
        assert signed.status_code == 303
        dashboard = client.get("/editor/").text
        assert 'href="/editor/tokens"' not in dashboard and 'href="/editor/webhooks"' not in dashboard
        for path in ("/editor/tokens", "/editor/webhooks"):
            assert client.get(path).status_code == 403, path
        csrf = csrf_of(dashboard)
        answer = client.post("/editor/tokens", data={"csrf_token": csrf, "name": "CMS", "scopes": "read"})
        assert answer.status_code == 403 and TOKEN_TEXT.search(answer.text) is None
        hook = {"csrf_token": csrf, "url": "https://example.org/hooks", "events": "post.published"}
        assert client.post("/editor/webhooks", data=hook).status_code == 403
    assert list_tokens(site.service) == []
    assert list_endpoints(site.service) == []


def test_every_scope_and_event_is_worded_on_the_pages() -> None:
    assert tuple(SCOPE_WORDS) == SCOPES
    assert tuple(EVENT_WORDS) == EVENT_TYPES
