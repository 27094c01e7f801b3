"""The JSON API under /api/v1 over real HTTP to the real app: tokens and scopes, problem details, paging,
idempotent creates, a post pushed in and found in the next feed build, a subscriber added and emailed, and the
OpenAPI document (valid, and listing exactly the routes the app has)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.routing import APIRoute
from starlette.routing import Mount

from syndication.app.api import create_token, revoke_token
from syndication.app.audit import audit_events
from syndication.app.editions import plan_edition
from syndication.app.publishing import publish_feeds
from syndication.app.subscribers import add_subscriber
from syndication.cli import main
from syndication.web.api import PREFIX
from tests.support import poll, post_record
from tests.web_site import KEY, WebSite, web_site

SINCE, UNTIL = datetime(2024, 5, 1, tzinfo=UTC), datetime(2024, 6, 1, tzinfo=UTC)
SCOPES = ("read", "posts", "subscribers", "send")

# Every operation of the API and the scope it needs (None: open). A route the app has that is missing here fails
# test_every_route_has_its_scope_rule_and_refuses_a_token_without_it.
RULES: dict[tuple[str, str], str] = {
    ("GET", "/posts"): "read",
    ("GET", "/posts/{reference}"): "read",
    ("POST", "/posts"): "posts",
    ("GET", "/themes"): "read",
    ("GET", "/regions"): "read",
    ("GET", "/status"): "read",
    ("GET", "/editions"): "read",
    ("GET", "/editions/{edition_id}"): "read",
    ("POST", "/editions/{edition_id}/approve"): "send",
    ("POST", "/editions/{edition_id}/pause"): "send",
    ("POST", "/editions/{edition_id}/resume"): "send",
    ("POST", "/editions/{edition_id}/cancel"): "send",
    ("GET", "/subscribers"): "subscribers",
    ("POST", "/subscribers"): "subscribers",
}


@pytest.fixture
def site(tmp_path: Path, database_url: str) -> Iterator[WebSite]:
    with web_site(tmp_path, database_url) as running:
        yield running


def token(site: WebSite, *scopes: str, name: str = "cms") -> str:
    return create_token(site.service, name, scopes or SCOPES, actor="cli:test")[1]


def client(site: WebSite, text: str | None) -> httpx.Client:
    headers = {"Authorization": f"Bearer {text}"} if text else {}
    return httpx.Client(base_url=site.server.url() + PREFIX, timeout=10, headers=headers)


def problem(response: httpx.Response, status: int, code: str, field: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json", response.headers
    body: dict[str, Any] = response.json()
    assert body["status"] == status and body["code"] == code, body
    assert body["type"] == f"{PREFIX}/docs#{code}" and body["title"] and body["detail"], body
    assert "Traceback" not in response.text and "<html" not in response.text
    if field is not None:
        assert body.get("field") == field, body
    return body


def mounted_routes(site: WebSite) -> list[APIRoute]:
    app: Any = site.server._server.config.app.app  # type: ignore[union-attr]  # the site's _Later, holding the app
    (mount,) = [route for route in app.routes if isinstance(route, Mount) and route.path == PREFIX]
    api: Any = mount.app
    return [route for route in api.routes if isinstance(route, APIRoute) and route.include_in_schema]


# --- Tokens ---------------------------------------------------------------------------------------------------


def test_requests_without_a_valid_token_are_refused_as_problem_details(site: WebSite) -> None:
    good = token(site, "read")
    token_id = int(good.split("_")[1])
    for text in (None, "not-a-token", f"synd_{token_id}_{'A' * 43}", f"synd_999_{good.split('_', 2)[2]}"):
        with client(site, text) as api:
            answer = api.get("/posts")
            problem(answer, 401, "unauthenticated")
            assert answer.headers["WWW-Authenticate"].startswith("Bearer")
    with client(site, good) as api:
        assert api.get("/posts").status_code == 200
        revoke_token(site.service, token_id, actor="cli:test")
        assert problem(api.get("/posts"), 401, "unauthenticated")["detail"] == "the token was revoked"
    with httpx.Client(base_url=site.server.url(), headers={"Authorization": f"Basic {good}"}) as other:
        problem(other.get(f"{PREFIX}/posts"), 401, "unauthenticated")


def test_every_route_has_its_scope_rule_and_refuses_a_token_without_it(site: WebSite) -> None:
    routes = {(method, route.path_format) for route in mounted_routes(site) for method in route.methods or ()}
    assert routes == set(RULES)
    for (method, path), scope in RULES.items():
        others = [s for s in SCOPES if s != scope]
        with client(site, token(site, *others, name=f"no {scope}")) as api:
            address = path.replace("{reference}", "1").replace("{edition_id}", "1")
            problem(api.request(method, address, json={}), 403, "insufficient_scope")


def test_each_token_is_rate_limited_with_retry_after(tmp_path: Path, database_url: str) -> None:
    with web_site(tmp_path, database_url, "[api]\nrequests_per_minute = 3\n") as site:
        first, second = token(site, "read"), token(site, "read", name="other")
        with client(site, first) as api:
            assert [api.get("/themes").status_code for _ in range(3)] == [200, 200, 200]
            answer = api.get("/themes")
            problem(answer, 429, "rate_limited")
            assert 1 <= int(answer.headers["Retry-After"]) <= 60
        with client(site, second) as api:
            assert api.get("/themes").status_code == 200


def test_tokens_from_the_command_line_are_shown_once_listed_revoked_and_audited(
    site: WebSite, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SYNDICATION_SECRET_KEY", KEY)
    config = str(tmp_path / "config.toml")  # web_site's
    assert main(["--config", config, "tokens", "create", "crm", "--scopes", "subscribers,read"]) == 0
    text = capsys.readouterr().out.strip()
    assert text.startswith("synd_1_") and len(text) == len("synd_1_") + 43
    with client(site, text) as api:
        assert api.get("/subscribers").status_code == 200
        problem(api.post("/posts", json=post_record(9)), 403, "insufficient_scope")
    assert main(["--config", config, "tokens", "list", "--json"]) == 0
    (listed,) = json.loads(capsys.readouterr().out)
    assert listed["name"] == "crm" and listed["scopes"] == ["read", "subscribers"]
    assert listed["last_used_at"] is not None and listed["revoked_at"] is None
    assert text not in json.dumps(listed) and text.split("_", 2)[2] not in json.dumps(listed)
    assert main(["--config", config, "tokens", "revoke", "1"]) == 0
    assert main(["--config", config, "tokens", "revoke", "7"]) == 1
    assert main(["--config", config, "tokens", "create", "x", "--scopes", "everything"]) == 1
    with client(site, text) as api:
        problem(api.get("/subscribers"), 401, "unauthenticated")
    events = audit_events(site.service)
    assert [(e.action, e.subject_id) for e in events] == [("token.revoked", 1), ("token.created", 1)]
    assert all(e.actor.startswith("cli:") for e in events)


# --- Posts ------------------------------------------------------------------------------------------------------


def test_posts_are_paged_to_the_end_and_filtered_as_the_command_line_filters(site: WebSite) -> None:
    with client(site, token(site, "read")) as api:
        seen, cursor, pages = [], None, 0
        while True:
            answer = api.get("/posts", params={"limit": 3, **({"cursor": cursor} if cursor else {})})
            assert answer.status_code == 200, answer.text
            page = answer.json()
            seen += [post["guid"] for post in page["items"]]
            pages += 1
            cursor = page["next"]
            if cursor is None:
                break
        assert pages == 2 and seen == [f"urn:test:post:{n}" for n in (4, 3, 2, 1)]
        only = api.get("/posts", params={"theme": "resilience"}).json()
        assert [p["guid"] for p in only["items"]] == ["urn:test:post:4", "urn:test:post:2"] and only["next"] is None
        assert (
            len(api.get("/posts", params={"region": "europe", "author": "ana-perez", "language": "en"}).json()["items"])
            == 4
        )
        assert api.get("/posts", params={"author": "nobody"}).json()["items"] == []
        window = {"since": "2024-05-03T10:00:00Z", "until": "2024-05-05T10:00:00Z"}
        assert [p["guid"] for p in api.get("/posts", params=window).json()["items"]] == [
            "urn:test:post:4",
            "urn:test:post:3",
        ]
        problem(api.get("/posts", params={"limit": 101}), 422, "invalid_input", "limit")
        problem(api.get("/posts", params={"cursor": "bm90LWEtY3Vyc29y"}), 422, "invalid_input", "cursor")
        problem(api.get("/posts", params={"since": "yesterday"}), 422, "invalid_input", "since")
        problem(api.get("/posts", params={"theme": "no-such-theme"}), 422, "invalid_input", "theme")


def test_one_post_by_guid_or_id(site: WebSite) -> None:
    with client(site, token(site, "read")) as api:
        post = api.get("/posts/urn:test:post:2").json()
        assert post["title"] == "Sponge streets for São Paulo" and post["authors"] == ["Ana Pérez"]
        assert post["published"] == "2024-05-03T10:00:00Z"
        assert api.get(f"/posts/{post['id']}").json() == post
        problem(api.get("/posts/urn:test:post:99"), 404, "not_found")


def test_a_post_pushed_through_the_api_is_in_the_next_feed_build(site: WebSite) -> None:
    record = post_record(7, guid="https://city.example.org/news/7", title="Tram lines for Lyon", themes=["resilience"])
    with client(site, token(site, "posts", "read")) as api:
        answer = api.post("/posts", json=record)
        assert answer.status_code == 201, answer.text
        assert answer.json()["action"] == "created" and answer.json()["post"]["guid"] == record["guid"]
        assert api.get("/posts/https://city.example.org/news/7").json()["title"] == "Tram lines for Lyon"
        again = api.post("/posts", json=record)
        assert again.status_code == 200 and again.json()["action"] == "unchanged"
        newer = api.post(
            "/posts", json={**record, "title": "Tram lines for Lyon, opened", "updated": "2024-06-01T00:00:00Z"}
        )
        assert newer.status_code == 200 and newer.json()["action"] == "updated"
    publish_feeds(site.service)
    feeds = site.settings.feeds.output_dir
    assert "Tram lines for Lyon, opened" in (feeds / "all.atom").read_text(encoding="utf-8")
    assert "Tram lines for Lyon, opened" in (feeds / "themes" / "resilience.rss").read_text(encoding="utf-8")


def test_a_refused_post_names_its_field(site: WebSite) -> None:
    with client(site, token(site, "posts")) as api:
        problem(api.post("/posts", json=post_record(8, title=None)), 422, "invalid_input", "title")
        problem(api.post("/posts", json=post_record(8, url="ftp://x.example/1")), 422, "invalid_input", "url")
        problem(api.post("/posts", json=post_record(8, published="soon")), 422, "invalid_input", "published")
        problem(api.post("/posts", json=post_record(8, title=5)), 422, "invalid_input", "title")
        problem(
            api.post("/posts", content=b"{not json", headers={"Content-Type": "application/json"}), 422, "invalid_input"
        )
        assert api.post("/posts", json=post_record(8, themes=["unknown"])).json()["warnings"] == [
            "unknown theme 'unknown' ignored"
        ]


def test_an_idempotent_post_retry_gets_the_same_answer_and_another_body_a_conflict(site: WebSite) -> None:
    record = post_record(11, title="Once only")
    with client(site, token(site, "posts", "read")) as api:
        first = api.post("/posts", json=record, headers={"Idempotency-Key": "k-1"})
        retry = api.post("/posts", json=record, headers={"Idempotency-Key": "k-1"})
        assert first.status_code == retry.status_code == 201
        assert retry.json() == first.json() and retry.headers["Idempotent-Replayed"] == "true"
        problem(api.post("/posts", json={**record, "title": "Twice"}, headers={"Idempotency-Key": "k-1"}), 409,
                "idempotency_key_reused")  # fmt: skip
        titles = [p["title"] for p in api.get("/posts", params={"limit": 100}).json()["items"]]
        assert titles.count("Once only") == 1 and "Twice" not in titles
        problem(api.post("/posts", json=record, headers={"Idempotency-Key": "k" * 201}), 422, "invalid_input",
                "Idempotency-Key")  # fmt: skip
    with client(site, token(site, "posts", name="other")) as api:  # keys are per token
        assert (
            api.post("/posts", json={**record, "title": "Twice"}, headers={"Idempotency-Key": "k-1"}).status_code == 200
        )


# --- Themes, regions, status ---------------------------------------------------------------------------------


def test_themes_regions_and_status(site: WebSite) -> None:
    with client(site, token(site, "read")) as api:
        themes = {t["slug"]: t for t in api.get("/themes").json()}
        assert themes["climate-action"]["posts"] == 2 and themes["resilience"]["posts"] == 2
        assert [t["slug"] for t in api.get("/themes").json()] == [t.slug for t in site.settings.themes]
        assert api.get("/regions").json() == [{"slug": r.slug, "name": r.name} for r in site.settings.regions]
        status = api.get("/status").json()
        assert status["queue_depth"] == 0 and {c["cadence"] for c in status["editions"]} >= {"weekly"}


# --- Editions ---------------------------------------------------------------------------------------------------


def test_editions_are_paged_shown_and_controlled_with_the_send_scope(site: WebSite) -> None:
    add_subscriber(site.service, "ana@example.org", cadence="weekly", confirmed=True)
    add_subscriber(site.service, "bo@example.org", cadence="monthly", confirmed=True)
    plan_edition(site.service, "weekly", SINCE, UNTIL, draft=True)
    plan_edition(site.service, "monthly", SINCE, UNTIL, draft=True)
    with client(site, token(site, "read", "send", name="dashboard")) as api:
        first = api.get("/editions", params={"limit": 1}).json()
        second = api.get("/editions", params={"limit": 1, "cursor": first["next"]}).json()
        assert [e["id"] for e in first["items"] + second["items"]] == [2, 1] and second["next"] is None
        edition = api.get("/editions/1").json()
        assert edition["status"] == "draft" and edition["deliveries"] == {"queued": 1}
        assert "approve" in edition["actions"]
        problem(api.get("/editions/99"), 404, "not_found")
        problem(api.get("/editions/x"), 422, "invalid_input", "edition_id")
        problem(api.post("/editions/1/pause"), 409, "edition_refused")
        approved = api.post("/editions/1/approve")
        assert approved.status_code == 200, approved.text
        assert approved.json()["previous_status"] == "draft" and approved.json()["edition"]["status"] == "sending"
        assert api.get("/editions/1").json()["deliveries"] == {"queued": 1}
        assert api.post("/editions/1/pause").json()["edition"]["status"] == "paused"
        assert api.post("/editions/1/resume").json()["edition"]["status"] == "sending"
        assert api.post("/editions/2/cancel").json()["edition"]["status"] == "cancelled"
        problem(api.post("/editions/99/approve"), 404, "not_found")
    actions = [(e.actor, e.action, e.subject_id) for e in audit_events(site.service)][:4]
    assert actions == [
        ("token:dashboard", "edition.cancelled", 2),
        ("token:dashboard", "edition.resumed", 1),
        ("token:dashboard", "edition.paused", 1),
        ("token:dashboard", "edition.approved", 1),
    ]


# --- Subscribers ------------------------------------------------------------------------------------------------


def test_a_subscriber_added_through_the_api_gets_the_confirmation_email(site: WebSite) -> None:
    with client(site, token(site, "subscribers", name="crm")) as api:
        body = {"email": "Lea@Example.org", "name": "Léa", "themes": ["resilience"], "cadence": "weekly"}
        first = api.post("/subscribers", json=body, headers={"Idempotency-Key": "event-42"})
        assert first.status_code == 201, first.text
        added = first.json()
        assert added["action"] == "added" and added["confirmation_sent"] is True
        assert added["subscriber"]["status"] == "pending" and added["subscriber"]["email"] == "lea@example.org"
        retry = api.post("/subscribers", json=body, headers={"Idempotency-Key": "event-42"})
        assert retry.status_code == 201 and retry.json() == added
        problem(api.post("/subscribers", json={**body, "cadence": "daily"}, headers={"Idempotency-Key": "event-42"}),
                409, "idempotency_key_reused")  # fmt: skip
        received = poll(lambda: site.smtp.received_for("lea@example.org"), 10, interval=0.02)
        assert received and len(site.smtp.received_for("lea@example.org")) == 1
        assert "/subscribe/confirm/" in received[0].parsed().get_body(("plain",)).get_content()  # type: ignore[union-attr]
        known = api.post("/subscribers", json=body)
        assert known.status_code == 200 and known.json()["action"] == "exists"
        active = api.post("/subscribers", json={"email": "max@example.org", "confirmed": True}).json()
        assert active["subscriber"]["status"] == "active" and active["confirmation_sent"] is False
        assert site.smtp.received_for("max@example.org") == []
        assert site.status_of("lea@example.org") == "pending"


def test_a_refused_subscriber_names_its_field(site: WebSite) -> None:
    with client(site, token(site, "subscribers")) as api:
        problem(api.post("/subscribers", json={"email": "not an address"}), 422, "invalid_input", "email")
        problem(
            api.post("/subscribers", json={"email": "a@example.org", "themes": ["nope"]}),
            422,
            "invalid_input",
            "themes",
        )
        problem(api.post("/subscribers", json={"email": "a@example.org", "cadence": "hourly"}), 422, "invalid_input",
                "cadence")  # fmt: skip
        problem(api.post("/subscribers", json={"email": "a@example.org", "status": "active"}), 422, "invalid_input",
                "status")  # fmt: skip
        problem(api.post("/subscribers", json={}), 422, "invalid_input", "email")
    assert site.status_of("a@example.org") is None


def test_subscribers_are_paged_to_the_end_with_a_status_filter(site: WebSite) -> None:
    for n in range(5):
        add_subscriber(site.service, f"s{n}@example.org", confirmed=n % 2 == 0)
    with client(site, token(site, "subscribers")) as api:
        seen, cursor = [], None
        while True:
            params: dict[str, Any] = {"limit": 2, "status": "active", **({"cursor": cursor} if cursor else {})}
            page = api.get("/subscribers", params=params).json()
            seen += [s["email"] for s in page["items"]]
            if (cursor := page["next"]) is None:
                break
        assert seen == ["s0@example.org", "s2@example.org", "s4@example.org"]
        assert len(api.get("/subscribers", params={"limit": 100}).json()["items"]) == 5
        problem(api.get("/subscribers", params={"status": "gone"}), 422, "invalid_input", "status")
        problem(api.get("/subscribers", params={"cursor": "x"}), 422, "invalid_input", "cursor")


# --- The document and the errors ----------------------------------------------------------------------------------


def test_the_openapi_document_validates_and_lists_exactly_the_routes(site: WebSite) -> None:
    from openapi_spec_validator import validate

    with httpx.Client(base_url=site.server.url()) as anonymous:
        answer = anonymous.get(f"{PREFIX}/openapi.json")
        docs = anonymous.get(f"{PREFIX}/docs")
        problem(anonymous.get(f"{PREFIX}/nothing-here"), 404, "no_such_route")
        problem(anonymous.delete(f"{PREFIX}/themes"), 405, "method_not_allowed")
    assert answer.status_code == 200 and answer.headers["content-type"] == "application/json"
    document = answer.json()
    validate(document)
    documented = {(method.upper(), path) for path, ops in document["paths"].items() for method in ops}
    routes = {(m, PREFIX + r.path_format) for r in mounted_routes(site) for m in r.methods or ()}
    assert documented == routes == {(m, PREFIX + p) for m, p in RULES}
    assert document["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    refusal = document["paths"][f"{PREFIX}/posts"]["get"]["responses"]["401"]["content"]
    assert list(refusal) == ["application/problem+json"]
    assert docs.status_code == 200 and docs.headers["content-type"].startswith("text/html")
    for _method, path in documented:
        assert path in docs.text
    assert 'id="insufficient_scope"' in docs.text


def test_a_failure_on_our_side_is_a_problem_without_a_traceback(site: WebSite, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(_service: Any) -> None:
        raise RuntimeError("secret path /etc/x")

    monkeypatch.setattr("syndication.web.api.status_report", broken)
    with client(site, token(site, "read")) as api:
        body = problem(api.get("/status"), 500, "internal_error")
    assert "secret" not in json.dumps(body)
