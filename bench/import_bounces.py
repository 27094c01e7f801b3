"""Process 10,000 delivery status notifications, as ``syndication bounces import`` does, on SQLite.

Goal (issue 15): over 1,000 messages per second. The store holds 10,000 active subscribers and one sent edition
with a delivery to each; every message is a Postfix-style DSN (RFC 3464, a hard 5.1.1 or a soft 5.2.2) sent to
the VERP envelope sender of one delivery, saved as an .eml file. Each is read from its file, classified, matched
to its delivery by its VERP address, and its bounce counted (the hard ones suppress), one transaction a message.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import insert, select

from bench.records import record
from syndication.app.bounces import Incoming, process_message, process_messages, verp_address
from syndication.app.service import Service, init_store
from syndication.clock import fixed_clock
from syndication.config import load_settings
from syndication.core.models import EditionStatus
from syndication.store import database, ledger
from syndication.store.schema import DeliveryRow, SubscriberRow

GOAL_PER_SECOND = 1000.0
KEY = "bench-signing-key-0123456789abcdef"
NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; ``--record`` appends the figures to bench/README.md."""
    parser = argparse.ArgumentParser(prog="python -m bench.import_bounces", description=__doc__)
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--record", action="store_true", help="append the figures to bench/README.md")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        config = work / "config.toml"
        config.write_text(
            f'[database]\nurl = "sqlite:///{work / "store.db"}"\n'
            '[site]\nbase_url = "https://news.example.org"\n'
            '[bounces]\naddress = "bounces@news.example.org"\n',
            "utf-8",
        )
        settings = load_settings(config, environ={"SYNDICATION_SECRET_KEY": KEY})
        init_store(settings)
        with Service.open(settings, fixed_clock(NOW)) as service:
            started = time.perf_counter()
            deliveries = _store(service, args.messages)
            setup_seconds = time.perf_counter() - started
            messages = work / "messages"
            messages.mkdir()
            total_bytes = 0
            for number, (delivery_id, email, message_id) in enumerate(deliveries):
                hard = number % 4 != 3  # three hard bounces in four, the rest soft
                raw = postfix_dsn(email, verp_address(service, delivery_id), message_id, hard=hard, serial=number)
                (messages / f"{number:06d}.eml").write_bytes(raw)
                total_bytes += len(raw)
            files = sorted(messages.iterdir())
            started = time.perf_counter()
            cpu_started = os.times()
            incoming = (Incoming(file.read_bytes()) for file in files)
            outcomes = list(process_messages(service, incoming, source="import"))
            seconds = time.perf_counter() - started
            cpu = os.times()
            cpu_seconds = (cpu.user - cpu_started.user) + (cpu.system - cpu_started.system)
            suppressed = sum(outcome.outcome.endswith(": suppressed") for outcome in outcomes)
            assert all(outcome.kind == "dsn" and not outcome.duplicate for outcome in outcomes), outcomes[:3]
            # As the receiver takes them: one message, one transaction (later soft reports of the same deliveries).
            later = [
                postfix_dsn(email, verp_address(service, delivery_id), message_id, hard=False, serial=10**7 + number)
                for number, (delivery_id, email, message_id) in enumerate(deliveries[:1000])
            ]
            single_started = time.perf_counter()
            singles = [process_message(service, raw, source="receiver") for raw in later]
            single_seconds = time.perf_counter() - single_started
            assert all(outcome.kind == "dsn" and not outcome.duplicate for outcome in singles)
            again_started = time.perf_counter()
            duplicates = [process_message(service, file.read_bytes()) for file in files[:1000]]
            again_seconds = time.perf_counter() - again_started
            assert all(outcome.duplicate for outcome in duplicates)
    rate = len(files) / seconds
    verdict = "PASS" if rate > GOAL_PER_SECOND else "FAIL"
    lines = [
        f"- store: {args.messages:,} active subscribers, one sent edition with a delivery to each"
        f" (set up in {setup_seconds:.1f} s)",
        f"- {len(files):,} Postfix-style DSNs to VERP addresses (3 in 4 hard 5.1.1, the rest soft 5.2.2), mean"
        f" {total_bytes / len(files) / 1024:.1f} KiB, read from .eml files",
        f"- processed as `bounces import` does (read, classified, matched by VERP, counted; 200 to a transaction):"
        f" {seconds:.2f} s ="
        f" {rate:,.0f} messages/s (goal > {GOAL_PER_SECOND:,.0f}/s): {verdict}",
        f"- CPU time over that run: {cpu_seconds:.2f} s; {suppressed:,} subscribers suppressed",
        f"- 1,000 more (later soft reports of the same deliveries), one transaction each as the receiver takes them:"
        f" {len(later) / single_seconds:,.0f} messages/s",
        f"- the first 1,000 imported again (each recognised, nothing changed): {1000 / again_seconds:,.0f} messages/s",
    ]
    print("\n".join(lines))
    if args.record:
        record("Importing bounces (issue 15)", lines)
    return 0 if verdict == "PASS" else 1


def _store(service: Service, count: int) -> list[tuple[int, str, str]]:
    """``count`` active subscribers and an edition queued to them; each delivery's id, address and Message-ID."""
    rows = [
        {"email": f"reader{number}@example.org", "name": "", "language": "en", "themes": None, "cadence": "weekly",
         "status": "active", "consent_at": NOW, "consent_method": "import", "consent_source": "bench",
         "created_at": NOW, "status_changed_at": NOW, "confirmed_at": NOW}
        for number in range(count)
    ]  # fmt: skip
    with database.transaction(service.engine) as session:
        session.execute(insert(SubscriberRow), rows)
        edition, _ = ledger.create_edition(session, "weekly", NOW - timedelta(days=7), NOW, NOW,
                                           status=EditionStatus.SENT)  # fmt: skip
        ids = session.scalars(select(SubscriberRow.id).order_by(SubscriberRow.id)).all()
        ledger.queue(session, edition.id, [(s, f"edition-{edition.id}.{s}.0123456789ab") for s in ids], NOW)
        found = session.execute(
            select(DeliveryRow.id, SubscriberRow.email, DeliveryRow.message_id)
            .join(SubscriberRow, SubscriberRow.id == DeliveryRow.subscriber_id)
            .order_by(DeliveryRow.id)
        ).all()
    return [(delivery_id, email, f"<{key}@news.example.org>") for delivery_id, email, key in found]


def postfix_dsn(recipient: str, verp: str, message_id: str, *, hard: bool, serial: int) -> bytes:
    """A DSN as Postfix writes one: a multipart/report with the notice, the delivery status and the headers."""
    status, reply = ("5.1.1", "550 5.1.1 <{0}>: Recipient address rejected: User unknown in virtual mailbox table")
    if not hard:
        status, reply = ("5.2.2", "552 5.2.2 <{0}>: Mailbox full: quota exceeded")
    reply = reply.format(recipient)
    boundary = f"{serial:08X}.1717243200/mail.news.example.org"
    return f"""Return-Path: <>
Delivered-To: {verp}
Received: by mail.news.example.org (Postfix) id {serial:08X}; Sat,  1 Jun 2026 12:00:00 +0000 (UTC)
Date: Sat,  1 Jun 2026 12:00:00 +0000 (UTC)
From: MAILER-DAEMON@mail.news.example.org (Mail Delivery System)
Subject: Undelivered Mail Returned to Sender
To: {verp}
Auto-Submitted: auto-replied
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status;
\tboundary="{boundary}"
Content-Transfer-Encoding: 8bit
Message-Id: <{serial:08X}.dsn@mail.news.example.org>

This is a MIME-encapsulated message.

--{boundary}
Content-Description: Notification
Content-Type: text/plain; charset=utf-8

This is the mail system at host mail.news.example.org.

I'm sorry to have to inform you that your message could not
be delivered to one or more recipients. It's attached below.

                   The mail system

<{recipient}>: host mx.example.org[192.0.2.25] said: {reply} (in reply to RCPT TO command)

--{boundary}
Content-Description: Delivery report
Content-Type: message/delivery-status

Reporting-MTA: dns; mail.news.example.org
X-Postfix-Queue-ID: {serial:08X}
X-Postfix-Sender: rfc822; {verp}
Arrival-Date: Sat,  1 Jun 2026 11:59:58 +0000 (UTC)

Final-Recipient: rfc822; {recipient}
Original-Recipient: rfc822;{recipient}
Action: failed
Status: {status}
Remote-MTA: dns; mx.example.org
Diagnostic-Code: smtp; {reply}

--{boundary}
Content-Description: Undelivered Message Headers
Content-Type: text/rfc822-headers
Content-Transfer-Encoding: 8bit

Return-Path: <{verp}>
Received: from localhost (localhost [127.0.0.1]) by mail.news.example.org (Postfix) with ESMTP id {serial:08X}
Date: Sat, 1 Jun 2026 11:59:58 +0000
From: Example News <news@news.example.org>
To: {recipient}
Subject: Your weekly digest
Message-ID: {message_id}
List-Id: Example News <news.example.org>
List-Unsubscribe: <https://news.example.org/unsubscribe/TOKEN>, <mailto:unsubscribe@news.example.org>
List-Unsubscribe-Post: List-Unsubscribe=One-Click
MIME-Version: 1.0
Content-Type: multipart/alternative; boundary="===============0123456789=="

--{boundary}--
""".replace("\n", "\r\n").encode("utf-8")


if __name__ == "__main__":
    raise SystemExit(main())
