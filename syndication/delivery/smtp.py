"""The ``smtp`` transport: handing messages to the SMTP relay; the only module that speaks SMTP (the only importer
of smtplib). Only the Mailer (``syndication.delivery.mailer``) opens an :class:`SmtpClient`.

Every message goes in its own transaction with exactly one recipient, so a refusal always belongs to one
address and can never pass unnoticed among accepted ones. The protocol is driven command by command
(MAIL, RCPT, DATA, the message, the reply) instead of through ``sendmail``, because the outcome depends on
*when* something goes wrong. A relay that offers PIPELINING (RFC 2920) gets MAIL, RCPT and DATA in one write, and
their three replies are read in turn and weighed in that order, so a refusal is told by its stage as when each
command waits for the one before (two round trips a message instead of four):

* a 4xx reply, a refused connection, a timeout or a dropped connection before the final dot was handed to
  the socket: :class:`TemporaryDeliveryError`, the server cannot have the message, retry later;
* a 5xx reply is classified by whose problem it is (``syndication.core.bounces.smtp_fault``: its RFC 3463
  enhanced status code and the stage it came at). About the recipient (5.1.1 no such user, 5.2.2 mailbox full,
  a classic 550 at RCPT TO): :class:`PermanentDeliveryError`, with ``fault`` "address" (hard) or "mailbox"
  (soft). About the sending side (any 5xx at connect, EHLO, STARTTLS, AUTH, MAIL FROM or DATA, a 5.7.x policy
  refusal anywhere, relaying denied, a refusal of the message that names neither address nor mailbox, a 530
  "authentication required", wrong credentials): :class:`SendingSideError`, which marks nobody: the sender
  pauses the edition with its message as the reason;
* a dropped connection or a timeout after the final dot was sent, before the reply:
  :class:`AmbiguousDeliveryError`, the server may have the message (it is retried with the same Message-ID);
* success only on the 250 reply to the message.

Every refusal carries the ``stage`` it came at, the enhanced ``status`` (when the reply had one) and the reply
text. What contradicts the configuration before anything is asked of the relay (a server that does not offer
STARTTLS or AUTH, a certificate that does not verify, a malformed envelope sender) is
:class:`~syndication.errors.ConfigError`.

A connection is opened on the first send and kept for the next ones. After a refusal the transaction is
reset (RSET) and the connection kept; after any other error it is closed and a new one opened by the next
send. A :class:`SmtpClient` is not thread-safe: use one per thread.
"""

from __future__ import annotations

import re
import smtplib
import socket
import ssl
import time
from functools import cache
from types import TracebackType
from typing import Self

from syndication.config import SmtpSettings
from syndication.core.bounces import Fault, Stage, enhanced_status, smtp_fault
from syndication.errors import (
    AmbiguousDeliveryError,
    ConfigError,
    DeliveryError,
    PermanentDeliveryError,
    SendingSideError,
    TemporaryDeliveryError,
)

# A connection unused for this long may have been dropped by the server: it is checked with NOOP first.
IDLE_CHECK_SECONDS = 10.0
_ADDRESS = re.compile(r"[^\s<>@]+@[^\s<>@]+")
_REPLY_CHARS = 300


class SmtpClient:
    """A connection to the relay of ``settings``, opened on the first :meth:`send` and reused.

    ``local_hostname`` is the name given in EHLO (default: this host's fully qualified name);
    ``tls_context`` replaces the default context of ``security = "tls"`` and ``"starttls"`` (to trust
    a private certificate authority, for instance). Use it as a context manager, or call :meth:`close`.
    """

    def __init__(
        self,
        settings: SmtpSettings,
        *,
        local_hostname: str | None = None,
        tls_context: ssl.SSLContext | None = None,
    ) -> None:
        self.settings = settings
        self._local_hostname = local_hostname
        self._tls_context = tls_context
        self._smtp: smtplib.SMTP | None = None
        self._last_used = 0.0
        #: How many connections this client has opened so far.
        self.connections_opened = 0

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()

    @property
    def connected(self) -> bool:
        """Whether a connection is open (it may still have been dropped by the server since)."""
        return self._smtp is not None

    def send(self, mail_from: str, recipient: str, message: bytes) -> None:
        """Hand ``message`` (complete, CRLF line ends) to the relay for ``recipient``, from ``mail_from``.

        Returns when the server answered 250 to the message; raises a DeliveryError subclass otherwise
        (see the module's description: SendingSideError when the relay refuses something not about the
        recipient), or ConfigError for a problem of the configuration.
        """
        sender = _checked_sender(mail_from)
        to = _checked_recipient(recipient)
        payload = data_payload(message)
        smtp, reused = self._ready()
        keep = False
        try:
            self._transaction(smtp, reused, sender, to, payload)
            keep = True
        except _Refusal as refusal:
            keep = refusal.code != 421 and self._reset()
            raise refusal.error from None
        except (smtplib.SMTPException, OSError) as error:
            raise TemporaryDeliveryError(
                f"connection to {self._where} failed before the message for {to!r} was sent: {_describe(error)}"
            ) from error
        finally:
            if keep:
                self._last_used = time.monotonic()
            else:
                self._discard()

    def close(self) -> None:
        """Say QUIT and close the connection, if one is open; errors on the way out are ignored."""
        smtp, self._smtp = self._smtp, None
        if smtp is None:
            return
        try:
            smtp.quit()
        except (smtplib.SMTPException, OSError):
            pass
        finally:
            smtp.close()

    # The transaction ---------------------------------------------------------------------------------------

    def _transaction(self, smtp: smtplib.SMTP, reused: bool, sender: str, recipient: str, payload: bytes) -> None:
        try:
            code, reply, later = self._envelope(smtp, sender, recipient, payload)
        except smtplib.SMTPServerDisconnected:
            if not reused:
                raise
            code, reply, later = 421, b"", []
        if code == 421 and reused:
            # The server closed a connection kept from an earlier send: nothing was sent, open a new one.
            self._discard()
            smtp = self._connect()
            code, reply, later = self._envelope(smtp, sender, recipient, payload)
        replies = [(Stage.MAIL, code, reply, sender), *((stage, *answer, recipient) for stage, answer in later)]
        if len(replies) < 3:  # one command at a time: RCPT, then DATA, each once the one before was accepted
            if code == 250:
                code, reply = _rcpt(smtp, recipient)
                replies.append((Stage.RCPT, code, reply, recipient))
                if code in (250, 251):
                    smtp.putcmd("data")
                    code, reply = smtp.getreply()
                    replies.append((Stage.DATA, code, reply, recipient))
        elif replies[2][1] == 354 and not (replies[0][1] == 250 and replies[1][1] in (250, 251)):
            # Pipelined, a server took DATA though it refused the sender or the recipient (RFC 2920 3.1 says it
            # must not): the connection is left waiting for a message, so it goes, and the refusal stands.
            self._discard()
        for stage, code, reply, address in replies:
            if code not in _ACCEPTED[stage]:
                raise _Refusal(self._refusal_error(stage, code, reply, address))
        smtp.send(payload)
        # The final dot is in the socket: from here on the server may have the message.
        try:
            code, reply = smtp.getreply()
        except (smtplib.SMTPException, OSError) as error:
            raise AmbiguousDeliveryError(
                f"no reply from {self._where} after the message for {recipient!r} was sent"
                f" (it may have been accepted): {_describe(error)}"
            ) from error
        if code == 250:
            return
        if 400 <= code < 600:
            raise _Refusal(self._refusal_error(Stage.MESSAGE, code, reply, recipient))
        raise AmbiguousDeliveryError(
            f"unexpected reply from {self._where} to the message for {recipient!r}: {_reply_text(reply)}",
            code,
            stage=Stage.MESSAGE,
            reply=_reply_text(reply),
        )

    def _envelope(
        self, smtp: smtplib.SMTP, sender: str, recipient: str, payload: bytes
    ) -> tuple[int, bytes, list[tuple[Stage, tuple[int, bytes]]]]:
        """MAIL FROM's reply; with a server that offers PIPELINING (RFC 2920), RCPT TO and DATA go in the same
        write, and their replies (read in turn, every one of them, so that the connection stays in step) come
        with it. Each round trip saved is two on a busy relay: the sender's and the relay's turns."""
        options = self._mail_options(smtp, sender, recipient, payload)
        if not smtp.has_extn("pipelining") or any(option.lower() == "smtputf8" for option in options):
            code, reply = _mail(smtp, sender, options)
            return code, reply, []
        optionlist = " " + " ".join(options) if options else ""
        smtp.send(f"MAIL FROM:{_quoted(sender)}{optionlist}\r\nRCPT TO:{_quoted(recipient)}\r\nDATA\r\n")
        code, reply = smtp.getreply()
        if code == 421:  # the server is closing the connection: the other replies may never come
            return code, reply, []
        try:
            later = [(Stage.RCPT, smtp.getreply()), (Stage.DATA, smtp.getreply())]
        except smtplib.SMTPServerDisconnected as error:  # not a kept connection's closing: MAIL was answered
            raise _Dropped(_describe(error)) from error
        return code, reply, later

    def _refusal_error(self, stage: Stage, code: int, reply: bytes | str, address: str) -> DeliveryError:
        """The error of a refusal at ``stage``, by whose problem it is (``core.bounces.smtp_fault``)."""
        text = _reply_text(reply)
        status = enhanced_status(text)
        reason = f"{_refused(stage)} by {self._where}{f' for {address!r}' if address else ''}: {text}"
        if not 400 <= code < 600:  # no refusal at all (-1: no reply read): nothing to say about anyone
            return TemporaryDeliveryError(reason, code if code > 0 else None, status=status, stage=stage, reply=text)
        fault = smtp_fault(code, status, stage)
        if fault is Fault.SENDING_SIDE:
            return self._sending_side(stage, code, text)
        if fault is Fault.TEMPORARY:
            return TemporaryDeliveryError(reason, code, status=status, stage=stage, reply=text)
        return PermanentDeliveryError(reason, code, fault=fault.value, status=status, stage=stage, reply=text)

    def _sending_side(self, stage: Stage, code: int, text: str) -> SendingSideError:
        """A refusal that is about our side, in one line naming the stage, the relay and its reply."""
        reason = f"{_refused(stage)} by {self._where}: {code} {text}"
        if code == 530:
            reason += " (the relay requires authentication or TLS: set smtp.username and password, or smtp.security)"
        return SendingSideError(reason, code, status=enhanced_status(text), stage=stage, reply=text)

    def _mail_options(self, smtp: smtplib.SMTP, sender: str, recipient: str, payload: bytes) -> list[str]:
        options: list[str] = []
        if not (sender.isascii() and recipient.isascii()):
            if not smtp.has_extn("smtputf8"):
                raise _Refusal(
                    PermanentDeliveryError(
                        f"{self._where} does not accept internationalised addresses (SMTPUTF8): {recipient!r}",
                        fault="",  # our relay's limit, not the recipient's
                        stage=Stage.MAIL,
                    )
                )
            options.append("SMTPUTF8")
        if not payload.isascii() and smtp.has_extn("8bitmime"):
            options.append("BODY=8BITMIME")
        return options

    # The connection ----------------------------------------------------------------------------------------

    @property
    def _where(self) -> str:
        return f"{self.settings.host}:{self.settings.port}"

    def _ready(self) -> tuple[smtplib.SMTP, bool]:
        """The open connection (checked with NOOP when it sat idle), or a new one; and whether it was reused."""
        if self._smtp is not None and time.monotonic() - self._last_used > IDLE_CHECK_SECONDS:
            try:
                code, _reply = self._smtp.noop()
            except (smtplib.SMTPException, OSError):
                code = -1
            if code != 250:
                self._discard()
        if self._smtp is not None:
            return self._smtp, True
        return self._connect(), False

    def _connect(self) -> smtplib.SMTP:
        where = self._where
        smtp: smtplib.SMTP | None = None
        opened = False
        try:
            smtp = self._new_connection()
            self._handshake(smtp)
            opened = True
        except ssl.SSLCertVerificationError as error:
            raise ConfigError(f"smtp: the certificate of {where} does not verify: {_describe(error)}") from error
        except smtplib.SMTPConnectError as error:
            text = _reply_text(error.smtp_error)
            if smtp_fault(error.smtp_code, enhanced_status(text), Stage.CONNECT) is Fault.SENDING_SIDE:
                raise SendingSideError(
                    f"{where} refused the connection: {error.smtp_code} {text}", error.smtp_code,
                    status=enhanced_status(text), stage=Stage.CONNECT, reply=text,
                ) from error  # fmt: skip
            raise TemporaryDeliveryError(
                f"{where} refused the connection: {text}", error.smtp_code, stage=Stage.CONNECT, reply=text
            ) from error
        except smtplib.SMTPHeloError as error:  # both EHLO and HELO refused
            refusal = self._refusal_error(Stage.GREETING, error.smtp_code, error.smtp_error, "")
            raise refusal from error
        except (smtplib.SMTPException, OSError) as error:
            raise TemporaryDeliveryError(
                f"cannot connect to {where}: {_describe(error)}", stage=Stage.CONNECT
            ) from error
        finally:
            if smtp is not None and not opened:
                smtp.close()
        self._smtp = smtp
        self._last_used = time.monotonic()
        self.connections_opened += 1
        return smtp

    def _new_connection(self) -> smtplib.SMTP:
        """A connection that has read the server's 220 greeting (smtplib refuses any other)."""
        settings = self.settings
        hostname = self._local_hostname or default_local_hostname()
        if settings.security == "tls":
            return smtplib.SMTP_SSL(
                settings.host,
                settings.port,
                local_hostname=hostname,
                timeout=settings.timeout_seconds,
                context=self._tls_context or ssl.create_default_context(),
            )
        return smtplib.SMTP(settings.host, settings.port, local_hostname=hostname, timeout=settings.timeout_seconds)

    def _handshake(self, smtp: smtplib.SMTP) -> None:
        """EHLO, STARTTLS and EHLO again if asked for, AUTH if configured."""
        settings = self.settings
        where = self._where
        smtp.ehlo_or_helo_if_needed()
        if settings.security == "starttls":
            if not smtp.has_extn("starttls"):
                raise ConfigError(f"smtp: {where} does not offer STARTTLS (smtp.security is 'starttls')")
            code, reply = smtp.starttls(context=self._tls_context or ssl.create_default_context())
            if code != 220:
                raise self._refusal_error(Stage.STARTTLS, code, reply, "")
            smtp.ehlo()
        if settings.username:
            self._login(smtp)

    def _login(self, smtp: smtplib.SMTP) -> None:
        settings = self.settings
        where = self._where
        if settings.username is None or settings.password is None:
            raise ConfigError("smtp: username is set but password is not (set SYNDICATION_SMTP_PASSWORD)")
        try:
            smtp.login(settings.username, settings.password.get_secret_value())
        except smtplib.SMTPNotSupportedError as error:
            raise ConfigError(f"smtp: {where} does not offer AUTH, but smtp.username is set") from error
        except smtplib.SMTPAuthenticationError as error:
            text = _reply_text(error.smtp_error)
            code = error.smtp_code
            if smtp_fault(code, enhanced_status(text), Stage.AUTH) is Fault.TEMPORARY:
                raise TemporaryDeliveryError(
                    f"{where} could not check the credentials: {text}", code, stage=Stage.AUTH, reply=text
                ) from error
            raise SendingSideError(
                f"AUTH refused by {where} for user {settings.username!r}: {code} {text}", code,
                status=enhanced_status(text), stage=Stage.AUTH, reply=text,
            ) from error  # fmt: skip
        except smtplib.SMTPServerDisconnected:
            raise
        except smtplib.SMTPException as error:
            # "No suitable authentication method found."
            raise ConfigError(f"smtp: cannot authenticate to {where}: {_describe(error)}") from error

    def _reset(self) -> bool:
        """RSET after a refusal; whether the connection is fit for the next transaction."""
        if self._smtp is None:
            return False
        try:
            code, _reply = self._smtp.rset()
        except (smtplib.SMTPException, OSError):
            return False
        return code == 250

    def _discard(self) -> None:
        """Close the connection without QUIT: after an error its state is unknown."""
        smtp, self._smtp = self._smtp, None
        if smtp is not None:
            smtp.close()


def send_one(
    settings: SmtpSettings,
    mail_from: str,
    recipient: str,
    message: bytes,
    *,
    local_hostname: str | None = None,
    tls_context: ssl.SSLContext | None = None,
) -> None:
    """Send one message over a connection of its own (for trying a relay; the service sends through its Mailer)."""
    with SmtpClient(settings, local_hostname=local_hostname, tls_context=tls_context) as client:
        client.send(mail_from, recipient, message)


def data_payload(message: bytes) -> bytes:
    """What goes on the wire after DATA: dot-stuffed, ending with CRLF, then the final ".", as smtplib does."""
    # Dot-stuffing exactly as smtplib does it (``smtplib._quote_periods``, re.sub(rb"(?m)^\.", b"..")): a line
    # starting with "." gets another. With bytes.replace, as "^" of a multi-line expression is the start and every
    # position after a "\n": ten times faster than the expression, which tries a match at every byte.
    stuffed = message.replace(b"\n.", b"\n..")
    if stuffed.startswith(b"."):
        stuffed = b"." + stuffed
    if stuffed[-2:] != b"\r\n":
        stuffed += b"\r\n"
    return stuffed + b".\r\n"


@cache
def default_local_hostname() -> str:
    """The name smtplib would give in EHLO, worked out once per process (``getfqdn`` can be slow)."""
    fqdn = socket.getfqdn()
    if "." in fqdn:
        return fqdn
    try:
        return f"[{socket.gethostbyname(socket.gethostname())}]"
    except OSError:
        return "[127.0.0.1]"


# The replies that let a transaction go on, at each stage before the message.
_ACCEPTED: dict[Stage, tuple[int, ...]] = {Stage.MAIL: (250,), Stage.RCPT: (250, 251), Stage.DATA: (354,)}


class _Dropped(smtplib.SMTPException):
    """The connection closed between pipelined replies: nothing was sent of the message (a temporary failure)."""


class _Refusal(Exception):
    """A reply refused the transaction cleanly; the connection may carry the next one after RSET."""

    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error
        self.code = error.code if isinstance(error, DeliveryError) and error.code is not None else 0


def _mail(smtp: smtplib.SMTP, sender: str, options: list[str]) -> tuple[int, bytes]:
    """``smtp.mail(sender, options)``, the command written as smtplib writes it (see ``_quoted``)."""
    if any(option.lower() == "smtputf8" for option in options):
        return smtp.mail(sender, options)  # smtplib switches the command encoding to UTF-8 for it
    optionlist = " " + " ".join(options) if options and smtp.does_esmtp else ""
    smtp.putcmd("mail", f"FROM:{_quoted(sender)}{optionlist}")
    return smtp.getreply()


def _rcpt(smtp: smtplib.SMTP, recipient: str) -> tuple[int, bytes]:
    """``smtp.rcpt(recipient)``, the command written as smtplib writes it (see ``_quoted``)."""
    smtp.putcmd("rcpt", f"TO:{_quoted(recipient)}")
    return smtp.getreply()


# An address that is a dot-atom on both sides (RFC 5322 3.4.1): smtplib's quoteaddr, which parses every address
# with email.utils.parseaddr (a tenth of a sender's CPU), gives it back unchanged in angle brackets.
_DOT_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
_DOT_ATOM_ADDRESS = re.compile(_DOT_ATOM + "@" + _DOT_ATOM)


def _quoted(address: str) -> str:
    """``<address>`` as smtplib.quoteaddr writes it: at once for a dot-atom address, else through quoteaddr."""
    if _DOT_ATOM_ADDRESS.fullmatch(address):
        return f"<{address}>"
    return smtplib.quoteaddr(address)


def _checked_sender(address: str) -> str:
    if address and not _plain_address(address):
        raise ConfigError(f"refused an envelope sender that is not a plain email address: {address[:80]!r}")
    return address


def _checked_recipient(address: str) -> str:
    if not _plain_address(address):
        raise PermanentDeliveryError(
            f"refused a recipient that is not a plain email address: {address[:80]!r}", fault=Fault.ADDRESS.value
        )
    return address


def _refused(stage: Stage) -> str:
    """How a refusal at ``stage`` is told: MAIL FROM refused, RCPT TO refused, the message was refused..."""
    return "the message was refused" if stage is Stage.MESSAGE else f"{stage} refused"


def _plain_address(address: str) -> bool:
    return bool(_ADDRESS.fullmatch(address)) and address.isprintable()


def _reply_text(reply: bytes | str) -> str:
    """A server reply on one line, bounded, without control characters (it goes into error messages)."""
    text = reply.decode("utf-8", "replace") if isinstance(reply, bytes) else reply
    return _one_line(text) or "(no text)"


def _describe(error: BaseException) -> str:
    if isinstance(error, smtplib.SMTPResponseException):
        return f"{error.smtp_code} {_reply_text(error.smtp_error)}"
    return _one_line(str(error)) or type(error).__name__


def _one_line(text: str) -> str:
    printable = "".join(ch if ch.isprintable() else " " for ch in text)
    return " ".join(printable.split())[:_REPLY_CHARS]
