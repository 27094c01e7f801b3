"""The one error tree of the service.

Every error a user can see is a ``SyndicationError``: its message names the item and the reason, so the
command line and the web app can show it as it is, without a traceback.
"""

from __future__ import annotations


class SyndicationError(Exception):
    """Base of every error the service reports to a user."""


class ConfigError(SyndicationError):
    """The configuration file or the environment is wrong; nothing has run."""


class StoreError(SyndicationError):
    """The content store cannot be reached or is not initialised."""


class SourceError(SyndicationError):
    """A whole source could not be read (missing file, unreachable URL, refused address)."""


class ItemError(SyndicationError):
    """One item of a source was refused; the items around it are kept."""

    def __init__(self, where: str, reason: str) -> None:
        super().__init__(f"{where}: {reason}")
        self.where = where
        self.reason = reason


class DeliveryError(SyndicationError):
    """A message could not be handed to the mail transport.

    ``code`` is the server's reply code, if it gave one; ``status`` its RFC 3463 enhanced status code (``"5.1.1"``)
    when the reply carried one; ``stage`` where in the SMTP conversation it came (a ``core.bounces.Stage`` value:
    ``"MAIL FROM"``, ``"RCPT TO"``...), when known; ``reply`` the server's reply text on one line.
    """

    def __init__(
        self,
        reason: str,
        code: int | None = None,
        *,
        status: str | None = None,
        stage: str | None = None,
        reply: str = "",
    ) -> None:
        super().__init__(reason if code is None else f"{code} {reason}")
        self.reason = reason
        self.code = code
        self.status = status
        self.stage = stage
        self.reply = reply


class TemporaryDeliveryError(DeliveryError):
    """A 4xx reply, a refused connection or a timeout before the message was sent: retry later."""


class PermanentDeliveryError(DeliveryError):
    """A 5xx reply about this recipient: do not retry.

    ``fault`` says what it says about the recipient (a ``core.bounces.Fault`` value): ``"address"``, the address
    does not exist or is disabled for good (a hard bounce); ``"mailbox"``, their mailbox cannot take it now (a soft
    bounce, 5.2.2 mailbox full); ``""``, this message cannot reach them, but that says nothing about them (our relay
    cannot carry an internationalised address).
    """

    def __init__(
        self,
        reason: str,
        code: int | None = None,
        *,
        fault: str = "address",
        status: str | None = None,
        stage: str | None = None,
        reply: str = "",
    ) -> None:
        super().__init__(reason, code, status=status, stage=stage, reply=reply)
        self.fault = fault


class SendingSideError(DeliveryError):
    """The relay refused something that is not about the recipient: our sender, our content, relaying, our
    credentials, TLS, or its own trouble (a full disk). No retry of this one message mends it, and it must never
    count against a subscriber: the sender pauses the edition with this error's message as the reason.

    Its message is one line naming the stage, the relay and its reply
    ("MAIL FROM refused by 127.0.0.1:2525: 550 5.7.1 Sender address rejected"); the code is not repeated in front.
    """

    def __init__(
        self,
        reason: str,
        code: int | None = None,
        *,
        status: str | None = None,
        stage: str | None = None,
        reply: str = "",
    ) -> None:
        super().__init__(reason, None, status=status, stage=stage, reply=reply)
        self.code = code


class AmbiguousDeliveryError(DeliveryError):
    """The connection dropped or timed out after the final dot: the server may have the message.

    Retried with the same Message-ID, so receivers can drop the duplicate.
    """


class SenderBusy(SyndicationError):
    """Another sender already drains this SQLite store (it sends what is due; try again when it is done)."""


class TokenError(SyndicationError):
    """A signed link was forged, expired, or made for another purpose."""
