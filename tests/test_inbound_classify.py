"""One parser for every incoming message: each real-world format in tests/inbound/ is what it is, garbage is nothing.

The corpus holds a message of each kind the bounce address and the List-Unsubscribe mailto address receive: RFC 3464
DSNs as Postfix, Exim, Microsoft Exchange Online, Gmail and Sendmail write them (a user unknown, a mailbox full, a
delay), the non-standard plain-text bounces of Exim and qmail that only flufl.bounce recognises, ARF complaints
(RFC 5965) with and without Original-Rcpt-To, an Exchange out-of-office reply and a mailto unsubscribe request.
Every original in it is ours: From news@example.org, a Message-ID <edition-…@news.example.org>, sent from a VERP
address bounces+TOKEN@news.example.org.
"""

from __future__ import annotations

import base64
import random
from dataclasses import dataclass
from pathlib import Path

import pytest

from syndication.core.bounces import Fault
from syndication.inbound import classify
from syndication.inbound.classify import DIAGNOSTIC_CHARS, InboundReport, MessageKind, classify_message

CORPUS = Path(__file__).parent / "inbound"
UNSUBSCRIBE = "unsubscribe@news.example.org"


@dataclass(frozen=True)
class Expected:
    kind: MessageKind
    failed: tuple[tuple[str, str, Fault], ...] = ()
    original: str | None = None
    verp: str | None = None  # the VERP address addressed_to must hold
    complainant: str | None = None
    sender: str | None = None
    has_message_id: bool = True  # qmail's bounces have no Message-ID of their own


EXPECTED = {
    "postfix-user-unknown.eml": Expected(
        MessageKind.DSN,
        (("ana@example.org", "5.1.1", Fault.ADDRESS),),
        "<edition-3.17.abcdef123456@news.example.org>",
        "bounces+2s-k3j5l2m4n6p7q@news.example.org",
    ),
    # Exim says only "Status: 5.0.0": the 5.1.1 of its Diagnostic-Code makes it a hard bounce.
    "exim-dsn.eml": Expected(
        MessageKind.DSN,
        (("bruno@example.net", "5.1.1", Fault.ADDRESS),),
        "<edition-3.18.0f1e2d3c4b5a@news.example.org>",
        "bounces+5k-r2d2c3p0bb8xy@news.example.org",
    ),
    # Not RFC 3464: flufl.bounce finds the address; permanent and without an enhanced status, a hard bounce.
    "exim-plain.eml": Expected(
        MessageKind.DSN,
        (("carla@oldhost.example.co.uk", "", Fault.ADDRESS),),
        "<edition-3.19.1a2b3c4d5e6f@news.example.org>",
        "bounces+7q-m3n4b5v6c7x8z@news.example.org",
    ),
    "qmail-plain.eml": Expected(
        MessageKind.DSN,
        (("dario@smallisp.example.com", "5.1.1", Fault.ADDRESS),),
        "<edition-3.20.aa11bb22cc33@news.example.org>",
        "bounces+9z-h6g5f4d3s2a1q@news.example.org",
        has_message_id=False,
    ),
    "exchange-online-ndr.eml": Expected(
        MessageKind.DSN,
        (("elena@contoso.example.com", "5.1.10", Fault.ADDRESS),),
        "<edition-3.21.fedcba987654@news.example.org>",
        "bounces+b4-w8e7r6t5y4u3i@news.example.org",
    ),
    "gmail-dsn.eml": Expected(
        MessageKind.DSN,
        (("fiona.nonexistent@gmail.com", "5.1.1", Fault.ADDRESS),),
        "<edition-3.22.123abc456def@news.example.org>",
        "bounces+c9-l0k9j8h7g6f5d@news.example.org",
    ),
    "sendmail-mailbox-full.eml": Expected(
        MessageKind.DSN,
        (("gianni@university.example.edu", "5.2.2", Fault.MAILBOX),),
        "<edition-3.23.987fed654cba@news.example.org>",
        "bounces+d2-p1o2i3u4y5t6r@news.example.org",
    ),
    # Action: delayed is no failure: a DSN that fails nobody.
    "postfix-delayed.eml": Expected(
        MessageKind.DSN,
        (),
        "<edition-3.24.5a5b5c5d5e5f@news.example.org>",
        "bounces+e5-z9x8c7v6b5n4m@news.example.org",
    ),
    "arf-complaint.eml": Expected(
        MessageKind.COMPLAINT,
        original="<edition-3.25.c0ffee123456@news.example.org>",
        complainant="ines@mailprovider.example",
    ),
    # No Original-Rcpt-To: the complainant is the embedded message's To.
    "arf-complaint-no-rcpt.eml": Expected(
        MessageKind.COMPLAINT,
        original="<edition-3.25.c0ffee654321@news.example.org>",
        complainant="jonas@bigmail.example",
    ),
    "out-of-office.eml": Expected(
        MessageKind.AUTO_REPLY,
        original="<edition-3.26.0badcafe0123@news.example.org>",
        verp="bounces+h6-k1l2z3x4c5v6b@news.example.org",
        sender="karin@fabrikam.example.com",
    ),
    "unsubscribe-request.eml": Expected(MessageKind.UNSUBSCRIBE, verp=UNSUBSCRIBE, sender="laura@example.com"),
}


def corpus(name: str) -> bytes:
    return (CORPUS / name).read_bytes()


def classified(raw: bytes, **keywords: object) -> InboundReport:
    keywords.setdefault("unsubscribe_addresses", [UNSUBSCRIBE])
    return classify_message(raw, **keywords)  # type: ignore[arg-type]


def test_every_message_of_the_corpus_has_its_expectation() -> None:
    assert sorted(path.name for path in CORPUS.glob("*.eml")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_real_world_format_is_read_for_what_it_is(name: str) -> None:
    expected = EXPECTED[name]
    report = classified(corpus(name))

    assert report.kind is expected.kind, report.summary
    assert [(item.address, item.status, item.fault) for item in report.failed] == list(expected.failed)
    assert report.original_message_id == expected.original
    assert report.complainant == expected.complainant
    if expected.verp is not None:
        assert expected.verp in report.addressed_to
    if expected.sender is not None:
        assert report.sender == expected.sender
    assert (report.message_id is not None) is expected.has_message_id
    for item in report.failed:
        assert item.diagnostic and "\n" not in item.diagnostic and len(item.diagnostic) <= DIAGNOSTIC_CHARS


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_the_fast_reading_of_a_report_agrees_with_the_whole_parse(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    fast = classified(corpus(name))
    monkeypatch.setattr(classify, "_report_parts", lambda raw: None)
    assert classified(corpus(name)) == fast


def test_the_summaries_say_what_happened_on_one_line() -> None:
    assert classified(corpus("postfix-user-unknown.eml")).summary == (
        "DSN from Postfix: 1 failed (ana@example.org 5.1.1)"
    )
    assert classified(corpus("exchange-online-ndr.eml")).summary == (
        "DSN from Microsoft Exchange: 1 failed (elena@contoso.example.com 5.1.10)"
    )
    assert classified(corpus("gmail-dsn.eml")).summary.startswith("DSN from Gmail: 1 failed")
    assert classified(corpus("exim-dsn.eml")).summary.startswith("DSN from Exim: 1 failed")
    assert classified(corpus("postfix-delayed.eml")).summary == "DSN from Postfix: 0 failed, 1 delayed"
    assert "ines@mailprovider.example" in classified(corpus("arf-complaint.eml")).summary
    for name in EXPECTED:
        summary = classified(corpus(name)).summary
        assert summary and "\n" not in summary and len(summary) <= 300


def test_the_diagnostic_is_the_diagnostic_code_or_the_bounce_s_own_words() -> None:
    (postfix,) = classified(corpus("postfix-user-unknown.eml")).failed
    assert postfix.diagnostic == (
        "550 5.1.1 <ana@example.org>: Recipient address rejected: User unknown in virtual mailbox table"
    )
    (qmail,) = classified(corpus("qmail-plain.eml")).failed
    assert qmail.diagnostic == "Sorry, no mailbox here by that name. (#5.1.1)"
    (exim,) = classified(corpus("exim-plain.eml")).failed
    assert exim.diagnostic.endswith("550 unknown user")


def test_addressed_to_lists_the_envelope_first_then_the_headers_lower_cased_once() -> None:
    report = classified(
        corpus("postfix-user-unknown.eml"),
        envelope_recipients=["<Bounces+2S-K3J5L2M4N6P7Q@News.Example.Org>", "other@news.example.org"],
    )
    assert report.addressed_to == ("bounces+2s-k3j5l2m4n6p7q@news.example.org", "other@news.example.org")


# DSN details ---------------------------------------------------------------------------------------------------


def dsn(*recipient_blocks: str, original: str = "<edition-9.1.aaaa@news.example.org>", encoding: str = "") -> bytes:
    """A minimal RFC 3464 report with these per-recipient blocks."""
    status = "Reporting-MTA: dns; mx.example.net\n\n" + "\n\n".join(recipient_blocks) + "\n"
    if encoding == "base64":
        status_part = (
            "Content-Type: message/delivery-status\nContent-Transfer-Encoding: base64\n\n"
            + base64.encodebytes(status.encode()).decode()
        )
    else:
        status_part = "Content-Type: message/delivery-status\n\n" + status
    return (
        "From: MAILER-DAEMON@mx.example.net\n"
        "To: bounces+1-abcdefghijklm@news.example.org\n"
        "Subject: Delivery report\n"
        "Message-ID: <report-1@mx.example.net>\n"
        "MIME-Version: 1.0\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="XYZ"\n\n'
        "--XYZ\nContent-Type: text/plain\n\nSee below.\n\n"
        f"--XYZ\n{status_part}\n"
        "--XYZ\nContent-Type: text/rfc822-headers\n\n"
        f"From: news@example.org\nMessage-ID: {original}\n\n"
        "--XYZ--\n"
    ).encode()


def test_only_failed_recipients_are_failures_whatever_else_the_dsn_reports() -> None:
    report = classified(
        dsn(
            "Final-Recipient: rfc822; one@example.net\nAction: failed\nStatus: 5.1.1",
            "Final-Recipient: rfc822; two@example.net\nAction: delayed\nStatus: 4.4.1",
            "Final-Recipient: rfc822; three@example.net\nAction: delivered\nStatus: 2.0.0",
            "Final-Recipient: rfc822; four@example.net\nAction: relayed\nStatus: 2.0.0",
            "Final-Recipient: rfc822; five@example.net\nAction: expanded\nStatus: 2.0.0",
            "Final-Recipient: rfc822; Six@Example.NET\nAction: failed\nStatus: 5.2.2 (mailbox full)",
        )
    )
    assert report.kind is MessageKind.DSN
    assert [(item.address, item.status, item.fault) for item in report.failed] == [
        ("one@example.net", "5.1.1", Fault.ADDRESS),
        ("six@example.net", "5.2.2", Fault.MAILBOX),
    ]
    assert report.original_message_id == "<edition-9.1.aaaa@news.example.org>"
    assert "2 failed" in report.summary and "1 delayed" in report.summary


def test_the_original_recipient_is_the_address_we_sent_to() -> None:
    (item,) = classified(
        dsn(
            "Original-Recipient: rfc822;ana@example.org\nFinal-Recipient: rfc822; ana.real@mail.example.org\n"
            "Action: failed\nStatus: 5.1.1"
        )
    ).failed
    assert item.address == "ana@example.org"


@pytest.mark.parametrize(
    ("block", "status", "fault"),
    [
        # Retries ran out: a failure with a temporary status is a soft bounce.
        (
            "Action: failed\nStatus: 4.4.7\nDiagnostic-Code: X-Postfix; delivery temporarily suspended",
            "4.4.7",
            Fault.MAILBOX,
        ),
        # Refused by the recipient's server for policy: the core's rule makes it soft, never hard.
        (
            "Action: failed\nStatus: 5.7.1\nDiagnostic-Code: smtp; 550 5.7.1 Message rejected as spam",
            "5.7.1",
            Fault.MAILBOX,
        ),
        # No status at all, failed for good: hard.
        ("Action: failed", "", Fault.ADDRESS),
        # No status, a 552 in the diagnostic: the mailbox.
        ("Action: failed\nDiagnostic-Code: smtp; 552 Quota exceeded", "", Fault.MAILBOX),
        # A status in the diagnostic only.
        ("Action: failed\nDiagnostic-Code: smtp; 550 5.1.1 No such user", "5.1.1", Fault.ADDRESS),
        # OpenSMTPD's "error" is a failure too.
        ("Action: error\nStatus: 5.1.1", "5.1.1", Fault.ADDRESS),
    ],
)
def test_each_failure_s_fault_follows_its_status(block: str, status: str, fault: Fault) -> None:
    (item,) = classified(dsn(f"Final-Recipient: rfc822; x@example.net\n{block}")).failed
    assert (item.status, item.fault) == (status, fault)


def test_a_transfer_encoded_delivery_status_is_read_all_the_same() -> None:
    report = classified(dsn("Final-Recipient: rfc822; x@example.net\nAction: failed\nStatus: 5.1.1", encoding="base64"))
    assert [(item.address, item.status) for item in report.failed] == [("x@example.net", "5.1.1")]


def test_a_long_diagnostic_is_cut_to_one_line() -> None:
    long = "smtp; 550 5.1.1 " + " ".join(["word"] * 200)
    (item,) = classified(
        dsn(f"Final-Recipient: rfc822; x@example.net\nAction: failed\nStatus: 5.1.1\nDiagnostic-Code: {long}")
    ).failed
    assert len(item.diagnostic) == DIAGNOSTIC_CHARS and "\n" not in item.diagnostic


# Complaints, auto-replies, unsubscribe requests --------------------------------------------------------------------


@pytest.mark.parametrize("feedback_type", ["not-spam", "auth-failure"])
def test_arf_reports_that_are_no_complaint_are_kept_as_unrecognised(feedback_type: str) -> None:
    raw = corpus("arf-complaint.eml").replace(b"Feedback-Type: abuse", f"Feedback-Type: {feedback_type}".encode())
    report = classified(raw)
    assert report.kind is MessageKind.UNRECOGNISED
    assert report.complainant is None
    assert report.original_message_id == "<edition-3.25.c0ffee123456@news.example.org>"
    assert "not a complaint" in report.summary


@pytest.mark.parametrize("feedback_type", ["fraud", "virus", "other"])
def test_other_feedback_types_are_complaints(feedback_type: str) -> None:
    raw = corpus("arf-complaint.eml").replace(b"Feedback-Type: abuse", f"Feedback-Type: {feedback_type}".encode())
    assert classified(raw).kind is MessageKind.COMPLAINT


def plain(headers: str, body: str = "Hello.\n") -> bytes:
    return (f"From: Someone <someone@example.com>\nMessage-ID: <m1@example.com>\n{headers}\n\n{body}").encode()


@pytest.mark.parametrize(
    "headers",
    [
        "To: bounces+1-abc@news.example.org\nSubject: Re: the week\nAuto-Submitted: auto-replied (vacation)",
        "To: bounces+1-abc@news.example.org\nSubject: Re: the week\nX-Autoreply: yes",
        "To: bounces+1-abc@news.example.org\nSubject: Re: the week\nX-Autorespond: yes",
        "To: bounces+1-abc@news.example.org\nSubject: Re: the week\nPrecedence: auto_reply",
        "To: bounces+1-abc@news.example.org\nSubject: Re: the week\nX-Auto-Response-Suppress: All",
        "To: bounces+1-abc@news.example.org\nSubject: Automatic reply: the week",
        "To: bounces+1-abc@news.example.org\nSubject: Out of Office: back on Monday",
        "To: bounces+1-abc@news.example.org\nSubject: =?utf-8?q?Out_of_Office=3A_back_soon?=",
    ],
)
def test_automatic_replies_are_recognised_and_nothing_more(headers: str) -> None:
    report = classified(plain(headers))
    assert report.kind is MessageKind.AUTO_REPLY
    assert report.failed == ()


def test_an_auto_generated_notice_is_not_an_auto_reply() -> None:
    report = classified(
        plain("To: bounces+1-abc@news.example.org\nSubject: Your ticket\nAuto-Submitted: auto-generated")
    )
    assert report.kind is MessageKind.UNRECOGNISED


def test_a_message_to_the_unsubscribe_address_is_a_request_whatever_it_says() -> None:
    report = classified(plain(f"To: {UNSUBSCRIBE}\nSubject: please stop", "I moved.\n"))
    assert (report.kind, report.sender) == (MessageKind.UNSUBSCRIBE, "someone@example.com")
    # The envelope alone (Bcc, a forward), any case, with a +detail: the same.
    for envelope in (["UNSUBSCRIBE@news.example.org"], ["unsubscribe+42@news.example.org"]):
        report = classified(plain("To: friends@example.com\nSubject: hello"), envelope_recipients=envelope)
        assert report.kind is MessageKind.UNSUBSCRIBE
    # Without the service's unsubscribe addresses, nothing says it is one.
    assert classified(corpus("unsubscribe-request.eml"), unsubscribe_addresses=()).kind is MessageKind.UNRECOGNISED


def test_an_auto_reply_or_a_bounce_to_the_unsubscribe_address_is_no_request() -> None:
    auto = classified(plain(f"To: {UNSUBSCRIBE}\nSubject: unsubscribe\nAuto-Submitted: auto-replied"))
    assert auto.kind is MessageKind.AUTO_REPLY
    bounce = classified(corpus("postfix-user-unknown.eml"), envelope_recipients=[UNSUBSCRIBE])
    assert bounce.kind is MessageKind.DSN
    plain_bounce = classified(corpus("exim-plain.eml"), envelope_recipients=[UNSUBSCRIBE])
    assert plain_bounce.kind is MessageKind.DSN


# Garbage -----------------------------------------------------------------------------------------------------------


def _garbage() -> dict[str, bytes]:
    rng = random.Random(3464)
    headers = b"From: someone@example.com\r\nTo: bounces+1-abc@news.example.org\r\nSubject: x\r\n"
    return {
        "empty": b"",
        "whitespace": b" \r\n\r\n\t",
        "binary": bytes(range(256)) * 40,
        "10 MB of random bytes": rng.randbytes(10 * 1024 * 1024),
        "text without headers": b"Hello, please take me off your list.\n" * 50,
        "a PNG": b"\x89PNG\r\n\x1a\n" + rng.randbytes(5000),
        "NUL bytes among the headers": b"From: a@example.com\r\nX-Junk: \x00\x00\x00\r\n\r\nbody",
        "headers and 10 MB of random body": headers + b"\r\n" + rng.randbytes(10 * 1024 * 1024),
        "headers and one 10 MB line": headers + b"\r\n" + b"A" * (10 * 1024 * 1024),
        "headers only, no body": headers,
        "a multipart without a boundary": headers + b"Content-Type: multipart/mixed\r\n\r\n--x\r\n\r\nhello\r\n",
        "a report whose parts never end": headers
        + b'Content-Type: multipart/report; report-type=delivery-status; boundary="b"\r\n\r\n--b\r\n'
        + b"Content-Type: message/delivery-status\r\n\r\n"
        + rng.randbytes(4000),
        "multiparts nested 5000 deep": headers
        + b"".join(f'Content-Type: multipart/mixed; boundary="b{i}"\r\n\r\n--b{i}\r\n'.encode() for i in range(5000)),
        "8-bit headers in no charset": b"From: \xff\xfe <\xe9@example.com>\r\nSubject: \xc3\x28\xa0\xa1\r\n\r\nbody",
        "a broken encoded word": b"From: a@example.com\r\nSubject: =?x-unknown?b?!!!?=\r\n\r\nbody",
    }


GARBAGE = _garbage()


@pytest.mark.parametrize("name", sorted(GARBAGE))
def test_garbage_is_unrecognised_and_never_raises(name: str) -> None:
    report = classified(GARBAGE[name], envelope_recipients=["bounces+1-abc@news.example.org"])
    assert report.kind is MessageKind.UNRECOGNISED, report.summary
    assert report.failed == ()
    assert report.complainant is None
    assert report.summary.startswith("Unrecognised") and "\n" not in report.summary
    assert report.addressed_to[0] == "bounces+1-abc@news.example.org"
