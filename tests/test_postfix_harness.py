"""The Postfix harness (tests/postfix_server.py) works: a real Postfix relays to a next hop, and its own DSNs for
the recipients that next hop refuses reach an LMTP listener at the VERP sender's address.

Nothing of the service is used: mail goes in with smtplib, the next hop is the scripted aiosmtpd server of
tests/smtp_server.py, and the LMTP listener is a small aiosmtpd one below that keeps what it is given.
"""

from __future__ import annotations

import email
import email.policy
import smtplib
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.lmtp import LMTP
from aiosmtpd.smtp import SMTP
from aiosmtpd.smtp import Envelope as SmtpEnvelope
from aiosmtpd.smtp import Session as SmtpSession

from tests.postfix_server import HOST, free_port, postfix_relay, process_group_alive
from tests.smtp_server import smtp_server

pytestmark = pytest.mark.slow

BOUNCE_DOMAIN = "news.example.org"


@dataclass(frozen=True)
class Delivered:
    """One message an LMTP client handed over: its envelope and bytes."""

    mail_from: str
    recipients: tuple[str, ...]
    data: bytes

    def parsed(self) -> EmailMessage:
        parsed = email.message_from_bytes(self.data, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        return parsed


class LmtpSink:
    """An LMTP listener on 127.0.0.1 that accepts every recipient and keeps every message."""

    def __init__(self) -> None:
        self._messages: list[Delivered] = []
        self._changed = threading.Condition()
        self.port = free_port()
        self._controller = _LmtpController(self, hostname=HOST, port=self.port)

    @property
    def messages(self) -> list[Delivered]:
        with self._changed:
            return list(self._messages)

    def wait_for(self, count: int, timeout: float) -> bool:
        with self._changed:
            return self._changed.wait_for(lambda: len(self._messages) >= count, timeout)

    async def handle_DATA(self, server: SMTP, session: SmtpSession, envelope: SmtpEnvelope) -> str:
        delivered = Delivered(
            envelope.mail_from or "", tuple(envelope.rcpt_tos), bytes(envelope.original_content or b"")
        )
        with self._changed:
            self._messages.append(delivered)
            self._changed.notify_all()
        # LMTP answers once per recipient.
        return "\r\n".join("250 2.0.0 delivered" for _ in envelope.rcpt_tos)


class _LmtpController(Controller):
    def factory(self) -> SMTP:
        return LMTP(self.handler, **self.SMTP_kwargs)


@contextmanager
def lmtp_sink() -> Iterator[LmtpSink]:
    sink = LmtpSink()
    sink._controller.start()
    try:
        yield sink
    finally:
        sink._controller.stop()


def message(recipient: str, subject: str) -> bytes:
    built = EmailMessage()
    built["From"] = "Newsletter <news@example.org>"
    built["To"] = recipient
    built["Subject"] = subject
    built["Message-ID"] = f"<{subject.replace(' ', '-')}@news.example.org>"
    built.set_content(f"{subject}: the news of the week.\n")
    return built.as_bytes()


def test_postfix_relays_and_returns_its_own_dsn_for_a_refused_recipient_to_the_verp_address(tmp_path: Path) -> None:
    refused = "bob@example.org"
    with (
        smtp_server(reject=[refused], reject_reply="550 5.1.1 User unknown") as next_hop,
        lmtp_sink() as sink,
        postfix_relay(
            tmp_path / "postfix",
            next_hop_port=next_hop.port,
            bounce_domain=BOUNCE_DOMAIN,
            bounce_lmtp_port=sink.port,
        ) as relay,
    ):
        with smtplib.SMTP(HOST, relay.smtp_port, timeout=10) as client:
            # Postfix takes both: the refusal comes later, from its next hop.
            assert not client.sendmail(
                f"bounces+tok1@{BOUNCE_DOMAIN}", ["ana@example.org"], message("ana@example.org", "For Ana")
            )
            assert not client.sendmail(f"bounces+tok2@{BOUNCE_DOMAIN}", [refused], message(refused, "For Bob"))

        assert sink.wait_for(1, timeout=15), relay.logs()
        relay.wait_until_queue_empty(timeout=15)

        assert [m.recipients for m in next_hop.messages] == [("ana@example.org",)], relay.logs()
        accepted = next_hop.messages[0]
        assert accepted.mail_from == f"bounces+tok1@{BOUNCE_DOMAIN}"
        assert accepted.parsed()["Subject"] == "For Ana"
        assert [(r.stage, r.address, r.code) for r in next_hop.refusals] == [("RCPT", refused, 550)]

        assert len(sink.messages) == 1, relay.logs()
        dsn = sink.messages[0]
        assert dsn.mail_from == "<>"  # a DSN has the null sender (aiosmtpd keeps it as written)
        assert dsn.recipients == (f"bounces+tok2@{BOUNCE_DOMAIN}",)
        report = dsn.parsed()
        assert report.get_content_type() == "multipart/report"
        assert report.get_param("report-type") == "delivery-status"
        status = _delivery_status(report)
        assert status["Final-Recipient"] == f"rfc822; {refused}"
        assert status["Action"] == "failed"
        assert status["Status"] == "5.1.1"
        assert "550 5.1.1 User unknown" in status["Diagnostic-Code"]
        assert _returned_message(report)["Subject"] == "For Bob"
    # Stopped: no process of the instance is left.
    assert relay.master_pid and not process_group_alive(relay.master_pid)


def _delivery_status(report: EmailMessage) -> dict[str, str]:
    """The per-recipient fields of the report's message/delivery-status part (the one recipient's block)."""
    parts = [part for part in report.walk() if part.get_content_type() == "message/delivery-status"]
    assert len(parts) == 1
    blocks: Any = parts[0].get_payload()
    # The standard library parses the part into one Message per block: the per-message one, then one a recipient.
    assert isinstance(blocks, list) and len(blocks) == 2
    return {name: str(value) for name, value in blocks[1].items()}


def _returned_message(report: EmailMessage) -> EmailMessage:
    parts = [part for part in report.walk() if part.get_content_type() in ("message/rfc822", "text/rfc822-headers")]
    assert len(parts) == 1
    payload: Any = parts[0].get_payload()
    if isinstance(payload, list):
        inner = payload[0]
        assert isinstance(inner, EmailMessage)
        return inner
    parsed = email.message_from_string(str(payload), policy=email.policy.default)
    assert isinstance(parsed, EmailMessage)
    return parsed
