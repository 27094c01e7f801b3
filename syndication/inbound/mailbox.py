"""The bounce mailbox poller: reads the messages of an IMAP folder the bounce address is delivered to.

For sites whose MTA cannot deliver to the receiver (``receiver.py``), bounces land in an ordinary mailbox;
:func:`poll_mailbox` fetches the messages of its folder not yet processed, gives each (its bytes exactly as stored,
no envelope recipients: the headers carry where it was sent) to the ``handle`` function the caller passes, and marks
it once ``handle`` returned: moved to ``processed_folder`` when one is given (created if missing), always first
flagged with the keyword :data:`PROCESSED_KEYWORD` and ``\\Seen``. Only messages without that keyword (and not
deleted) are fetched, so nothing is processed twice, even if a move fails half-way. A message whose ``handle``
raised is left as it was and tried again on the next poll. Messages are read with ``BODY.PEEK``: reading alone
marks nothing. Should the process die between ``handle`` and the flag, that one message is handed again on the
next poll: ``handle`` should take a Message-ID it has seen as done. A server that keeps no keywords of ours
(no ``\\*`` in PERMANENTFLAGS) needs ``processed_folder``; without one, the poll refuses to start.

This module is the only user of imap-tools (and so of imaplib).
"""

from __future__ import annotations

import contextlib
import imaplib
import logging
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from imap_tools import AND, BaseMailBox, MailBox, MailBoxStartTls, MailBoxUnencrypted
from imap_tools.errors import ImapToolsError, MailboxFolderSelectError

from syndication.errors import SyndicationError

log = logging.getLogger(__name__)

#: The IMAP keyword (RFC 3501 §2.3.2) a processed message carries.
PROCESSED_KEYWORD = "$SyndicationProcessed"
#: Seconds a connection may wait for the server.
TIMEOUT_SECONDS = 60.0

Handle = Callable[[bytes, list[str]], None]
_CONNECTION_ERRORS = (OSError, imaplib.IMAP4.error, ImapToolsError)


@dataclass(frozen=True, kw_only=True)
class MailboxAccess:
    """Where the bounce mailbox is and how to log in to it."""

    host: str
    port: int = 993
    user: str
    password: str = field(repr=False)
    folder: str = "INBOX"
    #: Where processed messages go; None leaves them in ``folder``, flagged.
    processed_folder: str | None = None
    #: ``"tls"``: implicit TLS (port 993); ``"starttls"``: upgraded (port 143); ``"none"``: neither (a local server).
    security: Literal["tls", "starttls", "none"] = "tls"

    def describe(self) -> str:
        return f"{self.user}@{self.host}:{self.port}/{self.folder}"


def poll_mailbox(access: MailboxAccess, handle: Handle, *, limit: int = 500) -> tuple[int, int]:
    """Hand each message of the folder not yet processed (at most ``limit``, oldest first) to ``handle``.

    Returns (handled, failed): how many ``handle`` took, and how many it raised for (left for the next poll).
    Raises SyndicationError naming the mailbox when it cannot be reached, logged in to or changed.
    """
    handled = failed = 0
    box = _connect(access)
    try:
        keywords = _keeps_keywords(box)
        if not keywords and access.processed_folder is None:
            raise SyndicationError(
                f"the bounce mailbox {access.describe()} does not keep keywords (no \\* in its PERMANENTFLAGS), "
                "so processed messages cannot be told apart: give it a folder to move them to"
            )
        if access.processed_folder is not None and not box.folder.exists(access.processed_folder):
            box.folder.create(access.processed_folder)
        uids = box.uids(AND(no_keyword=PROCESSED_KEYWORD, deleted=False))[:limit]
        for uid in uids:
            raw = _fetch(box, uid)
            if raw is None:
                continue  # expunged by another client meanwhile
            try:
                handle(raw, [])
            except Exception:
                log.exception(
                    "could not handle message %s of %s (%d bytes): left for the next poll",
                    uid,
                    access.describe(),
                    len(raw),
                )
                failed += 1
                continue
            _mark_processed(box, uid, access.processed_folder, keywords=keywords)
            handled += 1
    except _CONNECTION_ERRORS as error:
        raise SyndicationError(f"the bounce mailbox {access.describe()} failed: {_reason(error)}") from error
    finally:
        with contextlib.suppress(*_CONNECTION_ERRORS):
            box.logout()
    return handled, failed


def _connect(access: MailboxAccess) -> BaseMailBox:
    """A mailbox logged in to ``access.folder``; SyndicationError when it cannot be."""
    box: BaseMailBox
    try:
        if access.security == "tls":
            box = MailBox(access.host, access.port, timeout=TIMEOUT_SECONDS, ssl_context=ssl.create_default_context())
        elif access.security == "starttls":
            box = MailBoxStartTls(
                access.host, access.port, timeout=TIMEOUT_SECONDS, ssl_context=ssl.create_default_context()
            )
        else:
            box = MailBoxUnencrypted(access.host, access.port, timeout=TIMEOUT_SECONDS)
    except _CONNECTION_ERRORS as error:
        raise SyndicationError(
            f"cannot connect to the bounce mailbox {access.describe()} ({access.security}): {_reason(error)}"
        ) from error
    try:
        box.login(access.user, access.password, initial_folder=access.folder)
    except _CONNECTION_ERRORS as error:
        with contextlib.suppress(*_CONNECTION_ERRORS):
            box.logout()
        if isinstance(error, MailboxFolderSelectError):
            message = f"the bounce mailbox {access.user}@{access.host}:{access.port} has no folder {access.folder!r}"
        else:
            message = f"cannot log in to the bounce mailbox {access.describe()}"
        raise SyndicationError(f"{message}: {_reason(error)}") from error
    return box


def _fetch(box: BaseMailBox, uid: str) -> bytes | None:
    """The message ``uid`` exactly as stored, without setting ``\\Seen``; None when it is gone."""
    status, data = box.client.uid("FETCH", uid, "(BODY.PEEK[])")
    if status != "OK":
        raise imaplib.IMAP4.error(f"FETCH {uid} answered {status} {data!r}")
    for item in data:
        if isinstance(item, tuple) and len(item) == 2 and isinstance(item[1], bytes):
            return item[1]
    return None


def _keeps_keywords(box: BaseMailBox) -> bool:
    """Whether the selected folder keeps keywords of our own (RFC 3501 §7.1: ``\\*`` in PERMANENTFLAGS)."""
    _, data = box.client.response("PERMANENTFLAGS")
    flags = b" ".join(item for item in data or () if isinstance(item, bytes))
    if not flags:
        return True  # not said: assume the common case, as clients do
    return b"\\*" in flags or PROCESSED_KEYWORD.encode("ascii") in flags


def _mark_processed(box: BaseMailBox, uid: str, processed_folder: str | None, *, keywords: bool) -> None:
    flags = f"{PROCESSED_KEYWORD} \\Seen" if keywords else "\\Seen"
    status, data = box.client.uid("STORE", uid, "+FLAGS", f"({flags})")
    if status != "OK":
        raise imaplib.IMAP4.error(f"STORE {uid} answered {status} {data!r}")
    if processed_folder is not None:
        box.move(uid, processed_folder)


def _reason(error: BaseException) -> str:
    text = str(error).strip()
    return f"{type(error).__name__}: {text}" if text else type(error).__name__
