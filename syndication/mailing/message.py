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
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from email.header import Header
from email.utils import format_datetime, formataddr

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
    boundary = _boundary(text, html)
    return b"".join(
        (
            header_block(envelope),
            b'MIME-Version: 1.0\r\nContent-Type: multipart/alternative;\r\n boundary="' + boundary + b'"\r\n\r\n',
            b"--" + boundary + CRLF,
            b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n",
            quoted_printable(text),
            CRLF + b"--" + boundary + CRLF,
            b"Content-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n",
            quoted_printable(html),
            CRLF + b"--" + boundary + b"--" + CRLF,
        )
    )


def header_block(envelope: Envelope) -> bytes:
    """The message's headers, each folded and encoded (RFC 2047 for non-ASCII), ending with CRLF."""
    lines = [
        ("From", address(envelope.from_name, envelope.from_address)),
        ("To", address(envelope.to_name, envelope.to_address)),
        ("Subject", encoded_header("Subject", envelope.subject)),
        ("Date", format_datetime(envelope.date)),
        ("Message-ID", checked(envelope.message_id)),
    ]
    if envelope.reply_to:
        lines.append(("Reply-To", address("", envelope.reply_to)))
    lines += [(name, checked(value)) for name, value in envelope.extra]
    return b"".join(f"{name}: {value}".encode("ascii") + CRLF for name, value in lines)


def address(name: str, email: str) -> str:
    """``Name <email>``, the name RFC 2047-encoded when it is not ASCII."""
    return formataddr((checked(name), checked(email)), charset="utf-8")


def encoded_header(name: str, value: str) -> str:
    """A header value encoded for transport and folded under 78 characters a line."""
    folded = Header(checked(value), "utf-8", maxlinelen=76, header_name=name).encode(linesep="\r\n")
    return str(folded)


def checked(value: str) -> str:
    """``value`` if it can go in a header; a line break or control character is refused, never passed on."""
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in value):
        raise HeaderInjection(f"refused a header value with a line break or control character: {value[:60]!r}")
    return value


def quoted_printable(text: str) -> bytes:
    """UTF-8 ``text`` as quoted-printable with CRLF line ends (lines under 77 characters)."""
    normalised = text.replace("\r\n", "\n").replace("\r", "\n").encode("utf-8")
    return binascii.b2a_qp(normalised, quotetabs=False, istext=True, header=False).replace(b"\n", CRLF)


def _boundary(text: str, html: str) -> bytes:
    # "=_" never occurs in quoted-printable output, so it cannot clash with a body; hashing keeps it stable.
    digest = hashlib.sha256(text.encode("utf-8") + b"\0" + html.encode("utf-8")).hexdigest()[:24]
    return f"=_syndication_{digest}".encode("ascii")
