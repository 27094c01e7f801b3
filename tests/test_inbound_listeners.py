"""The two ways bounces come in: the LMTP/SMTP receiver the MTA delivers to, and the IMAP mailbox poller.

The receiver is driven over real sockets with the standard library's clients (smtplib.LMTP and smtplib.SMTP), as
Postfix or Exim would: each accepted message reaches ``handle`` with its bytes and envelope recipients; a
``handle`` that raises makes a temporary refusal (4xx), so the MTA keeps the message and delivers it again later.
The poller is run against a real Dovecot (tests/imap_server.py; skipped where Dovecot is not installed).
"""

from __future__ import annotations

import smtplib
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from imap_tools import AND, MailBoxUnencrypted

from syndication.errors import SyndicationError
from syndication.inbound.classify import MessageKind, classify_message
from syndication.inbound.mailbox import PROCESSED_KEYWORD, MailboxAccess, poll_mailbox
from syndication.inbound.receiver import BounceReceiver
from tests.imap_server import ImapServer, free_port, imap_server

CORPUS = Path(__file__).parent / "inbound"
VERP = "bounces+2s-k3j5l2m4n6p7q@news.example.org"


def crlf(raw: bytes) -> bytes:
    """A message with CRLF line ends, as it travels over SMTP and IMAP."""
    return raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


DSN = crlf((CORPUS / "postfix-user-unknown.eml").read_bytes())


class Recorder:
    """A ``handle`` that records what it was given, and raises while ``failing`` is set."""

    def __init__(self) -> None:
        self.calls: list[tuple[bytes, list[str]]] = []
        self.failing = False
        self.lock = threading.Lock()

    def __call__(self, raw: bytes, recipients: list[str]) -> None:
        if self.failing:
            raise RuntimeError("the database is down")
        with self.lock:
            self.calls.append((raw, recipients))


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def lmtp(recorder: Recorder) -> Iterator[BounceReceiver]:
    with BounceReceiver(recorder, port=0) as receiver:
        yield receiver


@pytest.fixture
def smtp(recorder: Recorder) -> Iterator[BounceReceiver]:
    with BounceReceiver(recorder, port=0, lmtp=False) as receiver:
        yield receiver


def lmtp_client(receiver: BounceReceiver) -> smtplib.LMTP:
    client = smtplib.LMTP(receiver.host, receiver.port, timeout=10)
    code, _ = client.ehlo()  # smtplib.LMTP says LHLO
    assert code == 250
    return client


def lmtp_send(receiver: BounceReceiver, recipients: list[str], message: bytes) -> list[tuple[int, bytes]]:
    """Send over LMTP; every recipient's reply to the message (smtplib reads only the first by itself)."""
    client = lmtp_client(receiver)
    try:
        assert client.mail("")[0] == 250
        for recipient in recipients:
            assert client.rcpt(recipient)[0] == 250
        replies = [client.data(message)]
        replies += [client.getreply() for _ in recipients[1:]]
        return replies
    finally:
        client.close()


# The receiver ------------------------------------------------------------------------------------------------------


def test_lmtp_hands_each_message_with_its_recipients_and_answers_per_recipient(
    lmtp: BounceReceiver, recorder: Recorder
) -> None:
    replies = lmtp_send(lmtp, [VERP, "bounces+other@news.example.org"], DSN)

    assert [code for code, _ in replies] == [250, 250]
    assert recorder.calls == [(DSN, [VERP, "bounces+other@news.example.org"])]
    report = classify_message(recorder.calls[0][0], envelope_recipients=recorder.calls[0][1])
    assert report.kind is MessageKind.DSN
    assert report.addressed_to[:2] == (VERP, "bounces+other@news.example.org")


def test_smtp_hands_each_message_too(smtp: BounceReceiver, recorder: Recorder) -> None:
    message = crlf(b"From: a@example.com\nSubject: x\n\n.a line that starts with a dot\n..and two\n")
    with smtplib.SMTP(smtp.host, smtp.port, timeout=10) as client:
        refused = client.sendmail("", [VERP, "bounces+x@news.example.org"], message)
        client.sendmail("", [VERP], DSN)

    assert refused == {}
    assert recorder.calls == [(message, [VERP, "bounces+x@news.example.org"]), (DSN, [VERP])]


def test_a_handle_that_raises_refuses_the_message_for_now_and_the_retry_delivers_it(
    lmtp: BounceReceiver, smtp: BounceReceiver, recorder: Recorder
) -> None:
    recorder.failing = True
    replies = lmtp_send(lmtp, [VERP, "bounces+other@news.example.org"], DSN)
    assert [code for code, _ in replies] == [451, 451]
    assert replies[0][1].startswith(b"4.3.0")
    with smtplib.SMTP(smtp.host, smtp.port, timeout=10) as client, pytest.raises(smtplib.SMTPDataError) as refused:
        client.sendmail("", [VERP], DSN)
    assert refused.value.smtp_code == 451
    assert recorder.calls == []

    # The MTA kept it and tries again; the receiver is still there and takes it now.
    recorder.failing = False
    assert [code for code, _ in lmtp_send(lmtp, [VERP], DSN)] == [250]
    assert recorder.calls == [(DSN, [VERP])]


def test_a_message_over_the_limit_is_refused_for_good(recorder: Recorder) -> None:
    big = crlf(b"From: a@example.com\nSubject: big\n\n" + b"0123456789abcdef\n" * 4000)
    with BounceReceiver(recorder, port=0, max_bytes=10_000) as receiver:
        replies = lmtp_send(receiver, [VERP, "bounces+other@news.example.org"], big)
        assert [code for code, _ in replies] == [552, 552]
        assert [code for code, _ in lmtp_send(receiver, [VERP], DSN)] == [250]  # the connection after it is fine
    with (
        BounceReceiver(recorder, port=0, lmtp=False, max_bytes=10_000) as receiver,
        smtplib.SMTP(receiver.host, receiver.port, timeout=10) as client,
    ):
        # A client that announces the size (ESMTP SIZE) is refused at MAIL FROM, one that does not after DATA.
        with pytest.raises(smtplib.SMTPSenderRefused) as early:
            client.sendmail("", [VERP], big)
        assert early.value.smtp_code == 552
        client.rset()
        assert client.mail("")[0] == 250
        assert client.rcpt(VERP)[0] == 250
        assert client.data(big)[0] == 552
    assert recorder.calls == [(DSN, [VERP])]


def test_long_lines_are_taken_as_they_are(lmtp: BounceReceiver, recorder: Recorder) -> None:
    message = crlf(b"From: a@example.com\nSubject: wide\n\n<html>" + b"x" * 5000 + b"</html>\n")
    assert [code for code, _ in lmtp_send(lmtp, [VERP], message)] == [250]
    assert recorder.calls == [(message, [VERP])]


def test_stopping_ends_open_connections_and_frees_the_port(recorder: Recorder) -> None:
    receiver = BounceReceiver(recorder, port=0)
    receiver.start()
    idle = lmtp_client(receiver)  # a connection the MTA keeps open
    port = receiver.port
    receiver.stop()
    idle.close()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    # And it can listen there again.
    with BounceReceiver(recorder, port=port) as again:
        assert [code for code, _ in lmtp_send(again, [VERP], DSN)] == [250]


def test_a_port_already_taken_is_a_clear_error(lmtp: BounceReceiver, recorder: Recorder) -> None:
    with pytest.raises(SyndicationError, match=f"cannot listen on 127.0.0.1:{lmtp.port}"):
        BounceReceiver(recorder, port=lmtp.port).start()


# The mailbox poller ------------------------------------------------------------------------------------------------


MESSAGES = [
    crlf((CORPUS / name).read_bytes()) for name in ("postfix-user-unknown.eml", "gmail-dsn.eml", "arf-complaint.eml")
]


@pytest.fixture
def dovecot(tmp_path: Path) -> Iterator[ImapServer]:
    with imap_server(tmp_path / "dovecot") as server:
        yield server


def access(server: ImapServer, **overrides: object) -> MailboxAccess:
    settings: dict[str, object] = {
        "host": server.host,
        "port": server.port,
        "user": server.user,
        "password": server.password,
        "security": "none",
    }
    settings.update(overrides)
    return MailboxAccess(**settings)  # type: ignore[arg-type]


def deliver(server: ImapServer, *messages: bytes, folder: str = "INBOX") -> None:
    with MailBoxUnencrypted(server.host, server.port).login(server.user, server.password) as box:
        for message in messages:
            box.append(message, folder)


def flags_in(server: ImapServer, folder: str = "INBOX") -> list[set[str]]:
    with MailBoxUnencrypted(server.host, server.port).login(server.user, server.password, folder) as box:
        fetched = box.fetch(AND(all=True), mark_seen=False, headers_only=True)
        return [set(message.flags) - {"\\Recent"} for message in fetched]


def test_each_message_is_handled_once_and_flagged(dovecot: ImapServer, recorder: Recorder) -> None:
    deliver(dovecot, *MESSAGES)

    assert poll_mailbox(access(dovecot), recorder) == (3, 0)
    assert poll_mailbox(access(dovecot), recorder) == (0, 0)

    assert recorder.calls == [(message, []) for message in MESSAGES]  # the bytes exactly as stored
    assert flags_in(dovecot) == [{PROCESSED_KEYWORD, "\\Seen"}] * 3
    kinds = [classify_message(raw).kind for raw, _ in recorder.calls]
    assert kinds == [MessageKind.DSN, MessageKind.DSN, MessageKind.COMPLAINT]

    # Only what arrived since is handled on the next poll.
    deliver(dovecot, DSN)
    assert poll_mailbox(access(dovecot), recorder) == (1, 0)
    assert len(recorder.calls) == 4


def test_processed_messages_are_moved_to_their_folder(dovecot: ImapServer, recorder: Recorder) -> None:
    deliver(dovecot, *MESSAGES)
    moving = access(dovecot, processed_folder="Processed")

    assert poll_mailbox(moving, recorder) == (3, 0)
    assert poll_mailbox(moving, recorder) == (0, 0)

    assert flags_in(dovecot) == []
    assert flags_in(dovecot, "Processed") == [{PROCESSED_KEYWORD, "\\Seen"}] * 3
    assert len(recorder.calls) == 3


def test_a_message_whose_handling_fails_is_left_for_the_next_poll(dovecot: ImapServer) -> None:
    deliver(dovecot, *MESSAGES)
    calls: list[bytes] = []

    def handle(raw: bytes, recipients: list[str]) -> None:
        calls.append(raw)
        if b"feedback-report" in raw and len(calls) <= 3:
            raise RuntimeError("the database is down")

    assert poll_mailbox(access(dovecot), handle) == (2, 1)
    assert flags_in(dovecot) == [{PROCESSED_KEYWORD, "\\Seen"}, {PROCESSED_KEYWORD, "\\Seen"}, set()]
    assert poll_mailbox(access(dovecot), handle) == (1, 0)
    assert calls == [*MESSAGES, MESSAGES[2]]


def test_a_poll_takes_at_most_its_limit(dovecot: ImapServer, recorder: Recorder) -> None:
    deliver(dovecot, *MESSAGES, DSN, DSN)
    assert poll_mailbox(access(dovecot), recorder, limit=2) == (2, 0)
    assert poll_mailbox(access(dovecot), recorder, limit=2) == (2, 0)
    assert poll_mailbox(access(dovecot), recorder, limit=2) == (1, 0)
    assert [raw for raw, _ in recorder.calls] == [*MESSAGES, DSN, DSN]


def test_a_mailbox_that_cannot_be_read_is_a_clear_error(dovecot: ImapServer, recorder: Recorder) -> None:
    with pytest.raises(SyndicationError, match="has no folder 'No such folder'"):
        poll_mailbox(access(dovecot, folder="No such folder"), recorder)
    with pytest.raises(SyndicationError, match="cannot connect to the bounce mailbox"):
        poll_mailbox(access(dovecot, port=free_port()), recorder)
    # Last: after a wrong password, Dovecot slows the next logins from the address down.
    with pytest.raises(SyndicationError, match=r"cannot log in to the bounce mailbox bounces@127\.0\.0\.1") as refused:
        poll_mailbox(access(dovecot, password="wrong"), recorder)
    assert "wrong" not in str(refused.value)
    assert recorder.calls == []


def test_the_password_is_not_in_the_settings_repr() -> None:
    settings = MailboxAccess(host="imap.example.org", user="bounces", password="s3cret-imap-password")
    assert "s3cret-imap-password" not in repr(settings)
