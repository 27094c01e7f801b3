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
from syndication.app.bounces import record_bounce
from syndication.app.editions import plan_edition
from syndication.app.notices import drain_notices, notice_counts
from syndication.app.publishing import publish_feeds
from syndication.app.subscribers import add_subscriber
from syndication.cli import main
from syndication.web.api import PREFIX
from tests.support import poll, post_record
from tests.web_site import KEY, WebSite, web_site

SINCE, UNTIL = datetime(2024, 5, 1, tzinfo=UTC), datetime(2024, 6, 1, tzinfo=UTC)
SCOPES = ("read", "posts", "subscribers", "send")

# Every operation of the API and the scope it needs. A route the app has that is missing here, or a row here for a
# route the app does not have, fails test_every_route_has_its_scope_rule_and_refuses_a_token_without_it.
RULES: dict[tuple[str, str], str] = {
    ("GET", "/posts"): "read",
    ("GET", "/posts/{reference}"): "read",
    ("POST", "/posts"): "posts",
    ("POST", "/posts/import"): "posts",
    ("DELETE", "/posts/{reference}"): "posts",
    ("GET", "/themes"): "read",
    ("GET", "/regions"): "read",
    ("GET", "/status"): "read",
    ("GET", "/editions"): "read",
    ("GET", "/editions/{edition_id}"): "read",
    ("POST", "/editions/{edition_id}/approve"): "send",
    ("POST", "/editions/{edition_id}/pause"): "send",
    ("POST", "/editions/{edition_id}/resume"): "send",
    ("POST", "/editions/{edition_id}/cancel"): "send",
    ("GET", "/editions/{edition_id}/preview"): "read",
    ("POST", "/editions/{edition_id}/test"): "send",
    ("GET", "/subscribers"): "subscribers",
    ("POST", "/subscribers"): "subscribers",
    ("POST", "/subscribers/import"): "subscribers",
    ("GET", "/subscribers/export"): "subscribers",
    ("GET", "/subscribers/{reference}"): "subscribers",
    ("PATCH", "/subscribers/{reference}"): "subscribers",
    ("DELETE", "/subscribers/{reference}"): "subscribers",
    ("POST", "/subscribers/{reference}/unsubscribe"): "subscribers",
    ("GET", "/bounces"): "subscribers",
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
    assert routes - set(RULES) == set(), "routes without a scope rule in RULES"
    assert set(RULES) - routes == set(), "rules in RULES for routes the app does not have"
    everything = token(site, name="everything")
    revoke_token(site.service, int(everything.split("_")[1]), actor="cli:test")
    for (method, path), scope in RULES.items():
        address = path.replace("{reference}", "1").replace("{edition_id}", "1")
        others = [s for s in SCOPES if s != scope]
        with client(site, token(site, *others, name=f"no {scope}")) as api:
            body = problem(api.request(method, address, json={}), 403, "insufficient_scope")
            assert scope in body["detail"], (method, path, body)
        for text, why in ((None, "needs a token"), (everything, "was revoked")):
            with client(site, text) as api:
                body = problem(api.request(method, address, json={}), 401, "unauthenticated")
                assert why in body["detail"], (method, path, body)
    assert site.status_of("ana@example.org") is None and len(api_posts(site)) == 4  # nothing was done


def api_posts(site: WebSite) -> list[dict[str, Any]]:
    with client(site, token(site, "read", name="reader")) as api:
        items: list[dict[str, Any]] = api.get("/posts", params={"limit": 100}).json()["items"]
    return items


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
    events = [e for e in audit_events(site.service) if e.action.startswith("token.")]  # the site's team is there too
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


def test_a_batch_of_posts_is_imported_item_by_item_keeping_the_valid_ones(site: WebSite) -> None:
    batch: list[Any] = [
        post_record(21, title="Bike lanes for Porto"),
        post_record(22, title=None),
        post_record(1, title="Malmö's zone, extended", updated="2024-06-01T00:00:00Z"),
        post_record(2),
        "not a record",
        post_record(23, themes=["unknown"]),
        post_record(24, url="ftp://x.example/24"),
    ]
    with client(site, token(site, "posts", "read")) as api:
        answer = api.post("/posts/import", json=batch, headers={"Idempotency-Key": "batch-1"})
        assert answer.status_code == 200, answer.text
        result = answer.json()
        assert result["counts"] == {"created": 2, "updated": 1, "unchanged": 1, "refused": 3}
        items = result["items"]
        assert [(i["index"], i["action"]) for i in items] == [
            (0, "created"), (1, "refused"), (2, "updated"), (3, "unchanged"), (4, "refused"), (5, "created"),
            (6, "refused"),
        ]  # fmt: skip
        assert items[0]["guid"] == "urn:test:post:21" and isinstance(items[0]["id"], int)
        assert (items[1]["reason"], items[1]["field"], items[1]["id"]) == ("missing title", "title", None)
        assert "not a JSON object" in items[4]["reason"]
        assert items[5]["warnings"] == ["unknown theme 'unknown' ignored"]
        assert items[6]["field"] == "url" and "ftp://x.example/24" in items[6]["reason"]
        titles = {p["guid"]: p["title"] for p in api.get("/posts", params={"limit": 100}).json()["items"]}
        assert titles["urn:test:post:21"] == "Bike lanes for Porto" and "urn:test:post:22" not in titles
        assert titles["urn:test:post:1"] == "Malmö's zone, extended"
        replayed = api.post("/posts/import", json=batch, headers={"Idempotency-Key": "batch-1"})
        assert replayed.json() == result and replayed.headers["Idempotent-Replayed"] == "true"
        again = api.post("/posts/import", json=batch[:1] + batch[:1]).json()
        assert [i["action"] for i in again["items"]] == ["unchanged", "unchanged"]
        assert again["items"][1]["warnings"] == ["item 0 has the same guid and is the version kept"]
        too_many = [post_record(100 + n) for n in range(1001)]
        assert "1001 items" in problem(api.post("/posts/import", json=too_many), 413, "batch_too_large")["detail"]
        assert "urn:test:post:100" not in {p["guid"] for p in api.get("/posts", params={"limit": 100}).json()["items"]}
        problem(api.post("/posts/import", json={"guid": "x"}), 422, "invalid_input")
        assert api.post("/posts/import", json=[]).json() == {
            "counts": {"created": 0, "updated": 0, "unchanged": 0, "refused": 0},
            "items": [],
        }


def test_a_post_deleted_through_the_api_is_gone_from_the_next_feed_build(site: WebSite) -> None:
    publish_feeds(site.service)
    feeds = site.settings.feeds.output_dir
    assert "Sponge streets for São Paulo" in (feeds / "all.atom").read_text(encoding="utf-8")
    with client(site, token(site, "posts", "read")) as api:
        assert api.delete("/posts/urn:test:post:2").status_code == 204
        problem(api.get("/posts/urn:test:post:2"), 404, "not_found")
        problem(api.delete("/posts/urn:test:post:2"), 404, "not_found")
        number_three = api.get("/posts/urn:test:post:3").json()["id"]
        assert api.delete(f"/posts/{number_three}").status_code == 204
        assert [p["guid"] for p in api.get("/posts").json()["items"]] == ["urn:test:post:4", "urn:test:post:1"]
    publish_feeds(site.service)
    assert "Sponge streets for São Paulo" not in (feeds / "all.atom").read_text(encoding="utf-8")
    assert "Sponge streets" not in (feeds / "themes" / "resilience.rss").read_text(encoding="utf-8")


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


def test_an_edition_is_previewed_and_tested_as_some_readers_get_it(site: WebSite) -> None:
    add_subscriber(site.service, "ana@example.org", themes=["resilience"], confirmed=True)
    plan_edition(site.service, "weekly", SINCE, UNTIL, draft=True)
    with client(site, token(site, "read", "send", name="dashboard")) as api:
        everything = api.get("/editions/1/preview").json()
        assert everything["themes"] is None and everything["language"] == "en"
        email = everything["email"]
        assert email["subject"] and "Heat pumps in Kraków" in email["text"] and "Malmö" in email["text"]
        assert "/unsubscribe/preview" in email["html"] and "<html" in email["html"]
        as_ana = api.get("/editions/1/preview", params={"subscriber": "ana@example.org"}).json()
        assert as_ana["themes"] == ["resilience"] and "Sponge streets" in as_ana["email"]["text"]
        assert "Malmö" not in as_ana["email"]["text"]
        by_theme = api.get("/editions/1/preview", params={"themes": ["circular-economy"], "language": "en"}).json()
        assert "Repair cafés" in by_theme["email"]["text"] and "Sponge streets" not in by_theme["email"]["text"]
        problem(api.get("/editions/1/preview", params={"themes": "nope"}), 422, "invalid_input", "themes")
        problem(api.get("/editions/1/preview", params={"language": "xx"}), 422, "invalid_input", "language")
        problem(api.get("/editions/1/preview", params={"subscriber": "bo@example.org"}), 422, "invalid_input",
                "subscriber")  # fmt: skip
        problem(api.get("/editions/99/preview"), 404, "not_found")

        sent = api.post("/editions/1/test", json={"to": "Team@Example.org", "subscriber": "ana@example.org"})
        assert sent.status_code == 200, sent.text
        assert sent.json() == {"to": "team@example.org", "subject": as_ana["email"]["subject"],
                               "themes": ["resilience"], "language": "en"}  # fmt: skip
        (received,) = poll(lambda: site.smtp.received_for("team@example.org"), 10, interval=0.02)
        assert received.parsed()["X-Syndication-Test"] == "edition 1"
        assert "Sponge streets" in received.parsed().get_body(("plain",)).get_content()  # type: ignore[union-attr]
        problem(api.post("/editions/1/test", json={"to": "not an address"}), 422, "invalid_input", "to")
        problem(api.post("/editions/1/test", json={}), 422, "invalid_input", "to")
        problem(api.post("/editions/99/test", json={"to": "team@example.org"}), 404, "not_found")
        site.smtp.behaviour.reject = ["closed@example.org"]
        refused = problem(api.post("/editions/1/test", json={"to": "closed@example.org"}), 502, "not_sent")
        assert "550" in refused["detail"]
    add_subscriber(site.service, "cy@example.org", cadence="daily", confirmed=True)
    plan_edition(site.service, "daily", SINCE, datetime(2024, 5, 3, tzinfo=UTC), draft=True)  # post 1 alone
    with client(site, token(site, "read", "send", name="dashboard 2")) as api:
        assert api.get("/editions/2/preview", params={"themes": "resilience"}).json()["email"] is None
        problem(api.post("/editions/2/test", json={"to": "team@example.org", "themes": ["resilience"]}), 409,
                "nothing_to_send")  # fmt: skip
    tests = [
        (e.actor, e.subject_id, e.details["to"]) for e in audit_events(site.service) if e.action == "edition.test_sent"
    ]
    assert tests == [("token:dashboard", 1, "team@example.org")]


# --- Subscribers ------------------------------------------------------------------------------------------------


def test_a_subscriber_added_through_the_api_gets_the_confirmation_email_through_the_notices_queue(
    site: WebSite,
) -> None:
    with client(site, token(site, "subscribers", name="crm")) as api:
        body = {"email": "Lea@Example.org", "name": "Léa", "themes": ["resilience"], "cadence": "weekly"}
        first = api.post("/subscribers", json=body, headers={"Idempotency-Key": "event-42"})
        assert first.status_code == 201, first.text
        added = first.json()
        assert added["action"] == "added" and added["confirmation_queued"] is True
        assert added["subscriber"]["status"] == "pending" and added["subscriber"]["email"] == "lea@example.org"
        assert added["subscriber"]["reads"] == [] and added["subscriber"]["language_choice"] is None
        assert sum(notice_counts(site.service).values()) == 1  # a notice of the queue, not a message of the request
        retry = api.post("/subscribers", json=body, headers={"Idempotency-Key": "event-42"})
        assert retry.status_code == 201 and retry.json() == added
        problem(api.post("/subscribers", json={**body, "cadence": "daily"}, headers={"Idempotency-Key": "event-42"}),
                409, "idempotency_key_reused")  # fmt: skip
        drain_notices(site.service)  # as the web app's own drain does (it may have sent it already: sent once)
        received = poll(lambda: site.smtp.received_for("lea@example.org"), 10, interval=0.02)
        assert received and len(site.smtp.received_for("lea@example.org")) == 1
        assert "/subscribe/confirm/" in received[0].parsed().get_body(("plain",)).get_content()  # type: ignore[union-attr]
        known = api.post("/subscribers", json=body)
        assert known.status_code == 200 and known.json()["action"] == "exists"
        active = api.post("/subscribers", json={"email": "max@example.org", "confirmed": True}).json()
        assert active["subscriber"]["status"] == "active" and active["confirmation_queued"] is False
        drain_notices(site.service)
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


def test_one_subscriber_is_read_changed_unsubscribed_and_erased(site: WebSite) -> None:
    ana = add_subscriber(site.service, "ana@example.org", name="Ana", confirmed=True).subscriber
    with client(site, token(site, "subscribers", name="crm")) as api:
        found = api.get(f"/subscribers/{ana.id}").json()
        assert found == api.get("/subscribers/ANA@example.org").json()
        assert (found["email"], found["status"], found["themes"], found["reads"], found["language_choice"]) == (
            "ana@example.org", "active", None, [], None,
        )  # fmt: skip
        problem(api.get("/subscribers/999"), 404, "not_found")
        problem(api.get("/subscribers/nobody@example.org"), 404, "not_found")
        change = {"themes": ["resilience"], "cadence": "monthly", "reads": ["pt-br", "es"], "language_choice": "only"}
        changed = api.patch(f"/subscribers/{ana.id}", json=change)
        assert changed.status_code == 200, changed.text
        now = changed.json()
        assert now["changed"] is True and now["subscriber"]["name"] == "Ana"
        assert (now["subscriber"]["themes"], now["subscriber"]["cadence"], now["subscriber"]["language"]) == (
            ["resilience"], "monthly", "en",
        )  # fmt: skip
        assert now["subscriber"]["reads"] == ["pt-BR", "es"] and now["subscriber"]["language_choice"] == "only"
        assert api.patch("/subscribers/ana@example.org", json=change).json()["changed"] is False
        every = api.patch(f"/subscribers/{ana.id}", json={"themes": None, "name": "Ana P."}).json()["subscriber"]
        assert every["themes"] is None and every["name"] == "Ana P." and every["cadence"] == "monthly"
        problem(api.patch(f"/subscribers/{ana.id}", json={"cadence": "hourly"}), 422, "invalid_input", "cadence")
        problem(api.patch(f"/subscribers/{ana.id}", json={"reads": ["not a tag!"]}), 422, "invalid_input", "reads")
        problem(api.patch(f"/subscribers/{ana.id}", json={"language": "xx"}), 422, "invalid_input", "language")
        problem(api.patch(f"/subscribers/{ana.id}", json={"themes": ["nope"]}), 422, "invalid_input", "themes")
        problem(api.patch(f"/subscribers/{ana.id}", json={"status": "active"}), 422, "invalid_input", "status")
        problem(api.patch("/subscribers/999", json={"cadence": "daily"}), 404, "not_found")
        left = api.post(f"/subscribers/{ana.id}/unsubscribe").json()
        assert left["previous_status"] == "active" and left["subscriber"]["status"] == "unsubscribed"
        assert api.post(f"/subscribers/{ana.id}/unsubscribe").json()["subscriber"]["status"] == "unsubscribed"
        problem(api.patch(f"/subscribers/{ana.id}", json={"cadence": "daily"}), 409, "subscriber_refused")
        problem(api.post("/subscribers/999/unsubscribe"), 404, "not_found")
        assert api.delete("/subscribers/ana@example.org").json() == {"outcome": "removed"}
        problem(api.get(f"/subscribers/{ana.id}"), 404, "not_found")
        assert api.delete("/subscribers/ana@example.org").json() == {"outcome": "already removed"}
        assert api.delete("/subscribers/never@example.org").json() == {"outcome": "suppressed"}
        problem(api.delete("/subscribers/999"), 404, "not_found")
        problem(api.delete("/subscribers/not@an@address"), 422, "invalid_input", "reference")
        problem(api.post("/subscribers", json={"email": "ana@example.org"}), 409, "subscriber_refused")
    erased = [e for e in audit_events(site.service) if e.action == "subscriber.erased"]
    assert [(e.actor, e.subject_id) for e in erased] == [("token:crm", None), ("token:crm", ana.id)]
    assert "ana@example.org" not in json.dumps([e.details for e in erased])


def test_a_batch_of_subscribers_is_imported_with_the_consent_rules_and_the_export_imports_again(
    site: WebSite,
) -> None:
    add_subscriber(site.service, "old@example.org", confirmed=True)
    add_subscriber(site.service, "left@example.org", confirmed=True)
    with client(site, token(site, "subscribers", name="crm")) as api:
        api.post("/subscribers/left@example.org/unsubscribe")
        api.delete("/subscribers/gone@example.org")
        batch: list[Any] = [
            {"email": "new@example.org", "name": "Nora", "themes": ["resilience"], "reads": ["es"]},
            {"email": "bad@example.org", "themes": ["nope"]},
            {"email": "NEW@example.org"},
            "not a record",
            {"email": "old@example.org", "cadence": "daily"},
            {"email": "left@example.org"},
            {"email": "gone@example.org"},
            {"email": "x@example.org", "colour": "blue"},
            {"email": "quiet@example.org", "status": "unsubscribed", "consent_at": "2024-01-01T00:00:00Z",
             "consent_method": "form"},
        ]  # fmt: skip
        answer = api.post("/subscribers/import", json={"subscribers": batch}, headers={"Idempotency-Key": "sync-1"})
        assert answer.status_code == 200, answer.text
        result = answer.json()
        assert result["counts"] == {"added": 2, "activated": 0, "updated": 0, "unchanged": 1, "refused": 6}
        assert result["confirmations_queued"] == 1
        outcomes = [(i["index"], i["action"], i["email"]) for i in result["items"]]
        assert outcomes == [
            (0, "added", "new@example.org"), (1, "refused", None), (2, "refused", None), (3, "refused", None),
            (4, "unchanged", "old@example.org"), (5, "refused", None), (6, "refused", None), (7, "refused", None),
            (8, "added", "quiet@example.org"),
        ]  # fmt: skip
        reasons = {i["index"]: i["reason"] for i in result["items"] if i["action"] == "refused"}
        assert "unknown theme 'nope'" in reasons[1] and "the same address as item 0" in reasons[2]
        assert "not an object" in reasons[3] and "unsubscribed" in reasons[5] and "suppressed" in reasons[6]
        assert "unknown field 'colour'" in reasons[7]
        assert api.post("/subscribers/import", json={"subscribers": batch},
                        headers={"Idempotency-Key": "sync-1"}).json() == result  # fmt: skip
        nora = api.get("/subscribers/new@example.org").json()
        assert (nora["status"], nora["name"], nora["themes"], nora["reads"]) == (
            "pending",
            "Nora",
            ["resilience"],
            ["es"],
        )
        assert api.get("/subscribers/quiet@example.org").json()["status"] == "unsubscribed"
        drain_notices(site.service)
        assert len(poll(lambda: site.smtp.received_for("new@example.org"), 10, interval=0.02)) == 1
        assert site.smtp.received_for("quiet@example.org") == []
        daily = {"subscribers": [{"email": "old@example.org", "cadence": "daily"}], "update": True}
        updated = api.post("/subscribers/import", json=daily).json()
        assert updated["items"][0]["action"] == "updated" and updated["counts"]["updated"] == 1
        renewed = {"subscribers": [{"email": "left@example.org"}], "confirmed": True, "reactivate": True,
                   "reason": "asked us by phone"}  # fmt: skip
        back = api.post("/subscribers/import", json=renewed).json()
        assert back["items"][0]["action"] == "reactivated" and back["counts"]["activated"] == 1
        problem(
            api.post("/subscribers/import", json={"subscribers": [], "reactivate": True}), 409, "subscriber_refused"
        )
        exported = api.get("/subscribers/export").json()
        assert [r["email"] for r in exported] == [
            "old@example.org",
            "left@example.org",
            "new@example.org",
            "quiet@example.org",
        ]
        assert (
            exported[2]["consent_method"] == "api"
            and "API import by token crm, item 0" in exported[2]["consent_source"]
        )
        assert exported[0]["cadence"] == "daily" and exported[2]["themes"] == ["resilience"]
        again = api.post("/subscribers/import", json={"subscribers": exported}).json()
        assert again["counts"] == {"added": 0, "activated": 0, "updated": 0, "unchanged": 4, "refused": 0}
        too_many = {"subscribers": [{"email": f"s{n}@example.org"} for n in range(1001)]}
        problem(api.post("/subscribers/import", json=too_many), 413, "batch_too_large")
        problem(api.post("/subscribers/import", json=[{"email": "a@example.org"}]), 422, "invalid_input")
    reactivated = [e for e in audit_events(site.service) if e.action == "subscriber.reactivated"]
    assert [(e.actor, e.details["reason"]) for e in reactivated] == [("token:crm", "asked us by phone")]


def test_bounces_are_listed_newest_first_in_pages(site: WebSite) -> None:
    ana = add_subscriber(site.service, "ana@example.org", confirmed=True).subscriber
    bo = add_subscriber(site.service, "bo@example.org", confirmed=True).subscriber
    record_bounce(site.service, subscriber_id=ana.id, fault="mailbox", status="5.2.2", diagnostic="552 full",
                  source="dsn")  # fmt: skip
    record_bounce(site.service, subscriber_id=bo.id, fault="address", status="5.1.1", diagnostic="550 no such user",
                  source="smtp")  # fmt: skip
    record_bounce(site.service, subscriber_id=ana.id, fault="mailbox", status="4.2.2", source="dsn")
    with client(site, token(site, "subscribers")) as api:
        seen, cursor = [], None
        while True:
            answer = api.get("/bounces", params={"limit": 2, **({"cursor": cursor} if cursor else {})})
            assert answer.status_code == 200, answer.text
            seen += answer.json()["items"]
            if (cursor := answer.json()["next"]) is None:
                break
        assert [(b["email"], b["status"]) for b in seen] == [
            ("ana@example.org", "4.2.2"),
            ("bo@example.org", "5.1.1"),
            ("ana@example.org", "5.2.2"),
        ]
        assert seen[1]["fault"] == "address" and seen[1]["diagnostic"] == "550 no such user" and seen[1]["score"] > 0
        api.delete("/subscribers/bo@example.org")  # erased: their bounces go with them
        assert [b["email"] for b in api.get("/bounces").json()["items"]] == ["ana@example.org", "ana@example.org"]
        problem(api.get("/bounces", params={"cursor": "x"}), 422, "invalid_input", "cursor")
        problem(api.get("/bounces", params={"limit": 0}), 422, "invalid_input", "limit")


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
