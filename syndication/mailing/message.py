"""MIME messages laid out by hand, identically every time: multipart/alternative, text then HTML.

The standard library's ``EmailMessage`` costs milliseconds per message; a digest goes to many thousands of
people, so the structure is written here once and only the per-recipient parts change. Bodies are
quoted-printable (binascii's C encoder), so no line of the message exceeds RFC 5322's 998 characters (they stay
under 78), and non-ASCII text (Malmö, São Paulo, 北九州市) is carried as UTF-8. Header values are refused if they
hold a line break, so nothing from a post or a subscriber can inject a header.
"""

from __future__ import annotations

import binascii
import hashlib
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from email.header import Header
from email.utils import format_datetime, formataddr
from functools import lru_cache

from syndication.errors import SyndicationError

CRLF = b"\r\n"


class HeaderInjection(SyndicationError):
    """A header value held a line break (or another control character)."""


@dataclass(frozen=True, slots=True)
class Envelope:
    """The headers of one message. ``extra`` are further headers in order (List-Id, List-Unsubscribe, ...)."""

    from_address: str
    from_name: str
    to_address: str
    to_name: str
    subject: str
    date: datetime
    message_id: str
    reply_to: str | None = None
    extra: Sequence[tuple[str, str]] = field(default_factory=tuple)


def build_message(envelope: Envelope, text: str, html: str) -> bytes:
    """The complete message as bytes with CRLF line ends, ready for SMTP."""
    return build_encoded(envelope, quoted_printable(text), quoted_printable(html))


def build_encoded(envelope: Envelope, text_qp: bytes, html_qp: bytes) -> bytes:
    """The message from bodies already quoted-printable encoded (see PreparedBody)."""
    boundary = _boundary(envelope.message_id)
    return b"".join(
        (
            header_block(envelope),
            b'MIME-Version: 1.0\r\nContent-Type: multipart/alternative;\r\n boundary="' + boundary + b'"\r\n\r\n',
            b"--" + boundary + CRLF,
            b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n",
            text_qp,
            CRLF + b"--" + boundary + CRLF,
            b"Content-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n",
            html_qp,
            CRLF + b"--" + boundary + b"--" + CRLF,
        )
    )


def header_block(envelope: Envelope) -> bytes:
    """The message's headers, each folded and encoded (RFC 2047 for non-ASCII), ending with CRLF."""
    lines = [
        ("From", address(envelope.from_name, envelope.from_address)),
        ("To", address(envelope.to_name, envelope.to_address)),
        ("Subject", encoded_header("Subject", envelope.subject)),
        ("Date", _date(envelope.date)),
        ("Message-ID", checked(envelope.message_id)),
    ]
    if envelope.reply_to:
        lines.append(("Reply-To", address("", envelope.reply_to)))
    for name, value in envelope.extra:
        checked(value.replace("\r\n ", " "))  # a fold (CRLF, space) continues a header; any other break is refused
        lines.append((name, value))
    return b"".join(f"{name}: {value}".encode("ascii") + CRLF for name, value in lines)


def _date(moment: datetime) -> str:
    """``format_datetime(moment)``, which has no microseconds: worked out once per second, as every message of a
    second (and its seal) is dated alike. Keyed with the UTC offset too: two equal instants in two zones compare
    equal, yet are written differently."""
    return _formatted_date(moment.replace(microsecond=0), moment.utcoffset())


@lru_cache(maxsize=256)
def _formatted_date(moment: datetime, _offset: timedelta | None) -> str:
    return format_datetime(moment)


def stamp_date(message: bytes, moment: datetime) -> bytes:
    """``message`` with its ``Date`` header written for ``moment`` (the header added in front if it had none).

    The Mailer calls this as it hands a message over, so the Date is the moment of sending (a retry's own),
    never the window the message was built for nor the time it waited in a queue (RFC 5322 3.6.1: the moment
    the message was ready to go; filters score a Date days in the past as spam). Only the header section is
    looked at; a folded Date is replaced whole.
    """
    value = b"Date: " + _date(moment).encode("ascii")
    end = message.find(CRLF + CRLF)
    head = message if end < 0 else message[: end + 2]
    if head[:5].lower() == b"date:":
        start = 0
    else:
        start = head.lower().find(CRLF + b"date:")
        if start < 0:
            return value + CRLF + message
        start += 2
    stop = message.find(CRLF, start)
    while stop >= 0 and message[stop + 2 : stop + 3] in (b" ", b"\t"):  # a continuation line of the Date
        stop = message.find(CRLF, stop + 2)
    return message[:start] + value + (message[stop:] if stop >= 0 else CRLF)


def folded_list(name: str, items: Sequence[str]) -> str:
    """``items`` as a comma-separated header value (List-Unsubscribe's URIs), folded (CRLF, space) after a
    comma wherever the next item would take the line past 78 characters.

    An item is never broken: RFC 2369 has no whitespace inside a list header's angle brackets, so a single URI
    longer than a line stays on one line of its own (still far under RFC 5322's 998). Relaxed DKIM
    canonicalisation unfolds, so a signature over the folded header verifies.
    """
    value = ""
    width = len(name) + 2  # the line so far: "Name: "
    for index, item in enumerate(items):
        piece = checked(item) + ("," if index < len(items) - 1 else "")
        separator = " " if index else ""
        if width + len(separator) + len(piece) > _LINE_LENGTH and (index or 1 + len(piece) <= _LINE_LENGTH):
            value, width, separator = value + "\r\n", 0, " "
        value += separator + piece
        width += len(separator) + len(piece)
    return value


# RFC 5322 2.1.1: a line SHOULD be at most 78 characters (without its CRLF).
_LINE_LENGTH = 78


@lru_cache(maxsize=4096)  # the sender's address and a variant's subject repeat for thousands of messages
def address(name: str, email: str) -> str:
    """``Name <email>``: see ``with_phrase``; just ``email`` without a name."""
    return with_phrase(name, email) if name else checked(email)


def with_phrase(phrase: str, value: str) -> str:
    """``phrase <value>``, as an address or a List-Id is written.

    A short ASCII phrase is quoted as needed. Any other one (not ASCII, long, or holding what a mail client
    would decode as an encoded-word) is RFC 2047-encoded as data, in words of at most 75 characters on lines of
    their own, so that no header line grows past 78 characters however long the name (a line over 998 is
    refused by mail servers).
    """
    phrase, value = checked(phrase), checked(value)
    if phrase.isascii() and "=?" not in phrase and len(phrase) <= _PLAIN_PHRASE_LENGTH:
        return formataddr((phrase, value))
    encoded = _one_encoded_word(phrase)
    if encoded is None:
        encoded = Header(phrase, "utf-8", maxlinelen=76, header_name="Reply-To").encode(linesep="\r\n")
    return f"{encoded} <{value}>"


# Beyond this an ASCII phrase is encoded too, so that it can be folded.
_PLAIN_PHRASE_LENGTH = 60

# What ``email.header.Header`` (charset utf-8, 76 columns, a 10-character "Reply-To: " in front) fits in the one
# encoded word of its first line: 76 - 10 columns, less the RFC 2047 chrome "=?utf-8?b?" "?=" (12).
_FIRST_WORD_ROOM = 76 - len("Reply-To: ") - len("=?utf-8?b??=")
# RFC 2047 "Q" encoding as ``email.quoprimime`` writes it in a header: these stay, a space is "_", the rest "=XX".
_Q_TABLE = [f"={octet:02X}" for octet in range(256)]
for _octet in b"-!*+/ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789":
    _Q_TABLE[_octet] = chr(_octet)
_Q_TABLE[ord(" ")] = "_"


def _one_encoded_word(phrase: str) -> str | None:
    """``phrase`` as the one RFC 2047 word ``email.header.Header`` writes for it when it fits on the first line
    (the shorter of "B" and "Q", "Q" on a tie, as its "SHORTEST" utf-8 charset chooses); None when it does not fit
    (Header folds it over several lines) or holds a line separator.

    Every recipient's name passes here (an address with a non-ASCII name, "Ana Pérez"): Header measures each
    prefix of the name character by character in Python, which was the largest part of building a message. For a
    name that fits, that search never splits, so its answer is this word (tests/test_mail_fast_paths.py holds the two
    equal over many names)."""
    data = phrase.encode("utf-8")
    if not data or phrase.splitlines() != [phrase]:
        return None
    base64_length = (len(data) + 2) // 3 * 4
    q_word = data.decode("latin-1").translate(_Q_TABLE)
    if base64_length < len(q_word):
        if base64_length > _FIRST_WORD_ROOM:
            return None
        return "=?utf-8?b?" + binascii.b2a_base64(data, newline=False).decode("ascii") + "?="
    if len(q_word) > _FIRST_WORD_ROOM:
        return None
    return "=?utf-8?q?" + q_word + "?="


@lru_cache(maxsize=4096)
def encoded_header(name: str, value: str) -> str:
    """A header value encoded for transport and folded under 78 characters a line."""
    folded = Header(checked(value), "utf-8", maxlinelen=76, header_name=name).encode(linesep="\r\n")
    return str(folded)


# A line break or any other control character (C0 or DEL): one search instead of a test per character, as every
# header of every message is checked (it was a tenth of a sender's main thread).
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def checked(value: str) -> str:
    """``value`` if it can go in a header; a line break or control character is refused, never passed on."""
    if _CONTROL.search(value):
        raise HeaderInjection(f"refused a header value with a line break or control character: {value[:60]!r}")
    return value


def quoted_printable(text: str) -> bytes:
    """UTF-8 ``text`` as quoted-printable with CRLF line ends (lines under 77 characters)."""
    normalised = text.replace("\r\n", "\n").replace("\r", "\n").encode("utf-8")
    return binascii.b2a_qp(normalised, quotetabs=False, istext=True, header=False).replace(b"\n", CRLF)


def _boundary(message_id: str) -> bytes:
    # "=_" never occurs in quoted-printable output, so it cannot clash with a body; made from the Message-ID,
    # it is unique per message and the same on every retry.
    digest = hashlib.sha256(message_id.encode("utf-8")).hexdigest()[:24]
    return f"=_syndication_{digest}".encode("ascii")


class PreparedBody:
    """A body quoted-printable encoded once, except the lines that hold per-recipient placeholders.

    Quoted-printable encodes line by line (a hard line break resets it), so the encoding of a body is the
    encodings of its lines put together: encoding only the few lines with a recipient's links, and reusing the
    rest, gives exactly the bytes encoding the whole personalised body would.
    """

    def __init__(self, body: str, placeholders: Sequence[str]) -> None:
        self.pieces: list[bytes | str] = []
        run: list[str] = []
        lines = body.replace("\r\n", "\n").replace("\r", "\n").split("\n")
        for index, line in enumerate(lines):
            line = line if index == len(lines) - 1 else line + "\n"
            if not line:
                continue
            if any(placeholder in line for placeholder in placeholders):
                if run:
                    self.pieces.append(quoted_printable("".join(run)))
                    run = []
                self.pieces.append(line)
            else:
                run.append(line)
        if run:
            self.pieces.append(quoted_printable("".join(run)))

    def encode(self, substitute: Callable[[str], str]) -> bytes:
        """The encoded body with ``substitute`` applied to each line that holds a placeholder."""
        return b"".join(
            piece if isinstance(piece, bytes) else quoted_printable(substitute(piece)) for piece in self.pieces
        )
