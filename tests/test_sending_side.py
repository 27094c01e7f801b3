"""Issue #15: a refusal that is not about the recipient marks nobody.

Against a real SMTP server scripted per stage (tests/smtp_server.py), on SQLite and PostgreSQL: a refusal of the
sender, of the content, of relaying, of our credentials, or the relay's own trouble pauses the edition with the
reason (shown by ``editions list``, ``status`` and the editor's pages), ``digest send`` exits 1 naming it, the
editors are told, every subscriber stays active, and resuming sends everything once. A refusal about a recipient
is a hard bounce (their address) or a soft one (their mailbox); and the breaker pauses an edition whose relay
refuses nearly everyone with the same reply, marking nobody.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from syndication.app.editions import MessageBuilder, change_edition, deliver, edition_report, open_sender, plan_edition
from syndication.app.gathering import import_file
from syndication.app.service import Service
from syndication.app.subscribers import add_subscriber
from syndication.cli import main
from syndication.clock import fixed_clock
from syndication.core.editions import EditionAction
from syndication.core.models import DeliveryStatus, EditionStatus
from syndication.delivery.sender import BREAKER_WINDOW, Bounce
from syndication.store import database, ledger
from syndication.store import subscribers as subscriber_store
from tests.smtp_server import SmtpTestServer, smtp_server
from tests.support import NOW, post_record, wait_for, write_jsonl
from tests.test_web_editor import sign_in
from tests.web_site import form_post, web_site

SINCE, UNTIL = NOW - timedelta(days=7), NOW
WINDOW = ["--since", SINCE.isoformat(), "--until", UNTIL.isoformat()]
SIX = [f"reader{number}@example.org" for number in range(1, 7)]
EDITOR = "ed@example.org"
RELAY_USER, RELAY_PASSWORD = "relay-user", "s3cret"


def add_readers(service: Service, addresses: list[str]) -> None:
    for address in addresses:
        add_subscriber(service, address, cadence="weekly", confirmed=True)


@pytest.fixture
def posts(service: Service, tmp_path: Path) -> Service:
    """The store with two posts in the week before NOW."""
    records = [
        post_record(1, themes=["climate-action"], published="2024-05-28T10:00:00Z", title="Karachi heat plan"),
        post_record(2, themes=["resilience"], published="2024-05-29T10:00:00Z", title="Sponge cities"),
    ]
    import_file(service, write_jsonl(tmp_path / "posts.jsonl", records))
    return service


@pytest.fixture
def readers(posts: Service) -> Service:
    """Six active weekly subscribers of everything, as in the issue."""
    add_readers(posts, SIX)
    return posts


def sending(service: Service, server: SmtpTestServer, clock: datetime = NOW, **delivery: Any) -> Service:
    """The service pointed at ``server``, with a signing key and an editor to tell, at ``clock``."""
    settings = service.settings.model_copy(
        update={
            "secret_key": SecretStr("test-signing-key-" + "x" * 16),
            "smtp": server.settings(timeout_seconds=2.0),
            "delivery": service.settings.delivery.model_copy(update={"retry_initial_seconds": 60, **delivery}),
            "bounces": service.settings.bounces.model_copy(update={"address": "bounces@news.example.org"}),
            "digest": service.settings.digest.model_copy(update={"approval_emails": (EDITOR,)}),
        }
    )
    return Service(settings, service.engine, fixed_clock(clock))


def statuses(service: Service, addresses: list[str]) -> dict[str, str]:
    with database.transaction(service.engine) as session:
        found = {address: subscriber_store.subscriber_by_email(session, address) for address in addresses}
    return {address: subscriber.status if subscriber else "gone" for address, subscriber in found.items()}


def received_once_each(server: SmtpTestServer, addresses: list[str]) -> bool:
    return sorted(r for message in server.messages for r in message.recipients if r != EDITOR) == sorted(addresses)


# --- The command line, per stage ------------------------------------------------------------------------------


@pytest.fixture
def cli_config(readers: Service, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The readers' configuration file with an editor to tell; the SMTP server is added by each test."""
    monkeypatch.setenv("SYNDICATION_SECRET_KEY", "cli-signing-key-" + "y" * 16)
    assert readers.settings.config_path is not None
    return readers.settings.config_path


def with_server(config: Path, server: SmtpTestServer, auth: bool = False) -> Path:
    text = config.read_text("utf-8")
    text += f'\n[smtp]\nhost = "127.0.0.1"\nport = {server.port}\ntimeout_seconds = 5\n'
    if auth:
        text += f'username = "{RELAY_USER}"\n'
    text += f'\n[digest]\napproval_emails = ["{EDITOR}"]\n'
    written = config.with_name("sending.toml")
    written.write_text(text, "utf-8")
    return written


SENDING_SIDE = [
    pytest.param(
        {"MAIL": "550 5.7.1 Sender address rejected"},
        "MAIL FROM refused by {where}: 550 5.7.1 Sender address rejected",
        id="sender-refused-at-MAIL-FROM",
    ),
    pytest.param(
        {"DATA": "554 5.7.1 Message refused by policy"},
        "DATA refused by {where}: 554 5.7.1 Message refused by policy",
        id="content-refused-at-DATA",
    ),
    pytest.param(
        {"MESSAGE": "500 Error: No space left on device"},
        "the message was refused by {where}: 500 Error: No space left on device",
        id="relay-disk-full",
    ),
    pytest.param(
        {"RCPT": {"*": "554 5.7.1 Relay access denied"}},
        "RCPT TO refused by {where}: 554 5.7.1 Relay access denied",
        id="relaying-denied-at-RCPT",
    ),
    pytest.param(
        None,
        "AUTH refused by {where} for user 'relay-user': 535 5.7.8 Authentication credentials invalid",
        id="auth-failure",
    ),
]


@pytest.mark.parametrize(("reply_at", "reason"), SENDING_SIDE)
def test_a_sending_side_refusal_pauses_the_edition_marks_nobody_and_resuming_sends_everything_once(
    cli_config: Path,
    reply_at: dict[str, Any] | None,
    reason: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    readers: Service,
) -> None:
    auth = reply_at is None
    behaviour: dict[str, Any] = {"auth": (RELAY_USER, RELAY_PASSWORD)} if auth else {"reply_at": reply_at}
    if auth:
        monkeypatch.setenv("SYNDICATION_SMTP_PASSWORD", "not-the-password")
    with smtp_server(**behaviour) as server:
        config = with_server(cli_config, server, auth=auth)
        expected = reason.format(where=f"127.0.0.1:{server.port}")
        capsys.readouterr()

        assert main(["--config", str(config), "digest", "send", "--cadence", "weekly", *WINDOW]) == 1
        out, err = capsys.readouterr()
        assert "6 deliveries queued" in out and "0 sent" in out and "0 bounced" in out, out
        errors = [line for line in err.splitlines() if line.startswith("syndication: error:")]
        assert errors == [
            f"syndication: error: edition 1 paused, no subscriber marked: {expected}"
            " (resume it with 'syndication editions resume 1' once this is mended)"
        ], err
        assert "not-the-password" not in out + err

        assert statuses(readers, SIX) == dict.fromkeys(SIX, "active")
        report = edition_report(readers, 1, with_problems=True)
        assert (report.edition.status, report.edition.reason) == (EditionStatus.PAUSED, expected)
        assert report.deliveries == {DeliveryStatus.QUEUED: 6} and report.problems == []
        with database.transaction(readers.engine) as session:
            attempts = sum(d.attempts for d in ledger.problems(session, 1))
        assert attempts == 0  # nothing spent: every delivery is as it was queued
        assert server.messages == []

        assert main(["--config", str(config), "editions", "list"]) == 0
        [listed] = [line for line in capsys.readouterr().out.splitlines() if line.strip().startswith("1 ")]
        assert "paused" in listed and "6 queued" in listed and listed.endswith(f"({expected})"), listed
        assert main(["--config", str(config), "status"]) == 0
        shown = capsys.readouterr().out
        assert f"    paused: {expected}\n" in shown, shown

        # Another run while it is paused sends nothing and pauses nothing again.
        assert main(["--config", str(config), "deliver"]) == 0
        assert "0 sent" in capsys.readouterr().out

        # The relay is mended: resume, then deliver.
        if auth:
            monkeypatch.setenv("SYNDICATION_SMTP_PASSWORD", RELAY_PASSWORD)
        server.behaviour.reply_at = {}
        server.reset()
        assert main(["--config", str(config), "editions", "resume", "1"]) == 0
        assert "edition 1: paused -> sending" in capsys.readouterr().out
        assert main(["--config", str(config), "deliver"]) == 0
        assert "6 sent" in capsys.readouterr().out
        assert received_once_each(server, SIX)
        assert main(["--config", str(config), "deliver"]) == 0  # nothing twice
        assert received_once_each(server, SIX)
    report = edition_report(readers, 1)
    assert (report.edition.status, report.edition.reason) == (EditionStatus.SENT, "")
    assert report.deliveries == {DeliveryStatus.SENT: 6}
    assert statuses(readers, SIX) == dict.fromkeys(SIX, "active")


def test_the_editors_are_told_when_an_edition_is_paused(readers: Service, caplog: pytest.LogCaptureFixture) -> None:
    # The relay refuses to relay to the readers' domain, not to the editor's: the notice gets through.
    with smtp_server(reply_at={"RCPT": dict.fromkeys(SIX, "554 5.7.1 Relay access denied")}) as server:
        service = sending(readers, server)
        plan = plan_edition(service, "weekly", SINCE, UNTIL)
        assert plan.edition is not None
        with caplog.at_level("ERROR", logger="syndication.app.editions"):
            report = deliver(service)
        reason = f"RCPT TO refused by 127.0.0.1:{server.port}: 554 5.7.1 Relay access denied"
        assert report.paused_editions == {plan.edition.id: reason}
        assert (report.sent, report.bounced, report.failed) == (0, 0, 0)
        assert any(reason in record.getMessage() for record in caplog.records)
        [notice] = server.received_for(EDITOR)
    parsed = notice.parsed()
    assert parsed["Subject"] == "The weekly digest is paused: Test Network"
    assert parsed["Auto-Submitted"] == "auto-generated"
    text = parsed.get_body(("plain",))
    assert text is not None
    body = str(text.get_content())
    assert reason in body and f"syndication editions resume {plan.edition.id}" in body
    assert f"/editor/editions/{plan.edition.id}" in body
    assert statuses(readers, SIX) == dict.fromkeys(SIX, "active")


def test_an_editor_who_cannot_be_told_is_logged_not_raised(readers: Service, caplog: pytest.LogCaptureFixture) -> None:
    with smtp_server(reply_at={"MAIL": "550 5.7.1 Sender address rejected"}) as server:
        service = sending(readers, server)
        plan_edition(service, "weekly", SINCE, UNTIL)
        with caplog.at_level("ERROR", logger="syndication.app.editions"):
            report = deliver(service)
        assert list(report.paused_editions) == [1]
        assert any("could not email an editor" in record.getMessage() for record in caplog.records)
        assert server.messages == []


def test_a_configuration_the_relay_contradicts_pauses_the_edition_instead_of_stopping_the_run(
    readers: Service,
) -> None:
    with smtp_server() as server:  # it offers no STARTTLS
        service = sending(readers, server)
        settings = service.settings.model_copy(
            update={"smtp": service.settings.smtp.model_copy(update={"security": "starttls"})}
        )
        service = Service(settings, service.engine, service.clock)
        plan_edition(service, "weekly", SINCE, UNTIL)
        report = deliver(service)
        reason = f"smtp: 127.0.0.1:{server.port} does not offer STARTTLS (smtp.security is 'starttls')"
        assert report.paused_editions == {1: reason}
        assert edition_report(readers, 1).deliveries == {DeliveryStatus.QUEUED: 6}  # no claim left leased
        assert server.messages == []
    assert statuses(readers, SIX) == dict.fromkeys(SIX, "active")


# --- Refusals about the recipient ------------------------------------------------------------------------------


def test_an_unknown_recipient_is_a_hard_bounce_and_the_others_go(readers: Service) -> None:
    unknown = SIX[1]
    with smtp_server(reply_at={"RCPT": {unknown: "550 5.1.1 User unknown"}}) as server:
        service = sending(readers, server)
        plan_edition(service, "weekly", SINCE, UNTIL)
        report = deliver(service)
        assert (report.sent, report.bounced, report.failed, report.paused_editions) == (5, 1, 0, {})
        assert received_once_each(server, [a for a in SIX if a != unknown])
    assert statuses(readers, SIX) == {a: "bounced" if a == unknown else "active" for a in SIX}
    edition = edition_report(readers, 1, with_problems=True)
    assert edition.edition.status == EditionStatus.SENT
    [problem] = edition.problems
    assert (problem.email, problem.status) == (unknown, DeliveryStatus.BOUNCED) and "5.1.1" in problem.detail


def test_a_full_mailbox_is_a_soft_bounce_that_fails_the_delivery_without_suppressing(readers: Service) -> None:
    full = SIX[2]
    with smtp_server(reply_at={"RCPT": {full: "552 5.2.2 Mailbox full"}}) as server:
        service = sending(readers, server)
        plan_edition(service, "weekly", SINCE, UNTIL)
        report = deliver(service)
        assert (report.sent, report.bounced, report.failed, report.paused_editions) == (5, 0, 1, {})
        later = deliver(sending(readers, server, NOW + timedelta(hours=1)))
        assert later.handled == 0  # failed for good: not retried
    assert statuses(readers, SIX) == dict.fromkeys(SIX, "active")
    [problem] = edition_report(readers, 1, with_problems=True).problems
    assert (problem.email, problem.status) == (full, DeliveryStatus.FAILED) and "5.2.2" in problem.detail


def drain_recording(service: Service) -> tuple[list[Bounce], Any]:
    """Drain the queue with a bounce hook that records what it is told."""
    told: list[Bounce] = []
    report = open_sender(service).drain(MessageBuilder(service).build, on_bounce=told.append)
    return told, report


def test_the_bounce_hook_is_told_whose_delivery_and_what_the_refusal_says(readers: Service) -> None:
    script = {SIX[0]: "550 5.1.1 User unknown", SIX[1]: "552 5.2.2 Mailbox full"}
    with smtp_server(reply_at={"RCPT": script}) as server:
        service = sending(readers, server)
        plan = plan_edition(service, "weekly", SINCE, UNTIL)
        assert plan.edition is not None
        told, report = drain_recording(service)
    assert report.sent == 4
    with database.transaction(readers.engine) as session:
        found = [subscriber_store.subscriber_by_email(session, a) for a in SIX[:2]]
    ids = [subscriber.id for subscriber in found if subscriber is not None]
    by_fault = {bounce.fault: bounce for bounce in told}
    assert set(by_fault) == {"address", "mailbox"} and len(told) == 2
    hard, soft = by_fault["address"], by_fault["mailbox"]
    assert (hard.subscriber_id, hard.status, hard.code) == (ids[0], "5.1.1", 550)
    assert (soft.subscriber_id, soft.status, soft.code) == (ids[1], "5.2.2", 552)
    assert {hard.edition_id, soft.edition_id} == {plan.edition.id}
    assert hard.delivery_id != soft.delivery_id
    assert "User unknown" in hard.diagnostic and "Mailbox full" in soft.diagnostic


def test_a_recipient_deferred_past_the_deadline_is_a_soft_bounce(readers: Service) -> None:
    with smtp_server(reply_at={"RCPT": {SIX[0]: "450 4.2.1 Mailbox busy, try later"}}) as server:
        service = sending(readers, server, retry_deadline_hours=0.01)  # 36 seconds: the first wait is past it
        plan_edition(service, "weekly", SINCE, UNTIL)
        told, report = drain_recording(service)
        assert (report.sent, report.failed) == (5, 1)
    assert [(bounce.fault, bounce.status) for bounce in told] == [("mailbox", "4.2.1")]
    assert statuses(readers, SIX) == dict.fromkeys(SIX, "active")


def test_a_pause_does_not_use_up_the_retry_deadline_of_what_is_resumed(readers: Service) -> None:
    # Paused for a sending-side refusal on the day the edition was made, resumed three days later (past the 48 hours
    # a deferred delivery is given): a recipient's server that says "later" is tried again later, not given up on.
    with smtp_server(reply_at={"MAIL": "550 5.7.1 Sender address rejected"}) as server:
        service = sending(readers, server)
        plan = plan_edition(service, "weekly", SINCE, UNTIL)
        assert plan.edition is not None
        assert plan.edition.id in deliver(service).paused_editions
        server.behaviour.reply_at = {"RCPT": {SIX[0]: "450 4.2.1 Mailbox busy, try later"}}
        later = sending(readers, server, NOW + timedelta(days=3))
        change_edition(later, plan.edition.id, EditionAction.RESUME, actor="cli:tester")
        report = deliver(later)
    assert (report.sent, report.deferred, report.failed) == (5, 1, 0)
    assert statuses(readers, SIX) == dict.fromkeys(SIX, "active")


def test_a_relay_down_past_the_deadline_fails_the_deliveries_and_marks_nobody(readers: Service) -> None:
    with smtp_server() as down:
        service = sending(readers, down, retry_deadline_hours=0.01)
    # Nothing listens on its port any more: every connection is refused.
    plan_edition(service, "weekly", SINCE, UNTIL)
    told, report = drain_recording(service)
    assert (report.failed, report.paused_editions, told) == (6, {}, [])
    assert statuses(readers, SIX) == dict.fromkeys(SIX, "active")


# --- The breaker -------------------------------------------------------------------------------------------------


def test_the_breaker_pauses_an_edition_whose_relay_refuses_nearly_everyone_alike(posts: Service) -> None:
    thirty = [f"member{number:02d}@example.org" for number in range(30)]
    add_readers(posts, thirty)
    # A misconfigured relay: every recipient "unknown", the reply naming each address.
    script = {address: f"550 5.1.1 <{address}>: Recipient address rejected: User unknown" for address in thirty}
    with smtp_server(reply_at={"RCPT": script}) as server:
        service = sending(posts, server)
        plan_edition(service, "weekly", SINCE, UNTIL)
        report = deliver(service)
        reason = (
            f"breaker: {BREAKER_WINDOW} of {BREAKER_WINDOW} recipients refused with the same reply:"
            " 550 5.1.1 <address>: Recipient address rejected: User unknown"
        )
        assert report.paused_editions == {1: reason}
        assert (report.sent, report.bounced, report.failed) == (0, 0, 0)
        assert statuses(posts, thirty) == dict.fromkeys(thirty, "active")
        edition = edition_report(posts, 1, with_problems=True)
        assert (edition.edition.status, edition.edition.reason) == (EditionStatus.PAUSED, reason)
        assert edition.deliveries == {DeliveryStatus.QUEUED: 30} and edition.problems == []

        # The relay is mended; the editor resumes: everyone gets it, once.
        server.behaviour.reply_at = {}
        change_edition(service, 1, EditionAction.RESUME, actor="cli:tester")
        assert deliver(service).sent == 30
        assert received_once_each(server, thirty)
        assert deliver(service).handled == 0
    assert edition_report(posts, 1).edition.status == EditionStatus.SENT


def test_the_breaker_lets_a_few_bounces_among_many_through(posts: Service) -> None:
    twelve = [f"member{number:02d}@example.org" for number in range(12)]
    add_readers(posts, twelve)
    gone = twelve[3:5]
    with smtp_server(reply_at={"RCPT": dict.fromkeys(gone, "550 5.1.1 User unknown")}) as server:
        service = sending(posts, server)
        plan_edition(service, "weekly", SINCE, UNTIL)
        report = deliver(service)
        assert (report.sent, report.bounced, report.paused_editions) == (10, 2, {})
    assert statuses(posts, twelve) == {a: "bounced" if a in gone else "active" for a in twelve}


# --- The editor's pages -------------------------------------------------------------------------------------------


@pytest.fixture
def paused_site(tmp_path: Path, database_url: str) -> Iterator[Any]:
    with web_site(tmp_path, database_url, reply_at={"MAIL": "550 5.7.1 Sender address rejected"}) as site:
        add_readers(site.service, ["ana@example.org", "bo@example.org"])
        plan = plan_edition(site.service, "weekly", datetime(2024, 5, 1, tzinfo=NOW.tzinfo), NOW - timedelta(days=1))
        assert plan.edition is not None and plan.queued == 2
        assert list(deliver(site.service).paused_editions) == [plan.edition.id]
        yield site


def test_the_editor_sees_why_an_edition_was_paused_and_resumes_it(paused_site: Any) -> None:
    site = paused_site
    reason = f"MAIL FROM refused by 127.0.0.1:{site.smtp.port}: 550 5.7.1 Sender address rejected"
    with site.client() as client:
        sign_in(client)
        dashboard = client.get("/editor/").text
        assert reason in dashboard
        page = client.get("/editor/editions/1").text
        assert "Paused by the sender" in page and reason in page and "No subscriber was marked" in page
        assert json.loads(client.get("/editor/editions/1/progress.json").text)["reason"] == reason

        site.smtp.behaviour.reply_at = {}
        resumed = form_post(client, "/editor/editions/1/resume", {}, page)
        assert resumed.status_code == 303

        def sent() -> dict[str, Any] | None:
            progress: dict[str, Any] = json.loads(client.get("/editor/editions/1/progress.json").text)
            return progress if progress["status"] == EditionStatus.SENT else None

        progress = wait_for(sent, "edition 1 to be sent", timeout=20)
        assert progress["counts"] == {"sent": 2} and progress["reason"] == ""
        assert reason not in client.get("/editor/editions/1").text
    assert sorted(r for m in site.smtp.messages for r in m.recipients) == ["ana@example.org", "bo@example.org"]
    assert site.status_of("ana@example.org") == site.status_of("bo@example.org") == "active"
