"""Whose problem a refusal is (``syndication.core.bounces``): the relay's reply at each stage, and a later report."""

from __future__ import annotations

import pytest

from syndication.core.bounces import Fault, Stage, enhanced_status, reported_fault, smtp_fault


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ("5.1.1 No such user", "5.1.1"),
        ("5.1.10 Null MX", "5.1.10"),
        ("  4.4.7 Delivery time expired", "4.4.7"),
        ("2.0.0 Ok: queued", "2.0.0"),
        ("5.7.1\nsecond line", "5.7.1"),
        ("No space left on device", None),
        ("550 5.1.1 the code itself is not the reply's text", None),
        ("5.1.1.2 not a code", None),
        ("3.1.1 not a class", None),
        ("", None),
    ],
)
def test_the_enhanced_status_a_reply_starts_with(reply: str, expected: str | None) -> None:
    assert enhanced_status(reply) == expected


@pytest.mark.parametrize(
    ("stage", "reply", "expected"),
    [
        # Before RCPT TO nothing was said about the recipient: every refusal there is the sending side's.
        (Stage.CONNECT, "554 5.7.1 No SMTP service here", Fault.SENDING_SIDE),
        (Stage.GREETING, "550 5.7.1 Go away", Fault.SENDING_SIDE),
        (Stage.STARTTLS, "554 5.7.3 TLS not available", Fault.SENDING_SIDE),
        (Stage.AUTH, "535 5.7.8 Authentication credentials invalid", Fault.SENDING_SIDE),
        (Stage.MAIL, "550 5.7.1 Sender address rejected", Fault.SENDING_SIDE),
        (Stage.MAIL, "530 5.7.0 Authentication required", Fault.SENDING_SIDE),
        (Stage.MAIL, "550 5.1.1 even a code that names an address", Fault.SENDING_SIDE),
        # RCPT TO: the address, the mailbox, or still our side.
        (Stage.RCPT, "550 5.1.1 User unknown", Fault.ADDRESS),
        (Stage.RCPT, "550 5.1.10 Null MX", Fault.ADDRESS),
        (Stage.RCPT, "550 5.2.1 Mailbox disabled", Fault.ADDRESS),
        (Stage.RCPT, "553 5.1.3 Bad destination address syntax", Fault.ADDRESS),
        (Stage.RCPT, "550 5.1.8 Some other trouble with the address", Fault.ADDRESS),
        (Stage.RCPT, "552 5.2.2 Mailbox full", Fault.MAILBOX),
        (Stage.RCPT, "554 5.7.1 Relay access denied", Fault.SENDING_SIDE),
        (Stage.RCPT, "550 5.7.1 Relaying denied", Fault.SENDING_SIDE),
        (Stage.RCPT, "550 5.4.1 Recipient address rejected: access denied", Fault.SENDING_SIDE),
        (Stage.RCPT, "550 User unknown", Fault.ADDRESS),  # no enhanced code: the classic "no such user"
        (Stage.RCPT, "551 User not local", Fault.ADDRESS),
        (Stage.RCPT, "552 Mailbox full", Fault.MAILBOX),
        (Stage.RCPT, "554 Transaction failed", Fault.SENDING_SIDE),
        # DATA and the message: about the message, unless the reply names the address or the mailbox.
        (Stage.DATA, "554 5.7.1 Message refused", Fault.SENDING_SIDE),
        (Stage.DATA, "554 Transaction failed", Fault.SENDING_SIDE),
        (Stage.MESSAGE, "554 5.7.1 Spam content refused", Fault.SENDING_SIDE),
        (Stage.MESSAGE, "500 Error: No space left on device", Fault.SENDING_SIDE),
        (Stage.MESSAGE, "552 5.3.4 Message too big", Fault.SENDING_SIDE),
        (Stage.MESSAGE, "550 5.1.1 No such user", Fault.ADDRESS),
        (Stage.MESSAGE, "552 5.2.2 Over quota", Fault.MAILBOX),
        (Stage.MESSAGE, "550 Rejected", Fault.SENDING_SIDE),
        # Temporary, at any stage.
        (Stage.MAIL, "450 4.7.1 Greylisted", Fault.TEMPORARY),
        (Stage.RCPT, "450 Mailbox busy", Fault.TEMPORARY),
        (Stage.RCPT, "452 4.2.2 Mailbox full for now", Fault.TEMPORARY),
        (Stage.MESSAGE, "451 4.3.0 Try again later", Fault.TEMPORARY),
        (Stage.CONNECT, "421 4.3.2 Service not available", Fault.TEMPORARY),
        (Stage.RCPT, "550 4.2.2 a 5xx whose enhanced code says temporary", Fault.TEMPORARY),
    ],
)
def test_whose_problem_a_reply_is(stage: Stage, reply: str, expected: Fault) -> None:
    code, text = int(reply[:3]), reply[4:]
    assert smtp_fault(code, enhanced_status(text), stage) is expected


def test_no_reply_at_all_is_temporary() -> None:
    assert smtp_fault(-1, None, Stage.MESSAGE) is Fault.TEMPORARY
    assert smtp_fault(0, None, Stage.RCPT) is Fault.TEMPORARY


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ("5.1.1", Fault.ADDRESS),
        ("5.1.10", Fault.ADDRESS),
        ("5.2.1", Fault.ADDRESS),
        ("5.2.2", Fault.MAILBOX),
        ("5.7.1", Fault.MAILBOX),  # the recipient's own server refused it: counts, slowly, against the address
        ("4.4.7", Fault.MAILBOX),
        ("4.2.2", Fault.MAILBOX),
        ("2.0.0", None),
        (" 5.1.1 ", Fault.ADDRESS),
        ("5.1", None),
        ("x.1.1", None),
        ("", None),
    ],
)
def test_what_a_later_report_says(status: str, expected: Fault | None) -> None:
    assert reported_fault(status) is expected
