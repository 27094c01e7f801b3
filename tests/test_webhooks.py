"""Outgoing webhooks (issue 21), on SQLite and PostgreSQL (``database_url``), posted to a real HTTP receiver on
127.0.0.1: each event type, raised by the real use cases, arrives signed as the Standard Webhooks convention says
(checked here by an implementation of our own, hmac and base64); a receiver that fails twice gets the event again
after each backoff, with the same ``webhook-id``; loopback is refused unless allowed; the CLI shows a secret once."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from syndication.app.bounces import process_message, record_bounce
from syndication.app.editions import change_edition, deliver, plan_edition
from syndication.app.gathering import import_file
from syndication.app.maintenance import prune
from syndication.app.service import Service
from syndication.app.subscribers import add_subscriber, unsubscribe
from syndication.app.webhooks import (
    WebhookError,
    add_endpoint,
    deliver_webhooks,
    endpoint_attempts,
    list_endpoints,
)
from syndication.cli import main
from syndication.cli.webhooks import EVENTS_HELP
from syndication.core.bounces import Fault
from syndication.core.editions import EditionAction
from syndication.core.webhooks import EVENT_TYPES
from syndication.store import database
from syndication.store import webhooks as webhook_store
from syndication.store.schema import WebhookEventRow
from tests.smtp_server import smtp_server
from tests.support import NOW, post_record, write_jsonl
from tests.test_bounces import complaint
from tests.test_delivery import SINCE, UNTIL, sending


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> dict[str, Any]:
        return json.loads(self.body)  # type: ignore[no-any-return]


@dataclass
class Receiver:
    """An HTTP server on 127.0.0.1 that keeps every request and answers each with the next status of ``answers``
    (then 200)."""

    answers: list[int] = field(default_factory=list)
    received: list[Received] = field(default_factory=list)
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("content-length", "0"))
            state.received.append(Received({k.lower(): v for k, v in self.headers.items()}, self.rfile.read(length)))
            status = state.answers.pop(0) if state.answers else 200
            self.send_response(status)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *_args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def hooked(service: Service, clock: Clock, *, allow_private: bool = True, server: Any = None) -> Service:
    """The service at ``clock``, allowed to post to loopback (the receiver), and sending through ``server``."""
    base = sending(service, server) if server is not None else service
    hooks = base.settings.webhooks.model_copy(update={"allow_private": allow_private, "timeout_seconds": 5.0})
    return Service(base.settings.model_copy(update={"webhooks": hooks}), base.engine, clock)


def verify(secret: str, received: Received) -> None:
    """The Standard Webhooks check, written apart from the service: base64 of HMAC-SHA256 keyed with the secret's
    decoded bytes over "id.timestamp.body", one of the space-separated "v1,<signature>"."""
    assert secret.startswith("whsec_")
    key = base64.b64decode(secret.removeprefix("whsec_"))
    message_id, timestamp = received.headers["webhook-id"], received.headers["webhook-timestamp"]
    signed = message_id.encode() + b"." + timestamp.encode() + b"." + received.body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    versions = [part.split(",", 1) for part in received.headers["webhook-signature"].split(" ")]
    assert any(v == "v1" and hmac.compare_digest(s, expected) for v, s in versions), received.headers
    assert received.headers["content-type"] == "application/json"


def test_each_event_reaches_the_receiver_signed(service: Service, receiver: Receiver, tmp_path: Path) -> None:
    clock = Clock(NOW)
    with smtp_server() as smtp:
        hooks = hooked(service, clock, server=smtp)
        endpoint, secret = add_endpoint(hooks, receiver.url, EVENT_TYPES, actor="cli:test")
        assert secret is not None
        # post.published: an import that adds a post (and one dated in the future, not announced yet).
        records = [
            post_record(1, themes=["climate-action"], published="2024-05-28T10:00:00Z", title="Karachi heat plan"),
            post_record(2, published="2024-07-01T10:00:00Z", title="Not yet"),
        ]
        import_file(hooks, write_jsonl(tmp_path / "posts.jsonl", records))
        import_file(hooks, write_jsonl(tmp_path / "again.jsonl", records[:1]))  # seen before: nothing new
        # subscriber.confirmed, .unsubscribed, .bounced, .complained
        ana = add_subscriber(hooks, "ana@example.org", themes=[], cadence="weekly", confirmed=True).subscriber
        bo = add_subscriber(hooks, "bo@example.org", themes=[], cadence="weekly", confirmed=True).subscriber
        cy = add_subscriber(hooks, "cy@example.org", themes=[], cadence="weekly", confirmed=True).subscriber
        add_subscriber(hooks, "dee@example.org", themes=[], cadence="weekly", confirmed=True)
        unsubscribe(hooks, bo.id)
        record_bounce(hooks, subscriber_id=cy.id, fault=Fault.ADDRESS, status="5.1.1", source="smtp")
        assert process_message(hooks, complaint("dee@example.org", to="bounces@news.example.org")).kind == "complaint"
        # edition.approved (a draft approved by an editor), then edition.sent once it went to Ana.
        plan = plan_edition(hooks, "weekly", SINCE, UNTIL, draft=True)
        assert plan.edition is not None and plan.queued == 1
        change_edition(hooks, plan.edition.id, EditionAction.APPROVE, actor="editor:eve")
        assert deliver(hooks).sent == 1 and smtp.accepted == 1

        report = deliver_webhooks(hooks)

    assert (report.delivered, report.retrying, report.failed) == (10, 0, 0)
    # In the order they happened (all at NOW: the outbox keeps their order).
    assert [r.json["type"] for r in receiver.received] == [
        "post.published",
        *["subscriber.confirmed"] * 4,
        "subscriber.unsubscribed",
        "subscriber.bounced",
        "subscriber.complained",
        "edition.approved",
        "edition.sent",
    ]
    by_type: dict[str, list[dict[str, Any]]] = {}
    for r in receiver.received:
        verify(secret, r)
        assert r.headers["webhook-timestamp"] == str(int(NOW.timestamp()))
        assert r.json["timestamp"] == "2024-06-01T12:00:00Z"
        by_type.setdefault(r.json["type"], []).append(r.json["data"])
    assert {t: len(v) for t, v in by_type.items()} == {
        "post.published": 1,
        "subscriber.confirmed": 4,
        "subscriber.unsubscribed": 1,
        "subscriber.bounced": 1,
        "subscriber.complained": 1,
        "edition.approved": 1,
        "edition.sent": 1,
    }
    assert len(receiver.received) == 10  # every message once: ids all different
    assert len({r.headers["webhook-id"] for r in receiver.received}) == 10
    assert by_type["post.published"][0]["title"] == "Karachi heat plan"
    assert by_type["post.published"][0]["url"] == "https://news.example.org/posts/1"
    assert sorted(d["email"] for d in by_type["subscriber.confirmed"]) == [
        "ana@example.org", "bo@example.org", "cy@example.org", "dee@example.org",
    ]  # fmt: skip
    assert by_type["subscriber.unsubscribed"][0] == {**by_type["subscriber.unsubscribed"][0], "id": bo.id,
                                                      "status": "unsubscribed"}  # fmt: skip
    assert (by_type["subscriber.bounced"][0]["email"], by_type["subscriber.bounced"][0]["status"]) == (
        "cy@example.org", "bounced")  # fmt: skip
    assert (by_type["subscriber.complained"][0]["email"], by_type["subscriber.complained"][0]["status"]) == (
        "dee@example.org", "complained")  # fmt: skip
    approved, sent = by_type["edition.approved"][0], by_type["edition.sent"][0]
    assert (approved["id"], approved["status"], approved["cadence"]) == (plan.edition.id, "sending", "weekly")
    assert (sent["id"], sent["status"], sent["deliveries"]) == (plan.edition.id, "sent", {"sent": 1})
    assert ana.id in {d["id"] for d in by_type["subscriber.confirmed"]}
    # The owner's view: all delivered, each attempt recorded.
    (view,) = list_endpoints(hooks)
    assert view.endpoint.id == endpoint.id and view.deliveries == {"sent": 10}
    _, attempts = endpoint_attempts(hooks, endpoint.id)
    assert len(attempts) == 10 and all(a.delivered and a.status_code == 200 for a in attempts)
    assert deliver_webhooks(hooks).handled == 0  # nothing twice


def test_a_failing_receiver_gets_the_same_message_again_after_each_backoff(
    service: Service, receiver: Receiver
) -> None:
    clock = Clock(NOW)
    hooks = hooked(service, clock)
    _, secret = add_endpoint(hooks, receiver.url, ["subscriber.confirmed"], actor="cli:test")
    assert secret is not None
    receiver.answers = [500, 503]
    add_subscriber(hooks, "ana@example.org", confirmed=True)

    first = deliver_webhooks(hooks)
    assert (first.delivered, first.retrying) == (0, 1) and "HTTP 500" in first.errors[0]
    assert deliver_webhooks(hooks).handled == 0 and len(receiver.received) == 1  # not before its backoff
    clock.now += timedelta(seconds=29)
    assert deliver_webhooks(hooks).handled == 0 and len(receiver.received) == 1
    clock.now += timedelta(seconds=1)  # 30 s after the first failure
    assert deliver_webhooks(hooks).retrying == 1 and len(receiver.received) == 2
    clock.now += timedelta(seconds=119)
    assert deliver_webhooks(hooks).handled == 0
    clock.now += timedelta(seconds=1)  # 2 min after the second
    assert deliver_webhooks(hooks).delivered == 1
    assert deliver_webhooks(hooks).handled == 0

    assert len(receiver.received) == 3
    assert len({r.headers["webhook-id"] for r in receiver.received}) == 1  # the same id every time
    assert [r.body for r in receiver.received] == [receiver.received[0].body] * 3  # the same body
    stamps = [int(r.headers["webhook-timestamp"]) for r in receiver.received]
    assert stamps == [int(NOW.timestamp()), int(NOW.timestamp()) + 30, int(NOW.timestamp()) + 150]
    for r in receiver.received:
        verify(secret, r)  # signed afresh for each attempt's timestamp
    _, attempts = endpoint_attempts(hooks, 1)
    assert [(a.attempt, a.status_code, a.delivered) for a in attempts] == [(3, 200, True), (2, 503, False),
                                                                           (1, 500, False)]  # fmt: skip


def test_a_receiver_that_never_answers_2xx_is_given_up_after_max_attempts(service: Service, receiver: Receiver) -> None:
    clock = Clock(NOW)
    hooks = hooked(service, clock)
    hooks = Service(hooks.settings.model_copy(update={"webhooks": hooks.settings.webhooks.model_copy(
        update={"max_attempts": 2})}), hooks.engine, clock)  # fmt: skip
    add_endpoint(hooks, receiver.url, ["subscriber.confirmed"], actor="cli:test")
    receiver.answers = [500, 500, 500]
    add_subscriber(hooks, "ana@example.org", confirmed=True)
    assert deliver_webhooks(hooks).retrying == 1
    clock.now += timedelta(hours=1)
    assert deliver_webhooks(hooks).failed == 1
    clock.now += timedelta(days=1)
    assert deliver_webhooks(hooks).handled == 0 and len(receiver.received) == 2
    assert list_endpoints(hooks)[0].deliveries == {"failed": 1}


def test_loopback_is_refused_unless_allowed(service: Service, receiver: Receiver) -> None:
    clock = Clock(NOW)
    strict = hooked(service, clock, allow_private=False)
    for url in (receiver.url, "http://localhost:9/x", "http://[::1]/x", "http://10.1.2.3/x", "http://169.254.169.254/"):
        with pytest.raises(WebhookError, match=r"refused: .* is a (loopback|private|link-local)"):
            add_endpoint(strict, url, ["subscriber.confirmed"], actor="cli:test")
    assert list_endpoints(strict) == []
    # Registered while allowed; then [webhooks] allow_private is turned off: the delivery is refused, naming why,
    # and given up at once, and the receiver gets nothing.
    add_endpoint(hooked(service, clock), receiver.url, ["subscriber.confirmed"], actor="cli:test")
    add_subscriber(strict, "ana@example.org", confirmed=True)
    report = deliver_webhooks(strict)
    assert (report.delivered, report.failed) == (0, 1)
    assert "127.0.0.1 is a loopback address" in report.errors[0] and "allow_private" in report.errors[0]
    assert receiver.received == []
    _, attempts = endpoint_attempts(strict, 1)
    assert "loopback" in attempts[0].error and attempts[0].status_code is None


def test_no_event_is_written_without_an_endpoint_that_wants_it(service: Service, receiver: Receiver) -> None:
    hooks = hooked(service, Clock(NOW))
    add_endpoint(hooks, receiver.url, ["edition.sent"], actor="cli:test")
    add_subscriber(hooks, "ana@example.org", confirmed=True)
    with database.transaction(service.engine) as session:
        assert session.scalar(select(func.count()).select_from(WebhookEventRow)) == 0


def test_a_runner_that_lost_its_claim_records_nothing(service: Service, receiver: Receiver) -> None:
    hooks = hooked(service, Clock(NOW))
    add_endpoint(hooks, receiver.url, ["subscriber.confirmed"], actor="cli:test")
    add_subscriber(hooks, "ana@example.org", confirmed=True)
    lease = timedelta(seconds=60)
    with database.transaction(service.engine) as session:
        (first,) = webhook_store.claim(session, NOW, lease=lease, limit=10)
    with database.transaction(service.engine) as session:
        assert webhook_store.claim(session, NOW + timedelta(seconds=30), lease=lease, limit=10) == []  # still held
    with database.transaction(service.engine) as session:
        (second,) = webhook_store.claim(session, NOW + timedelta(seconds=61), lease=lease, limit=10)
    assert second.event_id == first.event_id and second.token == first.token + 1
    with database.transaction(service.engine) as session:
        late = NOW + timedelta(seconds=62)
        assert not webhook_store.finish(session, first, late, status_code=200, error="", delivered=True, retry_at=None)
        assert webhook_store.finish(session, second, late, status_code=200, error="", delivered=True, retry_at=None)


def test_the_cli_prints_the_secret_once_and_lists_it_masked(
    service: Service, receiver: Receiver, capsys: pytest.CaptureFixture[str]
) -> None:
    assert service.settings.config_path is not None
    config = service.settings.config_path
    config.write_text(config.read_text("utf-8") + "\n[webhooks]\nallow_private = true\n", "utf-8")
    events = ["--events", "post.published,edition.sent"]
    assert main(["--config", str(config), "webhooks", "add", receiver.url, *events]) == 0
    out = capsys.readouterr().out
    secret = out.strip()
    assert secret.startswith("whsec_") and len(base64.b64decode(secret[6:])) == 32 and out.count(secret) == 1
    assert main(["--config", str(config), "webhooks", "list"]) == 0
    listed = capsys.readouterr().out
    assert secret not in listed and f"whsec_…{secret[-4:]}" in listed and "edition.sent,post.published" in listed
    assert main(["--config", str(config), "webhooks", "list", "--json"]) == 0
    (entry,) = json.loads(capsys.readouterr().out)
    assert entry["secret"] == f"whsec_…{secret[-4:]}" and entry["events"] == ["edition.sent", "post.published"]
    # A secret of the owner's own, from a file: used to sign, never printed.
    own = "whsec_" + base64.b64encode(b"k" * 24).decode()
    secret_file = config.parent / "secret"
    secret_file.write_text(own + "\n", "utf-8")
    assert main(["--config", str(config), "webhooks", "add", receiver.url, "--events", "post.published",
                 "--secret-file", str(secret_file)]) == 0  # fmt: skip
    assert own not in capsys.readouterr().out
    assert main(["--config", str(config), "webhooks", "add", receiver.url, "--events", "post.deleted"]) == 1
    assert "unknown event 'post.deleted'" in capsys.readouterr().err
    assert main(["--config", str(config), "webhooks", "remove", "1"]) == 0
    assert main(["--config", str(config), "webhooks", "remove", "1"]) == 1
    capsys.readouterr()
    assert main(["--config", str(config), "webhooks", "list", "--json"]) == 0
    assert [e["id"] for e in json.loads(capsys.readouterr().out)] == [2]


def test_the_help_names_every_event_type() -> None:
    assert EVENTS_HELP.split(", ") == list(EVENT_TYPES)


def test_the_scheduler_job_posts_what_is_due(service: Service, receiver: Receiver) -> None:
    from syndication.scheduling.runner import Runner

    clock = Clock(NOW)
    hooks = hooked(service, clock)
    add_endpoint(hooks, receiver.url, ["subscriber.confirmed"], actor="cli:test")
    add_subscriber(hooks, "ana@example.org", confirmed=True)
    runner = Runner(hooks.settings, clock=clock, name="test-webhooks")
    try:
        runner.webhooks()  # the job `run` schedules every [webhooks] interval_seconds
    finally:
        runner.shutdown()
    assert [r.json["type"] for r in receiver.received] == ["subscriber.confirmed"]
    assert list_endpoints(hooks)[0].deliveries == {"sent": 1}


def test_prune_removes_events_that_are_over_and_keeps_those_still_retried(service: Service, receiver: Receiver) -> None:
    clock = Clock(NOW)
    hooks = hooked(service, clock)
    add_endpoint(hooks, receiver.url, ["subscriber.confirmed"], actor="cli:test")
    receiver.answers = [200, 500]
    add_subscriber(hooks, "ana@example.org", confirmed=True)  # delivered at once
    add_subscriber(hooks, "bo@example.org", confirmed=True)  # refused: retried later
    report = deliver_webhooks(hooks)
    assert (report.delivered, report.retrying) == (1, 1)
    clock.now += timedelta(days=hooks.settings.retention.webhooks_days + 1)
    later = Service(hooks.settings, hooks.engine, lambda: clock.now + timedelta(days=365))  # bo's retry not run

    dry = prune(later, dry_run=True)
    assert (dry.webhook_events, dry.webhook_deliveries, dry.webhook_attempts) == (1, 1, 1)
    with database.transaction(service.engine) as session:
        assert session.scalar(select(func.count()).select_from(WebhookEventRow)) == 2  # a dry run removes nothing
    done = prune(later)
    assert (done.webhook_events, done.webhook_deliveries, done.webhook_attempts) == (1, 1, 1)
    with database.transaction(service.engine) as session:
        (left,) = session.scalars(select(WebhookEventRow.body))
    assert "bo@example.org" in left  # the one still to retry stays whole, and is delivered when its time comes
    assert deliver_webhooks(later).delivered == 1
