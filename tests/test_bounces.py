"""Bounces on SQLite and PostgreSQL: VERP envelope senders, the one bounce rule (scores, staleness, one count per
delivery), the intake of DSNs, complaints, unsubscribe requests, auto-replies and garbage, the command line
(``bounces import``, ``list``, ``receive`` over a real LMTP connection) and the configuration of ``[bounces]``."""

from __future__ import annotations

import json
import re
import smtplib
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from syndication.app.bounces import (
    KINDS,
    delivery_of_address,
    edition_bounces,
    list_inbound,
    process_message,
    record_bounce,
    subscriber_bounces,
    verp_address,
)
from syndication.app.service import Service, init_store
from syndication.app.subscribers import add_subscriber, find_subscriber, unsubscribe
from syndication.cli import bounces as cli_bounces
from syndication.cli import main
from syndication.clock import fixed_clock
from syndication.config import Settings, load_settings
from syndication.core.bounces import Fault
from syndication.core.models import EditionStatus
from syndication.core.tokens import read_verp_token, verp_token
from syndication.errors import ConfigError
from syndication.store import database, ledger
from syndication.store.schema import BounceRow, DeliveryRow, InboundMessageRow
from tests.support import NOW, write_config

KEY = "test-signing-key-0123456789abcdef"
OLD_KEY = "old-signing-key-0123456789abcdef"
BOUNCES = "bounces@news.example.org"
UNSUBSCRIBE = "unsubscribe@news.example.org"
CORPUS = Path(__file__).parent / "inbound"


# --- Messages built with the standard library's email package ------------------------------------------------


def dsn(
    recipient: str,
    status: str = "5.1.1",
    *,
    to: str = BOUNCES,
    original_message_id: str = "<unknown-1@news.example.org>",
    diagnostic: str | None = None,
    action: str = "failed",
    serial: int = 0,
) -> bytes:
    """A Postfix-style delivery status notification (RFC 3464) for ``recipient``."""
    from email.message import EmailMessage, Message
    from email.mime.multipart import MIMEMultipart
    from email.mime.text import MIMEText

    diagnostic = diagnostic or f"smtp; 550 {status} <{recipient}>: Recipient address rejected: User unknown"
    report = MIMEMultipart("report", report_type="delivery-status")
    report["From"] = "MAILER-DAEMON@mx.news.example.org (Mail Delivery System)"
    report["To"] = to
    report["Subject"] = "Undelivered Mail Returned to Sender"
    report["Message-ID"] = f"<dsn-{serial}-{recipient}@mx.news.example.org>"
    report["Auto-Submitted"] = "auto-replied"
    report.attach(MIMEText(f"I'm sorry to have to inform you that your message could not be delivered to\n"
                           f"<{recipient}>: {diagnostic}\n"))  # fmt: skip
    status_part = Message()
    status_part.set_type("message/delivery-status")
    per_message = Message()
    per_message["Reporting-MTA"] = "dns; mx.news.example.org"
    per_message["Arrival-Date"] = "Sat, 1 Jun 2024 12:00:00 +0000"
    per_recipient = Message()
    per_recipient["Final-Recipient"] = f"rfc822; {recipient}"
    per_recipient["Action"] = action
    per_recipient["Status"] = status
    per_recipient["Diagnostic-Code"] = diagnostic
    status_part.set_payload([per_message, per_recipient])
    report.attach(status_part)
    original = EmailMessage()
    original["From"] = "Test Network <news@news.example.org>"
    original["To"] = recipient
    original["Subject"] = "Your weekly digest"
    original["Message-ID"] = original_message_id
    headers = Message()
    headers.set_type("text/rfc822-headers")
    headers.set_payload(original.as_string())
    report.attach(headers)
    return report.as_bytes()


def complaint(recipient: str, *, to: str = BOUNCES, original_message_id: str = "<unknown-2@news.example.org>") -> bytes:
    """An ARF (RFC 5965) abuse report about our message to ``recipient``."""
    return (
        f"From: feedback@feedback.example.net\r\nTo: {to}\r\nSubject: Complaint\r\n"
        f"Message-ID: <arf-{recipient}@feedback.example.net>\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=feedback-report; boundary="b"\r\n\r\n'
        "--b\r\nContent-Type: text/plain\r\n\r\nThis is an email abuse report.\r\n"
        "--b\r\nContent-Type: message/feedback-report\r\n\r\n"
        f"Feedback-Type: abuse\r\nUser-Agent: Feedback/1.0\r\nVersion: 1\r\nOriginal-Rcpt-To: {recipient}\r\n"
        "\r\n--b\r\nContent-Type: message/rfc822\r\n\r\n"
        f"From: news@news.example.org\r\nTo: {recipient}\r\nSubject: Digest\r\n"
        f"Message-ID: {original_message_id}\r\n\r\nHello.\r\n--b--\r\n"
    ).encode()


def plain(sender: str, to: str, subject: str, *, extra: str = "") -> bytes:
    """A plain message from ``sender`` to ``to``."""
    return (f"From: {sender}\r\nTo: {to}\r\nSubject: {subject}\r\nMessage-ID: <{subject.replace(' ', '')}"
            f"@mail.example.net>\r\n{extra}\r\nHello.\r\n").encode()  # fmt: skip


# --- Fixtures -----------------------------------------------------------------------------------------------------


@pytest.fixture
def config(tmp_path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A config.toml with a bounce address and an unsubscribe mailto, the signing key in the environment."""
    for variable in ("SYNDICATION_DATABASE_URL", "SYNDICATION_OLD_SECRET_KEYS", "SYNDICATION_CONFIG"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("SYNDICATION_SECRET_KEY", KEY)
    extra = (f'[mail]\nfrom_address = "news@news.example.org"\nunsubscribe_mailto = "{UNSUBSCRIBE}"\n'
             f'[bounces]\naddress = "{BOUNCES}"\n')  # fmt: skip
    path = write_config(tmp_path, database_url, extra)
    init_store(load_settings(path, environ={}))
    return path


@pytest.fixture
def settings(config: Path) -> Settings:
    return load_settings(config, environ={"SYNDICATION_SECRET_KEY": KEY})


@pytest.fixture
def service(settings: Settings) -> Iterator[Service]:
    with Service.open(settings, fixed_clock(NOW)) as service:
        yield service


def subscribe(service: Service, *addresses: str) -> list[int]:
    return [add_subscriber(service, address, confirmed=True).subscriber.id for address in addresses]


def sent_edition(service: Service, subscriber_ids: list[int]) -> tuple[int, dict[int, tuple[int, str]]]:
    """An edition queued for ``subscriber_ids``; its id and, per subscriber, the delivery's id and Message-ID."""
    with database.transaction(service.engine) as session:
        edition, _ = ledger.create_edition(
            session, "weekly", NOW - timedelta(days=7), NOW, NOW, status=EditionStatus.SENDING
        )
        ledger.queue(session, edition.id, [(s, f"edition-{edition.id}.{s}.abcdef012345") for s in subscriber_ids], NOW)
        rows = session.execute(select(DeliveryRow.subscriber_id, DeliveryRow.id, DeliveryRow.message_id).where(
            DeliveryRow.edition_id == edition.id))  # fmt: skip
        return edition.id, {s: (d, f"<{m}@news.example.org>") for s, d, m in rows if s is not None}


def status_of(service: Service, address: str) -> str:
    subscriber = find_subscriber(service, address)
    assert subscriber is not None
    return subscriber.status


def inbound_rows(service: Service) -> list[InboundMessageRow]:
    with database.transaction(service.engine) as session:
        return list(session.scalars(select(InboundMessageRow).order_by(InboundMessageRow.id)))


def bounce_rows(service: Service) -> list[BounceRow]:
    with database.transaction(service.engine) as session:
        return list(session.scalars(select(BounceRow).order_by(BounceRow.id)))


# --- VERP -----------------------------------------------------------------------------------------------------


def test_verp_tokens_round_trip_and_refuse_what_was_altered_or_forged() -> None:
    for delivery_id in (0, 1, 35, 36, 123_456_789, 2**63 - 1):
        token = verp_token([KEY], delivery_id)
        assert token == token.lower() and all(c.isalnum() or c == "-" for c in token)
        assert len(f"bounces+{token}") <= 64 - 28
        assert read_verp_token([KEY], token) == delivery_id
        assert read_verp_token([KEY], token.upper()) == delivery_id  # an MTA may change the case
    token = verp_token([KEY], 42)
    number, _, mac = token.partition("-")
    assert read_verp_token([KEY], f"{number}-{'a' if mac[0] != 'a' else 'b'}{mac[1:]}") is None
    assert read_verp_token([KEY], f"{verp_token([KEY], 43).partition('-')[0]}-{mac}") is None  # another id
    assert read_verp_token(["another-key-0123456789abcdef"], token) is None
    assert read_verp_token([KEY, OLD_KEY], verp_token([OLD_KEY], 42)) == 42  # a retired key still reads
    for garbage in ("", "-", "42", "abc-", "zzzzzzzzzzzzzzz-aaaaaaaaaaaaa", "4!-aaaaaaaaaaaaa", token + "x"):
        assert read_verp_token([KEY], garbage) is None
    with pytest.raises(ConfigError):
        verp_token([], 1)


def test_verp_address_names_its_delivery_in_any_case(service: Service) -> None:
    address = verp_address(service, 77)
    local, _, domain = address.partition("@")
    assert domain == "news.example.org" and local.startswith("bounces+") and len(local) < 40
    assert delivery_of_address(service, address) == 77
    assert delivery_of_address(service, address.upper()) == 77
    assert delivery_of_address(service, f"<{address}>") == 77
    assert delivery_of_address(service, address.replace("bounces+", "other+")) is None
    assert delivery_of_address(service, address.replace("news.example.org", "example.org")) is None
    assert delivery_of_address(service, BOUNCES) is None
    assert delivery_of_address(service, "not an address") is None
    unset = replace(service, settings=service.settings.model_copy(update={"bounces": type(service.settings.bounces)()}))
    with pytest.raises(ConfigError, match=r"\[bounces\] address"):
        verp_address(unset, 1)


# --- The one bounce rule ----------------------------------------------------------------------------------------


def test_a_hard_dsn_suppresses_and_keeps_the_reply_and_edition(service: Service) -> None:
    ana, bo = subscribe(service, "ana@example.org", "bo@example.org")
    edition_id, deliveries = sent_edition(service, [ana, bo])
    delivery_id, _ = deliveries[ana]
    outcome = process_message(service, dsn("ana@example.org", to=verp_address(service, delivery_id)))
    assert outcome.kind == "dsn" and not outcome.duplicate
    assert outcome.outcome == "ana@example.org: hard bounce 5.1.1, score 5 of 5: suppressed"
    assert status_of(service, "ana@example.org") == "bounced"
    assert status_of(service, "bo@example.org") == "active"
    (bounce,) = subscriber_bounces(service, ana)
    assert (bounce.fault, bounce.status, bounce.source, bounce.score) == ("address", "5.1.1", "dsn", 5.0)
    assert (bounce.delivery_id, bounce.edition_id, bounce.inbound_id) == (delivery_id, edition_id, outcome.inbound_id)
    assert "User unknown" in bounce.diagnostic and bounce.at == NOW
    assert edition_bounces(service, edition_id) == [bounce]
    (row,) = inbound_rows(service)
    assert (row.kind, row.source, row.outcome, row.raw) == ("dsn", "import", outcome.outcome, None)


def test_a_dsn_finds_its_delivery_by_message_id_or_its_subscriber_by_address(service: Service) -> None:
    ana, bo = subscribe(service, "ana@example.org", "bo@example.org")
    edition_id, deliveries = sent_edition(service, [ana, bo])
    process_message(service, dsn("ana@example.org", original_message_id=deliveries[ana][1]))
    assert [(b.delivery_id, b.edition_id) for b in subscriber_bounces(service, ana)] == [
        (deliveries[ana][0], edition_id)
    ]
    process_message(service, dsn("BO@example.org"))  # no VERP, an unknown Message-ID: the address decides
    assert [(b.delivery_id, b.edition_id) for b in subscriber_bounces(service, bo)] == [(None, None)]
    assert status_of(service, "bo@example.org") == "bounced"
    outcome = process_message(service, dsn("nobody@example.org"))
    assert outcome.outcome == "nobody@example.org: hard bounce 5.1.1: not a subscriber, nothing to do"


def test_soft_bounces_accumulate_and_go_stale(service: Service) -> None:
    (ana,) = subscribe(service, "ana@example.org")
    day = timedelta(days=1)

    def soft(days: int, serial: int) -> str:
        later = replace(service, clock=fixed_clock(NOW + days * day))
        return process_message(later, dsn("ana@example.org", "4.2.2", serial=serial,
                               diagnostic="smtp; 452 4.2.2 Mailbox full")).outcome  # fmt: skip

    assert soft(0, 1) == "ana@example.org: soft bounce 4.2.2, score 1 of 5"
    assert soft(10, 2).endswith("score 2 of 5")
    assert soft(20, 3).endswith("score 3 of 5")
    # 91 days after the first: it went stale and no longer counts
    assert soft(91, 4).endswith("score 3 of 5")
    assert soft(95, 5).endswith("score 4 of 5")
    assert status_of(service, "ana@example.org") == "active"
    assert soft(96, 6) == "ana@example.org: soft bounce 4.2.2, score 5 of 5: suppressed"
    assert status_of(service, "ana@example.org") == "bounced"
    assert len(subscriber_bounces(service, ana)) == 6


def test_one_delivery_counts_once_whether_refused_while_sending_or_reported_later(service: Service) -> None:
    ana, bo = subscribe(service, "ana@example.org", "bo@example.org")
    edition_id, deliveries = sent_edition(service, [ana, bo])
    delivery_id, _ = deliveries[ana]
    first = record_bounce(service, subscriber_id=ana, fault=Fault.MAILBOX, status="5.2.2", diagnostic="552 full",
                          source="smtp", delivery_id=delivery_id)  # fmt: skip
    assert (first.counted, first.added, first.score, first.suppressed) == (True, 1.0, 1.0, False)
    again = record_bounce(service, subscriber_id=ana, fault=Fault.MAILBOX, status="5.2.2", source="dsn",
                          delivery_id=delivery_id)  # fmt: skip
    assert (again.counted, again.added, again.score, again.counted_before) == (True, 0.0, 1.0, True)
    # the report says more than the reply did: the delivery counts at its highest, once
    harder = process_message(service, dsn("ana@example.org", to=verp_address(service, delivery_id)))
    assert "score 5 of 5 (this delivery counted before, +4): suppressed" in harder.outcome
    assert [b.score for b in subscriber_bounces(service, ana)] == [4.0, 0.0, 1.0]
    assert all(b.edition_id == edition_id for b in subscriber_bounces(service, ana))
    # the sending path's hook: the same rule, hard by default
    bounced = record_bounce(service, subscriber_id=bo, fault="address", status="5.1.1", source="smtp",
                            diagnostic="550 5.1.1 no such user", delivery_id=deliveries[bo][0])  # fmt: skip
    assert bounced.subscriber_status == "bounced"
    (row,) = subscriber_bounces(service, bo)
    assert (row.source, row.fault, row.edition_id, row.score) == ("smtp", "address", edition_id, 5.0)


def test_refusals_of_the_sending_side_never_count_and_ended_subscribers_keep_their_status(service: Service) -> None:
    ana, bo, cy = subscribe(service, "ana@example.org", "bo@example.org", "cy@example.org")
    for fault in (Fault.SENDING_SIDE, Fault.TEMPORARY):
        outcome = record_bounce(service, subscriber_id=ana, fault=fault, status="5.7.1", source="smtp")
        assert not outcome.counted and (outcome.subscriber_id, outcome.subscriber_status) == (ana, "active")
    assert subscriber_bounces(service, ana) == []
    unsubscribe(service, bo)
    reported = process_message(service, dsn("bo@example.org"))
    assert reported.outcome == "bo@example.org: hard bounce 5.1.1, score 5 of 5; stays unsubscribed"
    assert status_of(service, "bo@example.org") == "unsubscribed" and len(subscriber_bounces(service, bo)) == 1
    assert record_bounce(service, subscriber_id=999_999, fault="address", source="smtp").subscriber_id is None
    assert status_of(service, "cy@example.org") == "active"
    _ = cy


# --- The intake -------------------------------------------------------------------------------------------------


def test_the_same_message_twice_changes_nothing(service: Service) -> None:
    (ana,) = subscribe(service, "ana@example.org")
    message = dsn("ana@example.org", "4.2.2", diagnostic="smtp; 452 4.2.2 Mailbox full")
    first = process_message(service, message)
    second = process_message(service, message, source="mailbox")
    assert not first.duplicate and second.duplicate and second.inbound_id is None
    assert second.outcome == "already processed: nothing changed"
    assert len(inbound_rows(service)) == 1 and len(subscriber_bounces(service, ana)) == 1


def test_a_complaint_ends_the_subscription_at_once_and_for_good(service: Service) -> None:
    ana, bo, cy = subscribe(service, "ana@example.org", "bo@example.org", "cy@example.org")
    _, deliveries = sent_edition(service, [ana, bo, cy])
    outcome = process_message(service, complaint("ana@example.org", to=verp_address(service, deliveries[ana][0])))
    assert outcome.kind == "complaint"
    assert (
        outcome.outcome == "ana@example.org: complaint (reported as spam): complained, never sent to again (was active)"
    )
    assert status_of(service, "ana@example.org") == "complained"
    record_bounce(service, subscriber_id=bo, fault="address", source="smtp")
    # found by the original Message-ID, even from a bounced subscriber
    process_message(service, complaint("someone-else@example.org", original_message_id=deliveries[bo][1]))
    assert status_of(service, "bo@example.org") == "complained"
    unsubscribe(service, cy)
    process_message(service, complaint("cy@example.org"))  # by the complainant's address
    assert status_of(service, "cy@example.org") == "complained"
    assert unsubscribe(service, ana) is not None and status_of(service, "ana@example.org") == "complained"
    again = process_message(service, complaint("ana@example.org", original_message_id="<other@x>"))
    assert again.outcome.endswith("complained already")
    assert process_message(service, complaint("nobody@example.org")).outcome.endswith("not a subscriber, nothing to do")


def test_an_unsubscribe_request_by_mail_unsubscribes_its_sender(service: Service) -> None:
    subscribe(service, "ana@example.org", "bo@example.org")
    outcome = process_message(service, plain("Ana <Ana@Example.org>", UNSUBSCRIBE, "unsubscribe"))
    assert (outcome.kind, outcome.outcome) == ("unsubscribe", "ana@example.org: unsubscribe request: unsubscribed")
    assert status_of(service, "ana@example.org") == "unsubscribed"
    record_bounce(service, subscriber_id=find_subscriber(service, "bo@example.org").id, fault="address", source="smtp")  # type: ignore[union-attr]
    kept = process_message(service, plain("bo@example.org", UNSUBSCRIBE, "please remove me"))
    assert kept.outcome == "bo@example.org: unsubscribe request: stays bounced"
    stranger = process_message(service, plain("x@example.net", UNSUBSCRIBE, "leave"))
    assert stranger.outcome == "x@example.net: unsubscribe request: not a subscriber, nothing to do"


def test_an_auto_reply_is_recorded_and_changes_nothing(service: Service) -> None:
    (ana,) = subscribe(service, "ana@example.org")
    message = plain("ana@example.org", BOUNCES, "Out of Office", extra="Auto-Submitted: auto-replied\r\n")
    outcome = process_message(service, message)
    assert (outcome.kind, outcome.outcome) == ("auto-reply", "auto-reply: ignored")
    assert status_of(service, "ana@example.org") == "active" and subscriber_bounces(service, ana) == []


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(bytes(range(256)) * 64, id="binary"),
        pytest.param(b"", id="empty"),
        pytest.param(b"just some words\nwithout any header\n", id="no-headers"),
        pytest.param(b"Subject: x\r\n\r\n" + b"\xff\x00garbage" * 1_300_000, id="10MB"),
        pytest.param(b"From: a@b\r\nContent-Type: multipart/report; boundary=\r\n\r\n--\r\n\x00", id="broken-mime"),
    ],
)
def test_garbage_is_kept_as_unrecognised_and_changes_nothing(service: Service, raw: bytes) -> None:
    (ana,) = subscribe(service, "ana@example.org")
    outcome = process_message(service, raw, source="receiver")
    assert outcome.kind == "unrecognised" and outcome.inbound_id is not None
    assert outcome.outcome == "unrecognised: kept for an operator to look at; nothing changed"
    (row,) = inbound_rows(service)
    assert row.raw == raw[: 256 * 1024] and row.source == "receiver"
    assert status_of(service, "ana@example.org") == "active" and subscriber_bounces(service, ana) == []


# What each message of the corpus (tests/inbound/) must do to its subscriber.
CORPUS_EFFECTS = {
    "postfix-user-unknown.eml": ("ana@example.org", "bounced"),
    "exim-dsn.eml": ("bruno@example.net", "bounced"),
    "exim-plain.eml": ("carla@oldhost.example.co.uk", "bounced"),
    "qmail-plain.eml": ("dario@smallisp.example.com", "bounced"),
    "exchange-online-ndr.eml": ("elena@contoso.example.com", "bounced"),
    "gmail-dsn.eml": ("fiona.nonexistent@gmail.com", "bounced"),
    "sendmail-mailbox-full.eml": ("gianni@university.example.edu", "active"),  # soft: 1 of 5
    "postfix-delayed.eml": ("hugo@slowmail.example.net", "active"),  # a delay is no failure
    "arf-complaint.eml": ("ines@mailprovider.example", "complained"),
    "arf-complaint-no-rcpt.eml": ("jonas@bigmail.example", "complained"),
    "out-of-office.eml": ("karin@fabrikam.example.com", "active"),
    "unsubscribe-request.eml": ("laura@example.com", "unsubscribed"),
}
_CORPUS_VERP = re.compile(rb"bounces\+[a-z0-9]+-[a-z0-9]+@news\.example\.org")


def test_the_corpus_through_bounces_import(
    config: Path, service: Service, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    files = sorted(CORPUS.glob("*.eml"))
    if not files:
        pytest.skip("no corpus in tests/inbound/ yet")
    addresses = sorted({address for address, _ in CORPUS_EFFECTS.values()})
    ids = dict(zip(addresses, subscribe(service, *addresses), strict=True))
    _, deliveries = sent_edition(service, list(ids.values()))
    # The corpus's VERP addresses were made with another key: give each the real one of its recipient's delivery.
    folder = tmp_path / "corpus"
    folder.mkdir()
    for file in files:
        raw = file.read_bytes()
        if file.name in CORPUS_EFFECTS:
            delivery_id = deliveries[ids[CORPUS_EFFECTS[file.name][0]]][0]
            raw = _CORPUS_VERP.sub(verp_address(service, delivery_id).encode(), raw)
        (folder / file.name).write_bytes(raw)
    assert main(["bounces", "import", str(folder), "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == len(files) and "not processed" not in out
    for name, (address, status) in CORPUS_EFFECTS.items():
        if not (CORPUS / name).exists():
            continue
        assert status_of(service, address) == status, (name, out)
        for bounce in subscriber_bounces(service, ids[address]):
            assert bounce.delivery_id == deliveries[ids[address]][0], name  # matched by its VERP address
    gianni = subscriber_bounces(service, ids["gianni@university.example.edu"])
    assert [(b.fault, b.status, b.score) for b in gianni] == [("mailbox", "5.2.2", 1.0)]
    assert subscriber_bounces(service, ids["hugo@slowmail.example.net"]) == []
    # Imported again: every message is recognised, nothing changes.
    assert main(["bounces", "import", str(folder), "--config", str(config)]) == 0
    assert capsys.readouterr().out.count("already processed") == len(files)
    assert len(inbound_rows(service)) == len(files)


# --- Command line ---------------------------------------------------------------------------------------------


def test_bounces_import_and_list_through_the_command_line(
    config: Path, service: Service, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (ana,) = subscribe(service, "ana@example.org")
    folder = tmp_path / "saved"
    folder.mkdir()
    (folder / "1.eml").write_bytes(dsn("ana@example.org"))
    (folder / "2.eml").write_bytes(b"\x00\x01 garbage")
    (folder / "notes.txt").write_text("not a message")
    single = tmp_path / "3.eml"
    single.write_bytes(plain("bo@example.org", BOUNCES, "Out of Office", extra="Auto-Submitted: auto-replied\r\n"))
    assert main(["bounces", "import", str(folder), str(single), "--config", str(config)]) == 0
    captured = capsys.readouterr()
    assert f"{folder / '1.eml'}: dsn: ana@example.org: hard bounce 5.1.1, score 5 of 5: suppressed" in captured.out
    assert f"{folder / '2.eml'}: unrecognised:" in captured.out
    assert "3 messages processed: 1 auto-reply, 1 dsn, 1 unrecognised; 0 processed before" in captured.err
    assert main(["bounces", "import", str(folder / "1.eml"), str(tmp_path / "missing.eml"), "--config",
                 str(config)]) == 1  # fmt: skip
    captured = capsys.readouterr()
    assert "already processed" in captured.out and "missing.eml: no such file" in captured.err

    assert main(["bounces", "list", "--json", "--config", str(config)]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [m["kind"] for m in listed] == ["auto-reply", "unrecognised", "dsn"]  # newest first (same time: by id)
    assert listed[2]["outcome"].endswith("suppressed") and listed[2]["source"] == "import"
    assert listed[1]["kept_bytes"] > 0 and listed[2]["kept_bytes"] == 0
    assert main(["bounces", "list", "--kind", "dsn", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "suppressed" in out and "auto-reply" not in out
    assert main(["bounces", "list", "--subscriber", "Ana@Example.org", "--json", "--config", str(config)]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert (shown["status"], shown["score"], shown["threshold"]) == ("bounced", 5.0, 5.0)
    assert [(b["fault"], b["status"], b["source"]) for b in shown["bounces"]] == [("address", "5.1.1", "dsn")]
    assert main(["bounces", "list", "--subscriber", "ana@example.org", "--config", str(config)]) == 0
    assert "bounce score 5 of 5" in capsys.readouterr().err
    _ = ana


def test_the_command_line_lists_every_kind() -> None:
    assert cli_bounces._KINDS == KINDS


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def test_bounces_receive_takes_messages_over_lmtp(service: Service, settings: Settings) -> None:
    pytest.importorskip("syndication.inbound.receiver", reason="the receiver is not written yet")
    from syndication.app.bounces import start_receiver

    (ana,) = subscribe(service, "ana@example.org")
    _, deliveries = sent_edition(service, [ana])
    port = _free_port()
    receiver = start_receiver(service, host="127.0.0.1", port=port, lmtp=True)
    try:
        verp = verp_address(service, deliveries[ana][0])
        with smtplib.LMTP("127.0.0.1", port) as client:
            refused = client.sendmail("", [verp], dsn("ana@example.org", to=verp))
        assert refused == {}
    finally:
        receiver.stop()
    assert status_of(service, "ana@example.org") == "bounced"
    (row,) = inbound_rows(service)
    assert (row.source, row.kind) == ("receiver", "dsn")
    (bounce,) = bounce_rows(service)
    assert bounce.delivery_id == deliveries[ana][0]


def test_bounces_receive_command_runs_until_stopped(config: Path, service: Service) -> None:
    pytest.importorskip("syndication.inbound.receiver", reason="the receiver is not written yet")
    import os
    import signal

    subscribe(service, "ana@example.org")
    port = _free_port()

    def send_then_stop() -> None:
        # The command runs in the main thread (signal handlers are installed there); this thread stops it.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with smtplib.LMTP("127.0.0.1", port) as client:
                    client.sendmail("", [BOUNCES], dsn("ana@example.org"))
                break
            except OSError:
                time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGTERM)

    sender = threading.Thread(target=send_then_stop)
    sender.start()
    status = main(["bounces", "receive", "--host", "127.0.0.1", "--port", str(port), "--config", str(config)])
    sender.join()
    assert status == 0
    assert status_of(service, "ana@example.org") == "bounced"


# --- Configuration ----------------------------------------------------------------------------------------------


def _load(tmp_path: Path, body: str, environ: dict[str, str] | None = None) -> Settings:
    path = tmp_path / "config.toml"
    path.write_text(body, encoding="utf-8")
    return load_settings(path, environ=environ or {})


def test_bounce_settings_defaults_and_the_mailbox_password_from_the_environment(tmp_path: Path) -> None:
    rules = _load(tmp_path, "").bounces
    assert (rules.address, rules.hard_score, rules.soft_score, rules.threshold, rules.stale_after_days) == (
        None, 5.0, 1.0, 5.0, 90,
    )  # fmt: skip
    assert rules.listen is None and rules.listen_address is None and rules.lmtp and rules.mailbox is None
    body = ('[bounces]\naddress = "Bounces@News.Example.ORG"\nlisten = "[::1]:8026"\n'
            '[bounces.mailbox]\nhost = "imap.example.org"\nuser = "bounces"\n')  # fmt: skip
    settings = _load(tmp_path, body, {"SYNDICATION_BOUNCES_MAILBOX_PASSWORD": "s3cret"})
    assert settings.bounces.address == "bounces@news.example.org"
    assert settings.bounces.listen_address == ("::1", 8026)
    mailbox = settings.bounces.mailbox
    assert mailbox is not None and mailbox.password is not None and mailbox.password.get_secret_value() == "s3cret"
    assert (mailbox.port, mailbox.folder, mailbox.processed_folder, mailbox.security, mailbox.poll_seconds) == (
        993, "INBOX", None, "tls", 300,
    )  # fmt: skip
    # without a [bounces.mailbox] table the variable configures nothing
    assert _load(tmp_path, "", {"SYNDICATION_BOUNCES_MAILBOX_PASSWORD": "s3cret"}).bounces.mailbox is None


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ('[bounces]\naddress = "not-an-address"\n', "bounces.address: 'not-an-address' is not an email address"),
        ('[bounces]\naddress = "bounces+x@news.example.org"\n', "may not hold '+'"),
        (f'[bounces]\naddress = "{"b" * 40}@news.example.org"\n', "longer than 32 characters"),
        ("[bounces]\nthreshold = 0\n", "bounces.threshold: Input should be greater than 0"),
        ("[bounces]\nsoft_score = -1\n", "bounces.soft_score: Input should be greater than 0"),
        ("[bounces]\nstale_after_days = 0\n", "bounces.stale_after_days"),
        ('[bounces]\nlisten = "8026"\n', "bounces.listen: '8026' is not written host:port"),
        ('[bounces]\nlisten = "localhost:99999"\n', "is not written host:port"),
        ('[bounces.mailbox]\nhost = "imap.example.org"\n', "bounces.mailbox.user: Field required"),
        ('[bounces.mailbox]\nhost = "h"\nuser = "u"\nsecurity = "ssl"\n', "bounces.mailbox.security"),
        ("[bounces]\nscore = 1\n", "bounces.score: unknown key"),
    ],
)
def test_wrong_bounce_settings_are_refused_at_load(tmp_path: Path, body: str, problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        _load(tmp_path, body)
    assert problem in str(caught.value)


def test_listing_refuses_an_unknown_kind(service: Service) -> None:
    with pytest.raises(ConfigError, match="unknown kind"):
        list_inbound(service, 10, "bounce")


# --- The mailbox poller and `syndication run` -----------------------------------------------------------------


def _with_bounces(settings: Settings, **changes: object) -> Settings:
    bounces = settings.bounces.model_copy(update=changes)
    return settings.model_copy(update={"bounces": bounces})


def test_the_mailbox_poller_processes_each_message_once(service: Service, tmp_path: Path) -> None:
    from imap_tools import MailBoxUnencrypted
    from pydantic import SecretStr

    from syndication.app.bounces import poll_mailbox_once
    from syndication.config import BounceMailboxSettings
    from tests.imap_server import imap_server

    subscribe(service, "ana@example.org", "bo@example.org")
    with imap_server(tmp_path / "dovecot") as server:
        with MailBoxUnencrypted(server.host, server.port).login(server.user, server.password) as box:
            box.append(dsn("ana@example.org"), "INBOX")
            box.append(complaint("bo@example.org"), "INBOX")
        mailbox = BounceMailboxSettings(host=server.host, port=server.port, user=server.user, security="none",
                                        password=SecretStr(server.password), processed_folder="Processed")  # fmt: skip
        polling = replace(service, settings=_with_bounces(service.settings, mailbox=mailbox))
        assert poll_mailbox_once(polling) == (2, 0)
        assert poll_mailbox_once(polling) == (0, 0)
    assert status_of(service, "ana@example.org") == "bounced"
    assert status_of(service, "bo@example.org") == "complained"
    assert [(row.source, row.kind) for row in inbound_rows(service)] == [("mailbox", "dsn"), ("mailbox", "complaint")]
    without = replace(
        service, settings=_with_bounces(service.settings, mailbox=mailbox.model_copy(update={"password": None}))
    )
    with pytest.raises(ConfigError, match="SYNDICATION_BOUNCES_MAILBOX_PASSWORD"):
        poll_mailbox_once(without)


def test_run_receives_bounces_while_it_runs_and_leads_the_mailbox_poll(service: Service, settings: Settings) -> None:
    from pydantic import SecretStr

    from syndication.config import BounceMailboxSettings
    from syndication.scheduling.runner import Runner

    (ana,) = subscribe(service, "ana@example.org")
    port = _free_port()
    mailbox = BounceMailboxSettings(host="127.0.0.1", user="u", password=SecretStr("p"), poll_seconds=600)
    runner = Runner(_with_bounces(settings, listen=f"127.0.0.1:{port}", mailbox=mailbox), clock=fixed_clock(NOW))
    try:
        runner.start()
        with smtplib.LMTP("127.0.0.1", port) as client:
            assert client.sendmail("", [BOUNCES], dsn("ana@example.org")) == {}
        specs = {spec.id: spec for spec in runner._leader_jobs()}
        assert specs["bounces:mailbox"].trigger.interval == timedelta(seconds=600)
    finally:
        runner.shutdown()
    assert status_of(service, "ana@example.org") == "bounced"
    with pytest.raises(ConnectionRefusedError):  # the receiver stopped with the process
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
    plain_runner = Runner(settings, clock=fixed_clock(NOW))
    try:
        assert "bounces:mailbox" not in {spec.id for spec in plain_runner._leader_jobs()}
        assert plain_runner.receiver is None
    finally:
        plain_runner.shutdown()
    _ = ana
