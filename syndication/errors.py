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
    """A message could not be handed to the mail transport. ``code`` is the server's reply code, if it gave one."""

    def __init__(self, reason: str, code: int | None = None) -> None:
        super().__init__(reason if code is None else f"{code} {reason}")
        self.reason = reason
        self.code = code


class TemporaryDeliveryError(DeliveryError):
    """A 4xx reply, a refused connection or a timeout before the message was sent: retry later."""


class PermanentDeliveryError(DeliveryError):
    """A 5xx reply for this recipient: do not retry; the address bounces."""


class AmbiguousDeliveryError(DeliveryError):
    """The connection dropped or timed out after the final dot: the server may have the message.

    Retried with the same Message-ID, so receivers can drop the duplicate.
    """


class SenderBusy(SyndicationError):
    """Another sender already drains this SQLite store (it sends what is due; try again when it is done)."""


class TokenError(SyndicationError):
    """A signed link was forged, expired, or made for another purpose."""
