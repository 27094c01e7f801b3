"""The SMTP client against a real SMTP server (tests/smtp_server.py) that refuses, defers, drops and stalls."""

from __future__ import annotations

import re
import smtplib
import socket
import threading
import time
from datetime import UTC, datetime

import pytest

from syndication.delivery import smtp as smtp_module
from syndication.delivery.smtp import SmtpClient, data_payload, send_one
from syndication.errors import (
    AmbiguousDeliveryError,
    ConfigError,
    DeliveryError,
    PermanentDeliveryError,
    SendingSideError,
    TemporaryDeliveryError,
)
from syndication.mailing.message import Envelope, build_message
from tests.smtp_server import smtp_server

SENDER = "bounces@news.example.org"
ANA = "ana@example.org"
BEN = "ben@example.org"


def digest(to: str = ANA, text: str = "Hello,\n\nthe news of the week.\n", subject: str = "Weekly digest") -> bytes:
    envelope = Envelope(
        from_address="news@news.example.org",
        from_name="Network news",
        to_address=to,
        to_name="Reader",
        subject=subject,
        date=datetime(2024, 6, 1, 12, 0, tzinfo=UTC),
        message_id=f"<digest.1.{to}>",
        extra=(("List-Id", "Network news <news.example.org>"),),
    )
    return build_message(envelope, text, f"<p>{text}</p>")


def one_line(error: BaseException) -> str:
    text = str(error)
    assert "\n" not in text and "\r" not in text, text
    return text


def test_a_message_arrives_as_it_was_sent() -> None:
    message = digest(subject="Malmö, São Paulo und 北九州市")
    with smtp_server() as server, SmtpClient(server.settings(), local_hostname="sender.test") as client:
        client.send(SENDER, ANA, message)

        [received] = server.received_for(ANA)
    assert (received.mail_from, received.recipients) == (SENDER, (ANA,))
    assert received.data == message
    parsed = received.parsed()
    assert parsed["Subject"] == "Malmö, São Paulo und 北九州市"
    assert parsed["Message-ID"] == f"<digest.1.{ANA}>"
    assert parsed["List-Id"] == "Network news <news.example.org>"
    text_part = parsed.get_body(("plain",))
    assert text_part is not None
    assert text_part.get_content().replace("\r\n", "\n") == "Hello,\n\nthe news of the week.\n"


def test_one_connection_carries_many_messages() -> None:
    with smtp_server() as server:
        with SmtpClient(server.settings()) as client:
            client.send(SENDER, ANA, digest(ANA))
            client.send(SENDER, BEN, digest(BEN))
            assert client.connections_opened == 1

        assert server.connections == 1
        assert [m.recipients for m in server.messages] == [(ANA,), (BEN,)]
        assert {m.connection for m in server.messages} == {1}


def test_after_close_the_next_send_opens_a_new_connection() -> None:
    with smtp_server() as server, SmtpClient(server.settings()) as client:
        client.send(SENDER, ANA, digest(ANA))
        client.close()
        assert not client.connected
        client.send(SENDER, BEN, digest(BEN))

        assert server.connections == 2
        assert [m.connection for m in server.messages] == [1, 2]


@pytest.mark.parametrize("stage", ["rcpt", "data"])
def test_a_4xx_reply_is_temporary_and_a_later_attempt_succeeds(stage: str) -> None:
    with smtp_server(defer={ANA: 1}, defer_at=stage) as server, SmtpClient(server.settings()) as client:
        with pytest.raises(TemporaryDeliveryError) as caught:
            client.send(SENDER, ANA, digest(ANA))
        assert caught.value.code == 451
        assert ANA in one_line(caught.value)

        client.send(SENDER, ANA, digest(ANA))

        assert len(server.received_for(ANA)) == 1
        # The refusal left the connection usable (RSET), so the retry went over the same one.
        assert server.connections == 1


@pytest.mark.parametrize("stage", ["rcpt", "data"])
def test_a_5xx_reply_is_permanent_for_that_recipient_only(stage: str) -> None:
    with smtp_server(reject=[ANA], reject_at=stage) as server, SmtpClient(server.settings()) as client:
        with pytest.raises(PermanentDeliveryError) as caught:
            client.send(SENDER, ANA, digest(ANA))
        assert caught.value.code == 550
        assert "No such user" in one_line(caught.value)
        assert (caught.value.fault, caught.value.status) == ("address", "5.1.1")
        assert caught.value.stage == ("RCPT TO" if stage == "rcpt" else "the message")

        client.send(SENDER, BEN, digest(BEN))

        assert server.received_for(ANA) == []
        assert len(server.received_for(BEN)) == 1
        assert server.connections == 1


def test_a_refused_sender_is_the_sending_side_not_the_recipient() -> None:
    # Issue #15: a 5xx at MAIL FROM says nothing about the recipient (it used to bounce them).
    with smtp_server(reject_senders=[SENDER]) as server, SmtpClient(server.settings()) as client:
        with pytest.raises(SendingSideError) as caught:
            client.send(SENDER, ANA, digest(ANA))
        assert caught.value.code == 550
        assert not isinstance(caught.value, PermanentDeliveryError)
        assert one_line(caught.value) == f"MAIL FROM refused by 127.0.0.1:{server.port}: 550 5.7.1 Sender refused"
        assert server.messages == []


@pytest.mark.parametrize(
    ("reply_at", "expected", "stage", "status"),
    [
        ({"MAIL": "550 5.7.1 Sender address rejected"}, SendingSideError, "MAIL FROM", "5.7.1"),
        ({"MAIL": "451 4.3.0 Try later"}, TemporaryDeliveryError, "MAIL FROM", "4.3.0"),
        ({"RCPT": {ANA: "554 5.7.1 <ana@example.org>: Relay access denied"}}, SendingSideError, "RCPT TO", "5.7.1"),
        ({"RCPT": {ANA: "552 5.2.2 Mailbox full"}}, PermanentDeliveryError, "RCPT TO", "5.2.2"),
        ({"RCPT": {ANA: "550 User unknown"}}, PermanentDeliveryError, "RCPT TO", None),
        ({"RCPT": {ANA: "530 5.7.0 Must issue a STARTTLS command first"}}, SendingSideError, "RCPT TO", "5.7.0"),
        ({"DATA": "554 5.7.1 Message refused"}, SendingSideError, "DATA", "5.7.1"),
        ({"DATA": "554 Transaction failed"}, SendingSideError, "DATA", None),
        ({"MESSAGE": "554 5.7.1 Spam content refused"}, SendingSideError, "the message", "5.7.1"),
        ({"MESSAGE": "500 Error: No space left on device"}, SendingSideError, "the message", None),
        ({"MESSAGE": "550 5.1.1 No such user"}, PermanentDeliveryError, "the message", "5.1.1"),
        ({"EHLO": "554 5.7.1 Go away"}, SendingSideError, "EHLO", "5.7.1"),
    ],
)
def test_each_refusal_carries_its_stage_and_whose_problem_it_is(
    reply_at: dict[str, object], expected: type[DeliveryError], stage: str, status: str | None
) -> None:
    with smtp_server(reply_at=reply_at) as server, SmtpClient(server.settings()) as client:
        with pytest.raises(DeliveryError) as caught:
            client.send(SENDER, ANA, digest(ANA))
        assert type(caught.value) is expected, caught.value
        assert (caught.value.stage, caught.value.status) == (stage, status)
        text = one_line(caught.value)
        if expected is SendingSideError:
            assert text.startswith(f"{stage} refused by" if stage != "the message" else "the message was refused")
            assert f"127.0.0.1:{server.port}" in text
        assert server.messages == []
        # The next recipient, whom nothing is scripted for, goes through (over a new connection after EHLO).
        server.behaviour.reply_at = {}
        client.send(SENDER, BEN, digest(BEN))
        assert len(server.received_for(BEN)) == 1


def test_a_full_mailbox_is_soft_and_an_unknown_address_hard() -> None:
    script = {"RCPT": {ANA: "552 5.2.2 Mailbox full", BEN: "550 5.1.1 User unknown"}}
    with smtp_server(reply_at=script) as server, SmtpClient(server.settings()) as client:
        with pytest.raises(PermanentDeliveryError) as full:
            client.send(SENDER, ANA, digest(ANA))
        with pytest.raises(PermanentDeliveryError) as unknown:
            client.send(SENDER, BEN, digest(BEN))
    assert (full.value.fault, unknown.value.fault) == ("mailbox", "address")


def test_a_connection_dropped_after_the_final_dot_is_ambiguous() -> None:
    with smtp_server(drop=1) as server, SmtpClient(server.settings()) as client:
        with pytest.raises(AmbiguousDeliveryError) as caught:
            client.send(SENDER, ANA, digest(ANA))
        assert caught.value.code is None
        assert "may have been accepted" in one_line(caught.value)
        assert not client.connected
        assert [m.recipients for m in server.dropped] == [(ANA,)]

        # The next send opens a new connection and goes through.
        client.send(SENDER, ANA, digest(ANA))
        assert len(server.received_for(ANA)) == 1
        assert server.connections == 2


def test_dropping_by_recipient() -> None:
    with smtp_server(drop=[ANA]) as server, SmtpClient(server.settings()) as client:
        with pytest.raises(AmbiguousDeliveryError):
            client.send(SENDER, ANA, digest(ANA))
        client.send(SENDER, BEN, digest(BEN))
        assert [m.recipients for m in server.messages] == [(BEN,)]


def test_a_refused_connection_is_temporary() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # Nothing listens on the port any more.
    with smtp_server() as server:
        settings = server.settings(port=port)
    with pytest.raises(TemporaryDeliveryError) as caught:
        send_one(settings, SENDER, ANA, digest())
    assert caught.value.code is None
    assert f"127.0.0.1:{port}" in one_line(caught.value)


def test_a_timeout_waiting_for_the_reply_to_the_message_is_ambiguous() -> None:
    with smtp_server(data_delay=2.0) as server, SmtpClient(server.settings(timeout_seconds=0.3)) as client:
        started = time.monotonic()
        with pytest.raises(AmbiguousDeliveryError) as caught:
            client.send(SENDER, ANA, digest(ANA))
        assert time.monotonic() - started < 1.5
        assert "timed out" in one_line(caught.value)
        assert not client.connected
        # The slow server had the message: a retry (same Message-ID) is what lets receivers drop the copy.
        assert len(server.received_for(ANA)) == 1


def test_authentication() -> None:
    with smtp_server(auth=("relay-user", "s3cret")) as server:
        send_one(server.settings(), SENDER, ANA, digest())
        [received] = server.messages
        assert received.authenticated


def test_a_wrong_password_is_the_sending_side() -> None:
    # Issue #15: an AUTH failure pauses the edition with the reason (it used to be a ConfigError that crashed
    # the run); it is about our credentials, never about the recipient.
    with smtp_server(auth=("relay-user", "s3cret")) as server:
        with pytest.raises(SendingSideError) as caught:
            send_one(server.settings(password="wrong-password"), SENDER, ANA, digest())
        text = one_line(caught.value)
        assert "relay-user" in text and "535" in text and text.startswith("AUTH refused by")
        assert (caught.value.stage, caught.value.status) == ("AUTH", "5.7.8")
        assert "wrong-password" not in text
        assert server.messages == []


def test_a_server_that_requires_authentication_is_the_sending_side() -> None:
    # Issue #15: a 530 at MAIL FROM is a refusal of our side (it used to be a ConfigError), with the same hint.
    with (
        smtp_server(auth=("relay-user", "s3cret")) as server,
        pytest.raises(SendingSideError, match=r"requires authentication or TLS: set smtp\.username"),
    ):
        send_one(server.settings(username=None, password=None), SENDER, ANA, digest())


def test_starttls_the_server_does_not_offer_is_a_configuration_error() -> None:
    with smtp_server() as server, pytest.raises(ConfigError, match="does not offer STARTTLS"):
        send_one(server.settings(security="starttls"), SENDER, ANA, digest())


def test_starttls_with_a_trusted_certificate() -> None:
    with smtp_server(tls="starttls", auth=("relay-user", "s3cret")) as server:
        send_one(server.settings(), SENDER, ANA, digest(), tls_context=server.client_context)
        [received] = server.messages
        assert received.tls and received.authenticated


def test_implicit_tls_with_a_trusted_certificate() -> None:
    with smtp_server(tls="tls") as server, SmtpClient(server.settings(), tls_context=server.client_context) as client:
        client.send(SENDER, ANA, digest(ANA))
        client.send(SENDER, BEN, digest(BEN))
        assert all(m.tls for m in server.messages)
        assert server.connections == 1


@pytest.mark.parametrize("security", ["starttls", "tls"])
def test_a_certificate_that_does_not_verify_is_a_configuration_error(security: str) -> None:
    with smtp_server(tls=security) as server:
        with pytest.raises(ConfigError, match="does not verify"):
            send_one(server.settings(), SENDER, ANA, digest())  # the default context does not trust it
        assert server.messages == []


def test_lines_starting_with_a_dot_arrive_intact() -> None:
    message = b"".join(
        (
            b"From: news@news.example.org\r\nTo: ana@example.org\r\nSubject: dots\r\n\r\n",
            b".\r\n",
            b"..\r\n",
            b".leading dot\r\n",
            b"middle . dot\r\n",
            b"..two leading dots",  # and no line end: the client adds one, as smtplib does
        )
    )
    with smtp_server() as server:
        send_one(server.settings(), SENDER, ANA, message)
        [received] = server.messages
    assert received.data == message + b"\r\n"

    text = "Line one\n.hidden line\n..two\n.\nend\n"
    with smtp_server() as server:
        send_one(server.settings(), SENDER, ANA, digest(text=text))
        [received] = server.messages
    body = received.parsed().get_body(("plain",))
    assert body is not None and body.get_content().replace("\r\n", "\n") == text


def test_the_data_payload_is_stuffed_as_smtplib_stuffs_it() -> None:
    quote_periods = smtplib._quote_periods  # type: ignore[attr-defined]
    for message in (b"a\r\n.b\r\n", b".\r\n", b"x", b"..\r\n.\r\n", b"line\r\n"):
        expected = quote_periods(message)
        if expected[-2:] != b"\r\n":
            expected += b"\r\n"
        assert data_payload(message) == expected + b".\r\n"


def test_an_internationalised_address() -> None:
    with smtp_server() as server:
        send_one(server.settings(), SENDER, "josé@example.org", digest())
        assert len(server.received_for("josé@example.org")) == 1


@pytest.mark.parametrize(
    "recipient", ["ana@example.org\r\nRCPT TO:<x@evil.example>", "Ana <ana@example.org>", "no-at-sign", ""]
)
def test_a_malformed_recipient_is_refused_before_anything_is_sent(recipient: str) -> None:
    with smtp_server() as server, SmtpClient(server.settings()) as client:
        with pytest.raises(PermanentDeliveryError) as caught:
            client.send(SENDER, recipient, digest())
        one_line(caught.value)
        assert server.connections == 0


def test_a_malformed_sender_is_a_configuration_error() -> None:
    with smtp_server() as server, pytest.raises(ConfigError):
        send_one(server.settings(), "bounces@example.org\nX: y", ANA, digest())


def test_a_connection_the_server_dropped_while_idle_is_replaced() -> None:
    with smtp_server() as server, SmtpClient(server.settings()) as client:
        client.send(SENDER, ANA, digest(ANA))
        server.disconnect_all()

        client.send(SENDER, BEN, digest(BEN))

        assert [m.connection for m in server.messages] == [1, 2]


def test_an_idle_connection_is_checked_with_noop(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(smtp_module, "IDLE_CHECK_SECONDS", 0.0)
    with smtp_server() as server, SmtpClient(server.settings()) as client:
        client.send(SENDER, ANA, digest(ANA))
        client.send(SENDER, BEN, digest(BEN))
        server.disconnect_all()
        client.send(SENDER, ANA, digest(ANA))

        assert [m.connection for m in server.messages] == [1, 1, 2]


def test_clients_in_several_threads_at_once() -> None:
    errors: list[BaseException] = []

    def work(number: int) -> None:
        try:
            with SmtpClient(server.settings()) as client:
                for index in range(5):
                    client.send(SENDER, f"reader{number}.{index}@example.org", digest())
        except DeliveryError as error:
            errors.append(error)

    with smtp_server(discard=True) as server:
        threads = [threading.Thread(target=work, args=(number,)) for number in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert server.wait_for(20, timeout=5)
        assert errors == []
        assert server.accepted == 20 and server.messages == []
        assert server.connections == 4


def test_no_error_message_holds_a_line_break() -> None:
    reply = "550-5.1.1 first line\r\n550 5.1.1 second line"
    with (
        smtp_server(reject=[ANA], reject_reply=reply) as server,
        SmtpClient(server.settings()) as client,
        pytest.raises(PermanentDeliveryError) as caught,
    ):
        client.send(SENDER, ANA, digest(ANA))
    assert re.search(r"first line 5\.1\.1 second line$", one_line(caught.value))
