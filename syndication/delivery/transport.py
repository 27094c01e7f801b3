"""Transports: what a connection that carries finished messages away must do, and the registry of them by name.

A transport is one connection to wherever mail goes (an SMTP relay today; an HTTP API or a local MTA pipe can
be added as one new module and one line in :data:`TRANSPORTS`). It sends one message to one recipient at a
time and tells the outcomes apart by what it raises (:mod:`syndication.errors`):

* nothing: the message was accepted;
* :class:`~syndication.errors.TemporaryDeliveryError`: not taken, try again later;
* :class:`~syndication.errors.PermanentDeliveryError`: refused for this recipient, do not retry (a bounce);
* :class:`~syndication.errors.SendingSideError`: refused for a reason not about the recipient (our sender,
  content, relaying, credentials, the relay's own trouble): nobody is marked, the edition is paused;
* :class:`~syndication.errors.AmbiguousDeliveryError`: it may have been taken (retried with the same Message-ID);
* :class:`~syndication.errors.ConfigError`: the configuration is wrong, no message can go.

Only :class:`syndication.delivery.mailer.Mailer` opens transports; ``[delivery] transport`` names the one used.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from syndication.config import TRANSPORT_NAMES, Settings


class Transport(Protocol):
    """One connection that carries messages away. Not thread-safe: one per thread."""

    def send(self, mail_from: str, recipient: str, message: bytes) -> None:
        """Hand ``message`` (complete, CRLF line ends) over for ``recipient``, from envelope sender ``mail_from``;
        returns once it was accepted, raises a DeliveryError subclass (or ConfigError) otherwise."""
        ...

    def close(self) -> None:
        """Close the connection, if one is open; errors on the way out are ignored."""
        ...


#: Opens a transport (a connection, which may connect only on its first send) for the settings.
TransportFactory = Callable[[Settings], Transport]


def _smtp(settings: Settings) -> Transport:
    """The SMTP relay of ``[smtp]`` (``syndication.delivery.smtp``)."""
    from syndication.delivery.smtp import SmtpClient

    return SmtpClient(settings.smtp)


#: Every transport ``[delivery] transport`` can name. config.py lists the same names (TRANSPORT_NAMES).
TRANSPORTS: dict[str, TransportFactory] = {
    "smtp": _smtp,
}

assert sorted(TRANSPORTS) == sorted(TRANSPORT_NAMES), "delivery.transport.TRANSPORTS and config.TransportName disagree"


def transport_factory(settings: Settings) -> TransportFactory:
    """The factory of the transport ``[delivery] transport`` names."""
    return TRANSPORTS[settings.delivery.transport]
