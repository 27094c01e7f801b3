"""What one incoming message is, and what it reports: the one parser for every way a message comes in.

:func:`classify_message` takes the bytes of a message sent to the bounce address (or to the ``List-Unsubscribe``
mailto address) and returns an :class:`InboundReport`. It is pure (the standard library's ``email`` package and
flufl.bounce, nothing else) and never raises: whatever it cannot read is :attr:`MessageKind.UNRECOGNISED`, with a
summary saying why, so that an intake can keep it and report it.

What decides the kind, in this order:

1. No header section at all (binary, random bytes, plain text without a header line, NUL bytes among the headers):
   UNRECOGNISED, without parsing further. Only the first :data:`PARSED_BYTES` of a message are parsed: the parts a
   report is read from come first, and a 10 MB message is then no slower than a 1 MB one.
2. A delivery status notification, RFC 3464: a ``message/delivery-status`` part (in a ``multipart/report;
   report-type=delivery-status``, or wherever a non-conforming MTA put it): DSN. Each recipient block whose
   ``Action`` is ``failed`` is a :class:`FailedRecipient`; ``delayed``, ``delivered``, ``relayed`` and ``expanded``
   are not failures. A ``Status`` that says only its class (``5.0.0``, Exim's and Gmail's habit) is made precise by
   the enhanced code in the ``Diagnostic-Code`` when that has one of the same class (``550 5.1.1 ...``). A
   report that names no recipient at all is not taken for a DSN: the steps below decide.
3. A feedback report, RFC 5965 (``message/feedback-report``): COMPLAINT for the ``Feedback-Type`` values ``abuse``,
   ``fraud``, ``virus``, ``other`` (and any unknown one). Two kinds of ARF report are not complaints and are
   UNRECOGNISED, with a summary naming them: ``not-spam`` (RFC 6430: a recipient said the message was *not*
   spam) and ``auth-failure`` (RFC 6591: a DMARC/DKIM/SPF failure report, about our signing, not the recipient).
4. A non-standard bounce that flufl.bounce (Mailman's detectors: Exim's plain bounces, qmail, old Exchange,
   Yahoo...) recognises: DSN. Its permanent failures are hard (``Fault.ADDRESS``) unless the bounce's explanation
   carries an enhanced status that says otherwise; its temporary ones are warnings that delivery is still being
   tried, not failures, exactly like a DSN's ``Action: delayed`` (they are counted in the summary only). flufl
   runs only on the first :data:`FLUFL_BYTES` of a message: its heuristic regular expressions are line-by-line.
5. An automatic reply (RFC 3834 ``Auto-Submitted: auto-replied``, ``X-Autoreply``, ``X-Autorespond``,
   ``Precedence: auto_reply``, Exchange's ``X-Auto-Response-Suppress``, "Automatic reply:" and "Out of Office"
   subjects): AUTO_REPLY. A DSN is often marked ``auto-replied`` too (Postfix's are); it is a DSN all the same,
   because steps 2 and 4 come first.
6. A message addressed (envelope, ``Delivered-To``, ``X-Original-To``, ``Envelope-To`` or ``To``) to one of the
   ``unsubscribe_addresses``, compared without case and also without a ``+detail`` (``unsubscribe+x@`` is
   ``unsubscribe@``): UNSUBSCRIBE, whatever its subject or body; ``sender`` is who asks.
7. Anything else: UNRECOGNISED.
"""

from __future__ import annotations

import binascii
import quopri
import re
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from email.header import Header, decode_header, make_header
from email.message import Message
from email.parser import BytesHeaderParser, BytesParser, HeaderParser
from email.policy import compat32
from enum import StrEnum

from flufl.bounce import all_failures

from syndication.core.bounces import Fault, reported_fault

#: How much of a message is parsed at most. The report parts of a DSN or an ARF report come before the returned
#: message; what lies beyond is never needed, and parsing it would only cost time.
PARSED_BYTES = 1024 * 1024
#: How much of a message flufl.bounce's heuristics see at most (it runs dozens of regular expressions per line).
FLUFL_BYTES = 128 * 1024
#: The longest diagnostic kept, in characters.
DIAGNOSTIC_CHARS = 300
_SUMMARY_CHARS = 300


class MessageKind(StrEnum):
    """What an incoming message is."""

    DSN = "dsn"
    COMPLAINT = "complaint"
    UNSUBSCRIBE = "unsubscribe"
    AUTO_REPLY = "auto-reply"
    UNRECOGNISED = "unrecognised"


@dataclass(frozen=True)
class FailedRecipient:
    """One recipient a bounce says a message could not be delivered to."""

    #: The address, lower-cased (the DSN's Original-Recipient when it gives an rfc822 one, else Final-Recipient).
    address: str
    #: The enhanced status code (``"5.1.1"``), or ``""`` when the report gives none.
    status: str
    #: Whose problem it is: ``Fault.ADDRESS`` (a hard bounce) or ``Fault.MAILBOX`` (a soft one).
    fault: Fault
    #: One line, at most 300 characters: the Diagnostic-Code, or the bounce's explanation.
    diagnostic: str


@dataclass(frozen=True)
class InboundReport:
    """What :func:`classify_message` found in one message."""

    kind: MessageKind
    #: DSN: each recipient whose delivery failed (delays and successes are not failures).
    failed: tuple[FailedRecipient, ...]
    #: COMPLAINT: the recipient who complained (ARF Original-Rcpt-To, else the embedded message's To).
    complainant: str | None
    #: The Message-ID (with its angle brackets) of our message this one reports on, when it carries it.
    original_message_id: str | None
    #: Where this message was sent: the envelope recipients given, then Delivered-To, X-Original-To, Envelope-To
    #: and To; lower-cased, each once. VERP addresses (``bounces+TOKEN@domain``) are read from these.
    addressed_to: tuple[str, ...]
    #: The From address, lower-cased (UNSUBSCRIBE: who asks to leave).
    sender: str | None
    #: This message's own Message-ID.
    message_id: str | None
    #: One line for records and listings: ``"DSN from Postfix: 1 failed (ana@example.org 5.1.1)"``.
    summary: str


# Parsers are made once: compat32 keeps header values as plain strings, which is several times faster than the
# header objects of email.policy.default, and flufl.bounce expects email.message.Message objects anyway.
_PARSER = BytesParser(policy=compat32)
_HEADER_PARSER = HeaderParser(policy=compat32)
_BYTES_HEADER_PARSER = BytesHeaderParser(policy=compat32)

# The first line of a message: a header field name and its colon (RFC 5322 §2.2), or an mbox "From " line.
_FIRST_LINE = re.compile(rb"(?:[\x21-\x39\x3b-\x7e]{1,200}:|From )")
_HEADER_END = re.compile(rb"\r?\n\r?\n")
# An RFC 3463 enhanced status code anywhere in a text.
_STATUS = re.compile(r"(?<![\d.])([245])\.(\d{1,3})\.(\d{1,3})(?![\d.])")
# An SMTP reply code at the start of a diagnostic ("550 5.1.1 ...", "550-5.1.1 ...").
_REPLY_CODE = re.compile(r"^\s*([245]\d\d)(?:[\s-]|$)")
_MESSAGE_ID = re.compile(r"<[^<>\s]+>")
_BLOCK_SEPARATOR = re.compile(r"\r?\n[ \t]*\r?\n")
_BYTES_BLOCK_SEPARATOR = re.compile(rb"\r?\n[ \t]*\r?\n")
# One header field and its continuation lines.
_FIELD = re.compile(r"^([\x21-\x39\x3b-\x7e]+)[ \t]*:(.*(?:\r?\n[ \t].*)*)", re.MULTILINE)
_AUTO_SUBJECT = re.compile(
    r"^\s*(?:automatic reply|auto(?:matic)?[- ]?(?:reply|response|antwort)|autoreply|abwesenheitsnotiz"
    r"|r[ée]ponse automatique|respuesta autom[áa]tica)\b|\bout of (?:the )?office\b",
    re.IGNORECASE,
)
# Where the copy of the original message starts in a plain-text bounce: the explanation ends there.
_ORIGINAL_FOLLOWS = re.compile(
    r"^\s*-{2,}.*\b(?:original|copy|returned|undelivered)\b|^\s*(?:original message|returned message)\b",
    re.IGNORECASE | re.MULTILINE,
)
# An address in angle brackets, or a bare one, in a header's value without its comments and quoted names.
_ADDRESS_TOKEN = re.compile(r"<\s*([^<>\s]+@[^<>\s]+?)\s*>|([^\s<>,;:()\"]+@[^\s<>,;:()\"]+)")
_COMMENT_OR_QUOTED = re.compile(r'\([^()]*\)|"(?:[^"\\]|\\.)*"')
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")
_STATUS_PART_TYPES = {"message/delivery-status", "message/global-delivery-status"}
_FEEDBACK_PART_TYPES = {"message/feedback-report"}
_ORIGINAL_PART_TYPES = {
    "message/rfc822",
    "message/global",
    "text/rfc822-headers",
    "message/rfc822-headers",
    "message/global-headers",
}
_HARDNESS = {Fault.ADDRESS: "hard", Fault.MAILBOX: "soft"}
_NOT_COMPLAINTS = {
    "not-spam": "a not-spam report (RFC 6430)",
    "auth-failure": "an authentication failure report (RFC 6591)",
}


def classify_message(
    raw: bytes,
    *,
    envelope_recipients: Sequence[str] = (),
    unsubscribe_addresses: Collection[str] = (),
) -> InboundReport:
    """What ``raw`` (one whole message, as it came in) is and reports; never raises.

    ``envelope_recipients`` are the RCPT TO addresses it arrived with, when known (an LMTP or SMTP delivery);
    ``unsubscribe_addresses`` the ``List-Unsubscribe`` mailto addresses: a message sent to one of them is a
    request to leave. The module's description gives the rules.
    """
    envelope = _unique(_plain_address(address) for address in envelope_recipients)
    try:
        return _classify(raw, envelope, unsubscribe_addresses)
    except Exception as error:  # noqa: BLE001 - the promise: whatever the bytes, an answer and never a crash
        return _unrecognised(envelope, None, None, f"unreadable message ({len(raw)} bytes): {type(error).__name__}")


def _classify(raw: bytes, envelope: tuple[str, ...], unsubscribe_addresses: Collection[str]) -> InboundReport:
    refusal = _not_a_message(raw)
    if refusal is not None:
        return _unrecognised(envelope, None, None, refusal)
    fast = _report_parts(raw)
    if fast is not None:
        msg, parts = fast
    else:
        msg = _PARSER.parsebytes(raw[:PARSED_BYTES])
        parts = _parts_of(msg)
    addressed_to = _unique([*envelope, *_header_addresses(msg, "Delivered-To", "X-Original-To", "Envelope-To", "To")])
    senders = _header_addresses(msg, "From")
    sender = senders[0] if senders else None
    message_id = _message_id(msg.get("Message-ID"))
    if parts.has_status:
        report = _dsn_report(msg, parts, addressed_to, sender, message_id)
        if report is not None:
            return report
    if parts.feedback is not None:
        return _feedback_report(parts.feedback, parts.original, addressed_to, sender, message_id)
    if fast is not None:  # a report without a recipient: read the whole message for what else it may be
        msg = _PARSER.parsebytes(raw[:PARSED_BYTES])
        parts = _parts_of(msg)
    bounce = _flufl_report(msg, raw, parts, addressed_to, sender, message_id)
    if bounce is not None:
        return bounce
    auto_reply = _auto_reply(msg)
    if auto_reply is not None:
        return InboundReport(
            kind=MessageKind.AUTO_REPLY,
            failed=(),
            complainant=None,
            original_message_id=_message_id(msg.get("In-Reply-To")),
            addressed_to=addressed_to,
            sender=sender,
            message_id=message_id,
            summary=_line(f"Auto-reply from {sender or 'an unknown sender'} ({auto_reply}): {_subject(msg)}"),
        )
    unsubscribe = _unsubscribe_address(addressed_to, unsubscribe_addresses)
    if unsubscribe is not None:
        return InboundReport(
            kind=MessageKind.UNSUBSCRIBE,
            failed=(),
            complainant=None,
            original_message_id=None,
            addressed_to=addressed_to,
            sender=sender,
            message_id=message_id,
            summary=_line(f"Unsubscribe request from {sender or 'an unknown sender'} to {unsubscribe}"),
        )
    return _unrecognised(
        addressed_to,
        sender,
        message_id,
        f"not a bounce, complaint or request: from {sender or 'an unknown sender'}, subject {_subject(msg)!r}",
    )


def _not_a_message(raw: bytes) -> str | None:
    """Why ``raw`` is no message at all (no header section), or None when it may be one."""
    if not raw.strip():
        return "empty message"
    if not _FIRST_LINE.match(raw):
        return f"no header section ({len(raw)} bytes)"
    end = _HEADER_END.search(raw, 0, PARSED_BYTES)
    head = raw[: end.start() if end else PARSED_BYTES]
    if b"\x00" in head:
        return f"binary data in the header section ({len(raw)} bytes)"
    return None


class _Parts:
    """What a report is read from: the header blocks of its delivery-status parts, the fields of its first
    feedback-report part, the header section of the original message it returns, and its text parts."""

    def __init__(self) -> None:
        self.status_blocks: list[Message] = []
        self.has_status = False
        self.feedback: Message | None = None
        self.original: Message | None = None
        self.texts: list[Message] = []


def _parts_of(msg: Message) -> _Parts:
    """The parts of a parsed message a report is read from, found without descending into an attached message."""
    parts = _Parts()
    originals: list[Message] = []
    stack = [msg]
    while stack:
        part = stack.pop(0)
        kind = part.get_content_type()
        if part.is_multipart() and part.get_content_maintype() == "multipart":
            payload = part.get_payload()
            if isinstance(payload, list):
                stack[0:0] = [sub for sub in payload if isinstance(sub, Message)]
        elif kind in _STATUS_PART_TYPES:
            parts.has_status = True
            parts.status_blocks.extend(_status_blocks(part))
        elif kind in _FEEDBACK_PART_TYPES:
            parts.feedback = parts.feedback or _feedback_fields(part)
        elif kind in _ORIGINAL_PART_TYPES:
            originals.append(part)
        elif kind == "text/plain" and part is not msg:
            parts.texts.append(part)
    parts.original = next(filter(None, map(_embedded_headers, originals)), None)
    return parts


def _report_parts(raw: bytes) -> tuple[Message, _Parts] | None:
    """The headers and the report parts of a ``multipart/report`` message, read without parsing its other parts.

    The fast way for the common case (the email package's parser costs more than everything else together): the
    top-level headers, each top-level part's headers, the delivery-status or feedback-report fields and the
    returned message's header section are read with one regular expression each; the human-readable parts
    (Exchange's HTML, Gmail's images) and the returned message's body are skipped. None when the message is no
    multipart/report with a report part at its top level, or a part is transfer-encoded: the caller parses it whole.
    """
    head, body = _split_head(raw[:PARSED_BYTES])
    msg = _fast_headers(head)
    boundary = msg.get_boundary() if msg.get_content_type() == "multipart/report" else None
    if not boundary:
        return None
    parts = _Parts()
    for chunk in _top_level_parts(body, boundary.encode("ascii", "surrogateescape")):
        part_head, part_body = _split_head(chunk)
        headers = _fast_headers(part_head)
        kind = headers.get_content_type()
        if kind not in _STATUS_PART_TYPES | _FEEDBACK_PART_TYPES | _ORIGINAL_PART_TYPES:
            continue
        if _text(headers.get("Content-Transfer-Encoding")).lower() not in ("", "7bit", "8bit", "binary"):
            return None
        if kind in _STATUS_PART_TYPES:
            parts.has_status = True
            parts.status_blocks.extend(
                _fast_headers(block) for block in _BYTES_BLOCK_SEPARATOR.split(part_body.strip()) if block.strip()
            )
        elif kind in _FEEDBACK_PART_TYPES:
            parts.feedback = parts.feedback or _fast_headers(part_body.strip())
        elif parts.original is None:
            parts.original = _fast_headers(_split_head(part_body.lstrip(b"\r\n"))[0])
    if not parts.has_status and parts.feedback is None:
        return None
    return msg, parts


def _split_head(data: bytes) -> tuple[bytes, bytes]:
    """The header section of ``data`` (a message or a MIME part) and its body."""
    if data.startswith((b"\n", b"\r\n")):
        return b"", data[1:] if data.startswith(b"\n") else data[2:]
    end = _HEADER_END.search(data)
    return (data, b"") if end is None else (data[: end.start()], data[end.end() :])


def _fast_headers(head: bytes) -> Message:
    """A header section read into a Message (as the parser would, non-ASCII bytes kept as surrogates)."""
    msg = Message()
    for name, value in _FIELD.findall(head.decode("ascii", "surrogateescape")):
        msg[name] = value.strip()
    return msg


def _top_level_parts(body: bytes, boundary: bytes) -> list[bytes]:
    """The parts of a multipart body delimited by ``boundary`` (RFC 2046 §5.1.1), preamble and epilogue dropped."""
    marker = b"\n--" + boundary
    data = b"\n" + body
    found: list[bytes] = []
    current = -1
    index = data.find(marker)
    while index != -1:
        after = index + len(marker)
        tail = data[after : after + 2]
        if tail == b"--" or tail[:1] in (b"", b"\r", b"\n", b" ", b"\t"):  # not a longer boundary's prefix
            if current >= 0:
                found.append(data[current:index])
            if tail == b"--":
                return found
            line_end = data.find(b"\n", after)
            if line_end == -1:
                return found
            current = line_end + 1
        index = data.find(marker, after)
    if current >= 0:
        found.append(data[current:])  # no closing delimiter: the message was cut
    return found


# Delivery status notifications (RFC 3464) -------------------------------------------------------------------------


def _dsn_report(
    msg: Message, parts: _Parts, addressed_to: tuple[str, ...], sender: str | None, message_id: str | None
) -> InboundReport | None:
    """The DSN ``parts`` holds; None when it names no recipient at all (RFC 3464 wants one at least)."""
    failed: dict[str, FailedRecipient] = {}
    others: dict[str, int] = {}
    per_message: list[Message] = []
    for block in parts.status_blocks:
        if block.get("Final-Recipient") is None and block.get("Action") is None:
            per_message.append(block)
            continue
        action = _text(block.get("Action")).lower().split(" ", 1)[0].rstrip(";")
        if not (action.startswith("fail") or action == "error"):  # OpenSMTPD says "error"
            others[action or "unknown"] = others.get(action or "unknown", 0) + 1
            continue
        recipient = _dsn_recipient(block)
        if recipient is not None and recipient.address not in failed:
            failed[recipient.address] = recipient
    if not failed and not others:
        return None
    original = parts.original
    original_id = _message_id(original.get("Message-ID")) if original is not None else None
    for block in per_message:
        original_id = original_id or _message_id(block.get("X-Original-Message-ID"))
    original_id = original_id or _message_id(msg.get("In-Reply-To"))
    reporter = _reporter(msg, per_message)
    return InboundReport(
        kind=MessageKind.DSN,
        failed=tuple(failed.values()),
        complainant=None,
        original_message_id=original_id,
        addressed_to=addressed_to,
        sender=sender,
        message_id=message_id,
        summary=_failures_summary(f"DSN from {reporter}", failed.values(), others),
    )


def _status_blocks(part: Message) -> list[Message]:
    """The header blocks of a delivery-status part: the per-message block, then one per recipient."""
    payload = part.get_payload()
    encoding = _text(part.get("Content-Transfer-Encoding")).lower()
    if (
        isinstance(payload, list)
        and part.get_content_subtype() == "delivery-status"
        and encoding not in ("base64", "quoted-printable")
    ):
        return [block for block in payload if isinstance(block, Message)]
    # Encoded, or a message/global-delivery-status (which the email package parses as one message): the text.
    text = _decoded_text(part, encoding)
    return [_HEADER_PARSER.parsestr(block) for block in _BLOCK_SEPARATOR.split(text.strip()) if block.strip()]


def _decoded_text(part: Message, encoding: str) -> str:
    """The text of a message/* part, its transfer encoding undone.

    The email package parses the body of a message/* part as header blocks or as a message whatever its
    Content-Transfer-Encoding says; the text it took is written back out and decoded here.
    """
    payload = part.get_payload()
    if not isinstance(payload, list):
        return _part_text(part)
    data = "\n\n".join(sub.as_string() for sub in payload if isinstance(sub, Message)).encode(
        "ascii", "surrogateescape"
    )
    try:
        if encoding == "base64":
            data = binascii.a2b_base64(b"".join(data.split()))
        elif encoding == "quoted-printable":
            data = quopri.decodestring(data)
    except (binascii.Error, ValueError):
        return ""
    return data.decode("utf-8", "replace")


def _dsn_recipient(block: Message) -> FailedRecipient | None:
    address = _typed_address(block.get("Original-Recipient"), rfc822_only=True) or _typed_address(
        block.get("Final-Recipient"), rfc822_only=False
    )
    if address is None:
        return None
    diagnostic = _diagnostic(_text(block.get("Diagnostic-Code")))
    status = _status_in(_text(block.get("Status")))
    detail = _status_in(diagnostic)
    if not status:
        status = detail
    elif detail and status.endswith(".0.0") and detail[0] == status[0] and detail != status:
        status = detail  # "Status: 5.0.0" with "Diagnostic-Code: smtp; 550 5.1.1 ...": the diagnostic is precise
    if not diagnostic:
        diagnostic = _text(block.get("Status"))
    return FailedRecipient(address, status, _failure_fault(status, diagnostic), diagnostic[:DIAGNOSTIC_CHARS])


def _failure_fault(status: str, diagnostic: str) -> Fault:
    """Whose problem a failure with ``status`` is: a failed delivery, so the recipient's address or mailbox."""
    if status:
        fault = reported_fault(status)
        if fault in (Fault.ADDRESS, Fault.MAILBOX):
            return fault
        return Fault.MAILBOX  # a "failure" with a status that says success, or an unreadable one: the soft side
    code = _REPLY_CODE.match(diagnostic)
    if code is not None and (code.group(1) == "552" or code.group(1).startswith("4")):
        return Fault.MAILBOX
    return Fault.ADDRESS  # failed for good and no code says why: a hard bounce


def _typed_address(value: object, *, rfc822_only: bool) -> str | None:
    """The address of a DSN recipient field (``rfc822; ana@example.org``), or None when it has none."""
    text = _text(value)
    if not text:
        return None
    kind, separator, rest = text.partition(";")
    if separator:
        if rfc822_only and kind.strip().lower() not in ("rfc822", "utf-8"):
            return None
    else:
        rest = kind
    return _plain_address(rest)


def _diagnostic(text: str) -> str:
    """A Diagnostic-Code's text without its type (``smtp; 550 5.1.1 ...`` → ``550 5.1.1 ...``)."""
    kind, separator, rest = text.partition(";")
    if separator and kind.strip() and " " not in kind.strip():
        return rest.strip()
    return text


def _reporter(msg: Message, per_message: list[Message]) -> str:
    """Who sent a DSN, in a word, for the summary: the MTA when its marks say so, else the Reporting-MTA."""
    boundary = msg.get_boundary() or ""
    sender_domain = _domain(_header_addresses(msg, "From"))
    if any(block.get("X-Postfix-Queue-ID") is not None for block in per_message):
        return "Postfix"
    if "eximdsn" in boundary or (msg.get("X-Failed-Recipients") is not None and "exim" in _received(msg)):
        return "Exim"
    if msg.get("X-MS-Exchange-Message-Is-Ndr") is not None or any(
        "exchangelabs.com" in _text(block.get("Reporting-MTA")).lower()
        or "outlook.com" in _text(block.get("Reporting-MTA")).lower()
        for block in per_message
    ):
        return "Microsoft Exchange"
    if sender_domain in ("googlemail.com", "google.com", "gmail.com"):
        return "Gmail"
    for block in per_message:
        reporting = _diagnostic(_text(block.get("Reporting-MTA")))
        if reporting:
            return reporting
    return sender_domain or "an unknown MTA"


def _received(msg: Message) -> str:
    return " ".join(_text(value) for value in msg.get_all("Received", [])).lower()


# Feedback reports (RFC 5965) ----------------------------------------------------------------------------------------


def _feedback_report(
    fields: Message,
    original: Message | None,
    addressed_to: tuple[str, ...],
    sender: str | None,
    message_id: str | None,
) -> InboundReport:
    feedback_type = _text(fields.get("Feedback-Type")).lower() or "abuse"
    original_id = _message_id(original.get("Message-ID")) if original is not None else None
    complainants = _header_addresses(fields, "Original-Rcpt-To")
    if not complainants and original is not None:
        complainants = _header_addresses(original, "To")
    complainant = complainants[0] if complainants else None
    reporter = _text(fields.get("User-Agent")) or sender or "an unknown reporter"
    if feedback_type in _NOT_COMPLAINTS:
        return _unrecognised(
            addressed_to,
            sender,
            message_id,
            f"ARF {_NOT_COMPLAINTS[feedback_type]} from {reporter}, not a complaint: ignored",
            original_id,
        )
    about = f" about {original_id}" if original_id else ""
    return InboundReport(
        kind=MessageKind.COMPLAINT,
        failed=(),
        complainant=complainant,
        original_message_id=original_id,
        addressed_to=addressed_to,
        sender=sender,
        message_id=message_id,
        summary=_line(
            f"Complaint ({feedback_type}) from {reporter}: {complainant or 'recipient not disclosed'}{about}"
        ),
    )


def _feedback_fields(part: Message) -> Message:
    """The fields of a message/feedback-report part (the email package parses them as a message's headers)."""
    payload = part.get_payload()
    encoding = _text(part.get("Content-Transfer-Encoding")).lower()
    if (
        isinstance(payload, list)
        and payload
        and isinstance(payload[0], Message)
        and encoding not in ("base64", "quoted-printable")
    ):
        return payload[0]
    return _HEADER_PARSER.parsestr(_decoded_text(part, encoding).strip())


# Non-standard bounces (flufl.bounce) --------------------------------------------------------------------------------


def _flufl_report(
    msg: Message,
    raw: bytes,
    parts: _Parts,
    addressed_to: tuple[str, ...],
    sender: str | None,
    message_id: str | None,
) -> InboundReport | None:
    """A non-standard bounce flufl.bounce recognises, as a DSN; None when it recognises nothing."""
    scanned = msg if len(raw) <= FLUFL_BYTES else _PARSER.parsebytes(raw[:FLUFL_BYTES])
    try:
        temporary, permanent = all_failures(scanned)
    except Exception:  # noqa: BLE001 - a detector's bug on odd input must not stop the intake
        return None
    permanent_addresses = _unique(_plain_address(address.decode("ascii", "replace")) for address in permanent)
    temporary_addresses = [
        address
        for address in _unique(_plain_address(address.decode("ascii", "replace")) for address in temporary)
        if address not in permanent_addresses
    ]
    if not permanent_addresses and not temporary_addresses:
        return None
    explanation = _explanation_text(msg, parts)
    failed = []
    for address in permanent_addresses:
        status, diagnostic = _explanation(explanation, address, alone=len(permanent_addresses) == 1)
        fault = _failure_fault(status, "") if status else Fault.ADDRESS  # permanent, no status: a hard bounce
        failed.append(FailedRecipient(address, status, fault, diagnostic))
    text = explanation[:FLUFL_BYTES]
    original = parts.original
    original_id = _message_id(original.get("Message-ID")) if original is not None else None
    if original_id is None:
        follows = _ORIGINAL_FOLLOWS.search(text)
        if follows is not None:
            copied = re.search(r"^message-id:[ \t]*(.+)$", text[follows.end() :], re.IGNORECASE | re.MULTILINE)
            original_id = _message_id(copied.group(1)) if copied else None
    original_id = original_id or _message_id(msg.get("In-Reply-To"))
    others = {"delayed": len(temporary_addresses)} if temporary_addresses else {}
    return InboundReport(
        kind=MessageKind.DSN,
        failed=tuple(failed),
        complainant=None,
        original_message_id=original_id,
        addressed_to=addressed_to,
        sender=sender,
        message_id=message_id,
        summary=_failures_summary(f"Non-standard bounce from {sender or 'an unknown sender'}", failed, others),
    )


def _explanation_text(msg: Message, parts: _Parts) -> str:
    """The human-readable text of a bounce: its first text/plain part, or its body."""
    if parts.texts:
        return _part_text(parts.texts[0])[:FLUFL_BYTES]
    if not msg.is_multipart():
        return _part_text(msg)[:FLUFL_BYTES]
    return ""


def _explanation(text: str, address: str, *, alone: bool) -> tuple[str, str]:
    """The enhanced status and the explanation a plain-text bounce gives for ``address``: the lines from the one
    naming it to the next blank line. When the explanation has no status and ``address`` is the bounce's only
    failure, the first status in the text before the copy of the original message is taken."""
    follows = _ORIGINAL_FOLLOWS.search(text)
    notice = text[: follows.start()] if follows else text
    lines = notice.splitlines()
    lowered = address.lower()
    block: list[str] = []
    for index, line in enumerate(lines):
        if lowered in line.lower():
            named = line.strip().strip("<>:").strip().lower()
            block = [] if named == lowered else [line.strip()]  # a line of its own names the address: not kept
            for following in lines[index + 1 : index + 8]:
                if not following.strip():
                    break
                block.append(following.strip())
            break
    diagnostic = _line(" ".join(block))[:DIAGNOSTIC_CHARS]
    status = _status_in(diagnostic)
    if not status and alone:
        status = _status_in(notice)
    return status, diagnostic


# Automatic replies and unsubscribe requests ------------------------------------------------------------------------


def _auto_reply(msg: Message) -> str | None:
    """What marks ``msg`` as an automatic reply, or None when nothing does."""
    if _text(msg.get("Auto-Submitted")).lower().startswith("auto-replied"):
        return "Auto-Submitted: auto-replied"
    for name in ("X-Autoreply", "X-Autorespond", "X-Auto-Response-Suppress"):
        if msg.get(name) is not None:
            return name
    if _text(msg.get("Precedence")).lower() == "auto_reply":
        return "Precedence: auto_reply"
    if _AUTO_SUBJECT.search(_subject(msg)):
        return "its subject"
    return None


def _unsubscribe_address(addressed_to: Sequence[str], unsubscribe_addresses: Collection[str]) -> str | None:
    """The unsubscribe address (one of ``unsubscribe_addresses``) the message was sent to, or None."""
    wanted = {_plain_address(address) for address in unsubscribe_addresses} - {None}
    if not wanted:
        return None
    for address in addressed_to:
        local, _, domain = address.rpartition("@")
        if address in wanted or f"{local.split('+', 1)[0]}@{domain}" in wanted:
            return address
    return None


# Reading headers, parts and addresses ------------------------------------------------------------------------------


def _text(value: object) -> str:
    """A header's value as one line of text: RFC 2047 words decoded, folding and runs of space collapsed."""
    if value is None:
        return ""
    if isinstance(value, str) and "=?" not in value:
        return " ".join(value.split())
    try:
        decoded = str(make_header(decode_header(value if isinstance(value, str | Header) else str(value))))
    except (ValueError, LookupError, UnicodeError, AttributeError, TypeError):
        decoded = str(value)
    return " ".join(decoded.split())


def _subject(msg: Message) -> str:
    return _text(msg.get("Subject"))[:120]


def _header_addresses(msg: Message, *names: str) -> list[str]:
    """The addresses in the headers ``names`` of ``msg``, in order, lower-cased.

    Read with regular expressions rather than ``email.utils.getaddresses``, which costs more than the whole
    rest of a DSN's classification: an address in angle brackets, else each bare ``local@domain`` once comments
    and quoted display names are taken out. Addresses are compared and looked up, never sent to.
    """
    found = []
    for name in names:
        for value in msg.get_all(name, ()):
            text = _raw_header(value)
            if "(" in text or '"' in text:
                text = _COMMENT_OR_QUOTED.sub(" ", text)
            for angled, bare in _ADDRESS_TOKEN.findall(text):
                plain = _plain_address(angled or bare)
                if plain is not None:
                    found.append(plain)
    return found


def _raw_header(value: object) -> str:
    if isinstance(value, str):
        return value
    try:
        return str(value)
    except (ValueError, LookupError, UnicodeError):
        return ""


def _plain_address(value: str) -> str | None:
    """``value`` as a bare lower-cased address (``<Ana@Example.org>`` → ``ana@example.org``), or None."""
    address = value.strip().strip("<>").strip().lower()
    if " " in address or "@" not in address or len(address) > 320:
        return None
    local, _, domain = address.rpartition("@")
    return address if local and domain else None


def _unique(addresses: Iterable[str | None]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(address for address in addresses if address))


def _domain(addresses: Sequence[str]) -> str:
    return addresses[0].rpartition("@")[2] if addresses else ""


def _message_id(value: object) -> str | None:
    """The first ``<id@host>`` in a header's value (a bare ``id@host`` gets its brackets), or None."""
    text = _text(value)
    if not text:
        return None
    match = _MESSAGE_ID.search(text)
    if match is not None:
        return match.group(0)
    bare = text.split()[0]
    return f"<{bare}>" if "@" in bare else None


def _status_in(text: str) -> str:
    match = _STATUS.search(text)
    return ".".join(match.groups()) if match else ""


def _part_text(part: Message) -> str:
    """A part's content as text, transfer encoding undone; an attached message as its text."""
    payload = part.get_payload()
    if isinstance(payload, list):
        return "\n\n".join(sub.as_string() for sub in payload if isinstance(sub, Message))
    data = part.get_payload(decode=True)
    if not isinstance(data, bytes):
        return str(payload)
    charset = part.get_content_charset() or "utf-8"
    try:
        return data.decode(charset, "replace")
    except LookupError:
        return data.decode("utf-8", "replace")


def _embedded_headers(part: Message) -> Message | None:
    """The header section of an attached original: a message/rfc822 part's message, or text/rfc822-headers."""
    payload = part.get_payload()
    if isinstance(payload, list):
        return next((sub for sub in payload if isinstance(sub, Message)), None)
    data = part.get_payload(decode=True)
    if isinstance(data, bytes):
        return _BYTES_HEADER_PARSER.parsebytes(data)
    return None


def _line(text: str) -> str:
    """``text`` on one line (control characters and runs of space collapsed), at most a summary's length."""
    flat = " ".join(_CONTROL.sub(" ", text).split())
    return flat if len(flat) <= _SUMMARY_CHARS else flat[: _SUMMARY_CHARS - 1] + "…"


def _failures_summary(prefix: str, failed: Iterable[FailedRecipient], others: dict[str, int]) -> str:
    failures = list(failed)
    shown = ", ".join(f"{item.address} {item.status or _HARDNESS[item.fault]}" for item in failures[:3])
    more = f", and {len(failures) - 3} more" if len(failures) > 3 else ""
    rest = "".join(f", {count} {action}" for action, count in others.items())
    details = f" ({shown}{more})" if failures else ""
    return _line(f"{prefix}: {len(failures)} failed{details}{rest}")


def _unrecognised(
    addressed_to: tuple[str, ...],
    sender: str | None,
    message_id: str | None,
    reason: str,
    original_message_id: str | None = None,
) -> InboundReport:
    return InboundReport(
        kind=MessageKind.UNRECOGNISED,
        failed=(),
        complainant=None,
        original_message_id=original_message_id,
        addressed_to=addressed_to,
        sender=sender,
        message_id=message_id,
        summary=_line(f"Unrecognised: {reason}"),
    )
