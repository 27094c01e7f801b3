"""Whose problem a refusal is: the recipient's address, their mailbox for now, or the sending side.

One rule for every way a refusal reaches us: a reply during our own SMTP conversation with the relay (the code,
its RFC 3463 enhanced status and the stage it came at) and a delivery status notification (RFC 3464) a relay
sends later (its ``Status`` field). Only a fault of the recipient's address or mailbox ever counts against a
subscriber; a refusal of the sender, of the content, of relaying, of authentication, or a full disk on the relay
says nothing about the recipient and must never cost anyone their subscription.
"""

from __future__ import annotations

import re
from enum import StrEnum


class Fault(StrEnum):
    """Whose problem a refusal is, and so what it does."""

    #: The address does not exist or is disabled for good (``5.1.1``, ``5.1.10``, ``5.2.1``...): a hard bounce.
    ADDRESS = "address"
    #: The recipient's mailbox cannot take mail for now (``5.2.2`` mailbox full, retries run out): a soft bounce.
    MAILBOX = "mailbox"
    #: The sending side: our sender, our content, relaying, authentication, the relay's own trouble. Marks no
    #: subscriber; sending stops (the edition is paused with the reason) until someone mends it.
    SENDING_SIDE = "sending-side"
    #: Try again later (a 4xx reply, a refused connection, a timeout).
    TEMPORARY = "temporary"


class Stage(StrEnum):
    """Where in the SMTP conversation a reply came."""

    CONNECT = "connect"
    GREETING = "EHLO"
    STARTTLS = "STARTTLS"
    AUTH = "AUTH"
    MAIL = "MAIL FROM"
    RCPT = "RCPT TO"
    DATA = "DATA"
    MESSAGE = "the message"


# An enhanced status code (RFC 3463) at the start of a reply's text: class.subject.detail.
_ENHANCED = re.compile(r"^\s*([245])\.(\d{1,3})\.(\d{1,3})(?![\d.])")
# Subjects and details that are about the address itself (RFC 3463 §3.2, §3.3; RFC 7505 for 5.1.10).
_ADDRESS_GONE = {("1", "1"), ("1", "2"), ("1", "3"), ("1", "6"), ("1", "10"), ("2", "1")}


def enhanced_status(reply: str) -> str | None:
    """The enhanced status code a reply's text starts with (``"5.1.1"``), or None when it gives none."""
    match = _ENHANCED.match(reply)
    return ".".join(match.groups()) if match else None


def smtp_fault(code: int, status: str | None, stage: Stage) -> Fault:
    """Whose problem the relay's reply ``code`` (with its enhanced ``status``, if any) at ``stage`` is.

    Only a refusal at RCPT TO (or of the message, when it names the address or the mailbox) can be the
    recipient's: before RCPT nothing has been said about the recipient, and a refusal of DATA or of the content
    is about the message. Without an enhanced code, 550, 551 and 553 at RCPT TO are the classic "no such user"
    and 552 "mailbox full"; anything else is not taken as the recipient's (better a paused edition than a
    wiped list).
    """
    if 400 <= code < 500 or code <= 0:
        return Fault.TEMPORARY
    if status is not None and status.startswith("4."):
        return Fault.TEMPORARY
    if stage not in (Stage.RCPT, Stage.MESSAGE):
        return Fault.SENDING_SIDE
    if status is not None:
        _, subject, detail = status.split(".")
        if (subject, detail) in _ADDRESS_GONE:
            return Fault.ADDRESS
        if subject == "2":
            return Fault.MAILBOX  # 5.2.2 over quota, 5.2.0 and 5.2.3-4: the mailbox, not the address
        if subject == "1" and stage is Stage.RCPT:
            return Fault.ADDRESS  # 5.1.x: some other trouble with the destination address
        return Fault.SENDING_SIDE  # 5.3 system, 5.4 routing, 5.5 protocol, 5.6 content, 5.7 policy and security
    if stage is Stage.RCPT:
        if code in (550, 551, 553):
            return Fault.ADDRESS
        if code == 552:
            return Fault.MAILBOX
    return Fault.SENDING_SIDE


def reported_fault(status: str) -> Fault | None:
    """Whose problem a failure a relay reported later (a DSN's ``Status``, or a bounce's code) is.

    The relay accepted the message, so our side was fine as far as it could tell: a permanent failure that names
    the address is a hard bounce, any other failure a soft one (a refusal by the recipient's own server counts,
    slowly, against the address). None for what is not a failure (``2.x.x`` delivered, unreadable codes).
    """
    parts = status.strip().split(".")
    if len(parts) != 3 or not all(part.isdigit() for part in parts):
        return None
    klass, subject, detail = parts
    if klass == "5" and (subject, detail) in _ADDRESS_GONE:
        return Fault.ADDRESS
    if klass in ("4", "5"):
        return Fault.MAILBOX
    return None
