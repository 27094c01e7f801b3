"""The outgoing queue of notices: queued with what they tell about, sent once by a drain through a real SMTP
server, retried after a 4xx with backoff until a deadline, never sent to a subscriber erased or changed since,
and shared by drains running at once without a notice going twice."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from syndication.app.notices import NoticeWorker, drain_notices, notice_counts, queue_notice
from syndication.app.service import Service, init_store
from syndication.app.subscribers import (
    add_subscriber,
    confirm,
    find_subscriber,
    queue_preferences_notice,
    rejoin,
    remove_subscriber,
    subscribe_by_form,
    unsubscribe,
)
from syndication.config import Settings, load_settings
from syndication.store import database
from syndication.store.schema import FormEmailRow, NoticeRow, SubscriberRow
from tests.smtp_server import SmtpTestServer, smtp_server
from tests.support import NOW, write_config

KEY = "notices-test-signing-key-0123456789abcdef"


class Clock:
    """A clock the test moves."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def smtp() -> Iterator[SmtpTestServer]:
    with smtp_server() as server:
        yield server


def notice_settings(tmp_path: Path, database_url: str, smtp: SmtpTestServer, extra: str = "") -> Settings:
    config = write_config(
        tmp_path,
        database_url,
        f'[smtp]\nhost = "127.0.0.1"\nport = {smtp.port}\ntimeout_seconds = 5\n'
        f'[mail]\nfrom_address = "news@example.org"\n'
        f"[delivery]\nretry_initial_seconds = 60\nretry_max_seconds = 3600\nretry_deadline_hours = 2\n{extra}",
    )
    return load_settings(config, environ={"SYNDICATION_SECRET_KEY": KEY})


@pytest.fixture
def clock() -> Clock:
    return Clock(NOW)


@pytest.fixture
def service(tmp_path: Path, database_url: str, smtp: SmtpTestServer, clock: Clock) -> Iterator[Service]:
    settings = notice_settings(tmp_path, database_url, smtp)
    init_store(settings)
    with Service.open(settings, clock) as opened:
        yield opened


def form(service: Service, address: str, **choices: object) -> str:
    values: dict[str, object] = {"name": None, "themes": [], "cadence": "weekly", "language": "en"}
    values.update(choices)
    return subscribe_by_form(service, address, source="a test", cap=3, **values)  # type: ignore[arg-type]


def link(message_text: str, kind: str) -> str:
    match = re.search(rf"https://news\.example\.org/{kind}/([A-Za-z0-9._-]+)", message_text)
    assert match, message_text
    return match.group(1)


def text_of(smtp: SmtpTestServer, address: str) -> str:
    received = smtp.received_for(address)
    assert len(received) == 1, [r.recipients for r in smtp.messages]
    body = received[0].parsed().get_body(("plain",))
    assert body is not None
    return str(body.get_content())


def statuses(service: Service) -> list[tuple[str, str, int]]:
    with database.transaction(service.engine) as session:
        rows = session.execute(select(NoticeRow.kind, NoticeRow.status, NoticeRow.attempts).order_by(NoticeRow.id))
        return [(kind, status, attempts) for kind, status, attempts in rows]


# --- Queued with the subscriber, sent once --------------------------------------------------------------------


def test_the_form_stores_and_queues_in_one_transaction_and_a_drain_sends_once(
    service: Service, smtp: SmtpTestServer
) -> None:
    assert form(service, "Zoe@Example.org", name="Zoë", language="es") == "queued confirm"
    assert smtp.messages == []  # nothing was sent by the form itself
    assert statuses(service) == [("confirm", "queued", 0)]

    report = drain_notices(service)
    assert (report.sent, report.handled) == (1, 1)
    assert drain_notices(service).handled == 0  # sent once
    assert statuses(service) == [("confirm", "sent", 1)]
    message = smtp.received_for("zoe@example.org")[0].parsed()
    assert message["Auto-Submitted"] == "auto-generated" and "Zoë" in str(message["To"])
    assert message["Message-ID"].endswith("@news.example.org>")
    body = text_of(smtp, "zoe@example.org")
    assert "Por favor" in body or "confirma" in body.lower()  # in the language they chose
    token = link(body, "subscribe/confirm")
    assert confirm(service, token).status == "active"  # the link made at send time works


def test_the_drain_keeps_the_daily_cap_and_the_form_queues_nothing_for_a_suppressed_address(
    service: Service, smtp: SmtpTestServer
) -> None:
    outcomes = [form(service, "many@example.org") for _ in range(4)]
    assert outcomes == ["queued confirm"] * 4
    form(service, "other@example.org")
    remove_subscriber(service, "gone@example.org", actor="cli:tester")
    assert form(service, "gone@example.org").startswith("not sent:")
    report = drain_notices(service)
    # The same pending subscriber asked four times: three confirmations (all valid), and the fourth not sent.
    assert (report.sent, report.skipped) == (4, 1)
    assert len(smtp.received_for("many@example.org")) == 3 and len(smtp.received_for("other@example.org")) == 1
    assert smtp.received_for("gone@example.org") == []
    with database.transaction(service.engine) as session:
        assert session.scalar(select(func.count()).select_from(SubscriberRow)) == 2
        assert sorted(row.count for row in session.scalars(select(FormEmailRow))) == [1, 3]
        reasons = list(session.scalars(select(NoticeRow.last_error).where(NoticeRow.status == "failed")))
    assert reasons == ["skipped: the address had its 3 emails from the subscribe form today"]


def test_someone_who_left_is_sent_a_rejoin_link_and_a_complaint_nothing(service: Service, smtp: SmtpTestServer) -> None:
    ana = add_subscriber(service, "ana@example.org", cadence="daily", confirmed=True).subscriber
    unsubscribe(service, ana.id)
    assert form(service, "ana@example.org") == "queued rejoin"
    assert drain_notices(service).sent == 1
    token = link(text_of(smtp, "ana@example.org"), "subscribe/rejoin")
    assert rejoin(service, token).status == "active"


def test_a_preferences_notice_is_rendered_when_sent_in_the_readers_language(
    service: Service, smtp: SmtpTestServer
) -> None:
    kim = add_subscriber(
        service, "kim@example.org", language="es", cadence="monthly", themes=["circular-economy", "resilience"],
        confirmed=True,
    ).subscriber  # fmt: skip
    # Queued with the English line the preferences page writes: the drain words it anew, in Spanish, from what
    # kim receives now (these fixture themes have no Spanish names: shown by their site-language names).
    queue_preferences_notice(service, kim, "A monthly digest in Español: Resilience, Circular economy.")
    assert drain_notices(service).sent == 1
    body = text_of(smtp, "kim@example.org")
    assert "Un resumen mensual en español: Resilience y Circular economy." in body
    assert "A monthly digest" not in body and "https://news.example.org/preferences/" in body


# --- Not sent to whom it no longer concerns ---------------------------------------------------------------------


def test_an_erased_subscribers_notice_is_dropped(service: Service, smtp: SmtpTestServer) -> None:
    form(service, "erased@example.org")
    remove_subscriber(service, "erased@example.org", actor="cli:tester")
    assert notice_counts(service) == {}  # gone with the subscriber
    assert drain_notices(service).handled == 0
    assert smtp.messages == []


def test_a_confirmation_is_not_sent_to_someone_confirmed_or_gone_since(service: Service, smtp: SmtpTestServer) -> None:
    form(service, "quick@example.org")
    form(service, "left@example.org")
    add_subscriber(service, "quick@example.org", confirmed=True)  # confirmed meanwhile (by an earlier link)
    left = find_subscriber(service, "left@example.org")
    assert left is not None
    unsubscribe(service, left.id)
    report = drain_notices(service)
    assert (report.sent, report.skipped) == (0, 2)
    assert smtp.messages == []
    assert [status for _, status, _ in statuses(service)] == ["failed", "failed"]
    with database.transaction(service.engine) as session:
        reasons = sorted(session.scalars(select(NoticeRow.last_error)))
    assert reasons == [
        "skipped: the subscriber is active now, not pending",
        "skipped: the subscriber is unsubscribed now, not pending",
    ]


# --- Retries ------------------------------------------------------------------------------------------------


def test_a_4xx_is_retried_later_with_backoff_then_sent(service: Service, smtp: SmtpTestServer, clock: Clock) -> None:
    smtp.behaviour.defer = {"slow@example.org": 2}
    form(service, "slow@example.org")
    form(service, "fine@example.org")
    first = drain_notices(service)
    assert (first.sent, first.deferred) == (1, 1)
    assert drain_notices(service).handled == 0  # not due yet
    clock.now += timedelta(seconds=61)
    assert drain_notices(service).deferred == 1  # the second refusal: the wait doubles
    clock.now += timedelta(seconds=61)
    assert drain_notices(service).handled == 0
    clock.now += timedelta(seconds=60)
    assert drain_notices(service).sent == 1
    assert len(smtp.received_for("slow@example.org")) == 1
    assert ("confirm", "sent", 3) in statuses(service)


def test_a_notice_still_refused_at_the_deadline_fails_and_a_5xx_fails_at_once(
    service: Service, smtp: SmtpTestServer, clock: Clock
) -> None:
    smtp.behaviour.defer = {"full@example.org": 1000}
    smtp.behaviour.reject = ["nobody@example.org"]
    form(service, "full@example.org")
    form(service, "nobody@example.org")
    report = drain_notices(service)
    assert (report.deferred, report.failed) == (1, 1)
    for _ in range(10):
        clock.now += timedelta(hours=1)
        drain_notices(service)
    with database.transaction(service.engine) as session:
        rows = {row.address: row for row in session.scalars(select(NoticeRow))}
    assert rows["full@example.org"].status == "failed"
    assert rows["full@example.org"].last_error.startswith("gave up after the deadline: 451")
    assert rows["nobody@example.org"].status == "failed"
    assert rows["nobody@example.org"].last_error.startswith("refused: 550")
    assert smtp.messages == []


def test_a_lease_that_ran_out_returns_the_notice_to_the_queue(
    service: Service, smtp: SmtpTestServer, clock: Clock
) -> None:
    from syndication.store import notices as store

    form(service, "held@example.org")
    with database.transaction(service.engine) as session:
        assert len(store.claim(session, "a drain that died", clock(), lease=timedelta(seconds=300), limit=10)) == 1
    assert drain_notices(service).handled == 0  # held
    clock.now += timedelta(seconds=301)
    assert drain_notices(service).sent == 1
    assert len(smtp.received_for("held@example.org")) == 1


# --- Drains at once -----------------------------------------------------------------------------------------


def test_two_drains_at_once_send_each_notice_once(service: Service, smtp: SmtpTestServer) -> None:
    addresses = [f"reader{number}@example.org" for number in range(60)]
    for address in addresses:
        form(service, address)
    start = threading.Barrier(2)
    reports = []

    def run(owner: str) -> None:
        start.wait()
        reports.append(drain_notices(service, owner=owner))

    threads = [threading.Thread(target=run, args=(f"drain-{n}",)) for n in (1, 2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sum(report.sent for report in reports) == 60
    assert sum(report.lost_leases for report in reports) == 0
    sent = sorted(r for message in smtp.messages for r in message.recipients)
    assert sent == sorted(addresses)


def test_the_web_worker_drains_when_woken_and_stops(service: Service, smtp: SmtpTestServer) -> None:
    worker = NoticeWorker(lambda: service, lambda: False, poll_seconds=60)
    worker.start()
    try:
        queue_notice(service, "confirm", form_subscriber(service, "woken@example.org"), "woken@example.org")
        worker.wake()
        assert smtp.wait_for(1, timeout=10)
    finally:
        worker.stop()
    assert smtp.received_for("woken@example.org")


def form_subscriber(service: Service, address: str) -> int:
    return add_subscriber(service, address, confirmed=True).subscriber.id
