"""The one exit for outbound mail: every message the service sends gets its envelope here, is sealed and leaves.

A :class:`Mailer` belongs to the service (``Service.mailer``). Whatever the message (a digest, an editor's test
send, a confirmation, a preferences notice, an approval request), the Mailer writes the headers every message
carries the same way (From, To, Subject, Date, Message-ID, Reply-To), gives the envelope sender, and at the
moment of hand-over writes the Date (its clock's now: a retry gets its own, a late or slow send is never dated
in the past), signs with DKIM when ``[dkim]`` is configured (the key read once per Mailer) and hands the bytes to
the transport ``[delivery] transport`` names. The Message-ID is made from a key the caller keeps, so it stays the
same on every retry. It is the only caller of a transport: the queue's sender sends over connections it opens
with :meth:`Mailer.connect`, a notice over one of its own.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from datetime import datetime
from urllib.parse import urlsplit

from syndication.clock import Clock, system_clock
from syndication.config import Settings
from syndication.delivery.transport import Transport, TransportFactory, transport_factory
from syndication.mailing.message import Envelope, stamp_date

Signer = Callable[[bytes], bytes]


class Mailer:
    """Envelopes, DKIM signatures and the transport of ``settings``; ``clock`` dates messages sent now.

    ``transport`` replaces the configured transport's factory (tests and benchmarks). Thread-safe: the sender's
    threads share one Mailer, each with a connection of its own.
    """

    def __init__(
        self, settings: Settings, clock: Clock = system_clock, *, transport: TransportFactory | None = None
    ) -> None:
        self.settings = settings
        self.clock = clock
        self._open = transport or transport_factory(settings)
        #: The domain of every Message-ID: the host of ``[site] base_url``.
        self.domain = urlsplit(settings.site.base_url).hostname or "localhost"
        self._signer: Signer | None = None
        self._signer_loaded = False
        self._signer_lock = threading.Lock()

    @property
    def envelope_sender(self) -> str:
        """The envelope sender (MAIL FROM) of a message that has none of its own: ``[bounces] address``, else the
        From address. A digest's is its delivery's VERP address under ``[bounces] address``."""
        return self.settings.bounces.address or self.settings.mail.from_address

    def message_id(self, key: str) -> str:
        """The Message-ID made from ``key`` (unique per message, and the same on every retry of a delivery)."""
        return f"<{key}@{self.domain}>"

    def envelope(
        self,
        to_address: str,
        to_name: str,
        subject: str,
        *,
        key: str,
        date: datetime | None = None,
        extra: Sequence[tuple[str, str]] = (),
    ) -> Envelope:
        """The headers of one message to ``to_address``: From (``[mail]``, named after the site unless
        ``from_name`` is set), Reply-To, ``date`` (default: now), the Message-ID of ``key``, then ``extra``.

        The Date of a message that is sent is rewritten by :meth:`send` as it leaves; ``date`` only dates one
        that is not sent (a preview)."""
        mail = self.settings.mail
        return Envelope(
            from_address=mail.from_address,
            from_name=mail.from_name or self.settings.site.title,
            to_address=to_address,
            to_name=to_name,
            subject=subject,
            date=self.clock() if date is None else date,
            message_id=self.message_id(key),
            reply_to=mail.reply_to,
            extra=tuple(extra),
        )

    def check(self) -> None:
        """Read the DKIM keys now (RSA, and Ed25519 when set): ConfigError when ``[dkim]`` names one that cannot be
        used (else nothing)."""
        self._load_signer()

    def seal(self, message: bytes) -> bytes:
        """``message`` as it leaves: dated now (its Date header written from the clock), then with a
        DKIM-Signature in front when ``[dkim] domain`` is set (two, RSA then Ed25519, when ``[dkim]
        ed25519_selector`` is set too)."""
        dated = stamp_date(message, self.clock())
        sign = self._load_signer()
        return sign(dated) if sign is not None else dated

    def connect(self) -> Transport:
        """A connection of the configured transport to send many messages over (one thread's); close it after."""
        return self._open(self.settings)

    def send(
        self, recipient: str, message: bytes, connection: Transport | None = None, *, envelope_sender: str | None = None
    ) -> None:
        """Seal ``message`` (date it now, sign it) and hand it over for ``recipient``, over ``connection`` or else
        a one-off connection, from ``envelope_sender`` (a delivery's VERP address) or else the service's
        :attr:`envelope_sender`. Each call, a retry's too, dates the message anew; its Message-ID is left as is.

        Returns once the transport accepted it; raises TemporaryDeliveryError, PermanentDeliveryError or
        AmbiguousDeliveryError when it did not, ConfigError when the configuration keeps any message from going.
        """
        sealed = self.seal(message)
        mail_from = envelope_sender or self.envelope_sender
        if connection is not None:
            connection.send(mail_from, recipient, sealed)
            return
        one_off = self.connect()
        try:
            one_off.send(mail_from, recipient, sealed)
        finally:
            one_off.close()

    def _load_signer(self) -> Signer | None:
        if self._signer_loaded:
            return self._signer
        with self._signer_lock:
            if not self._signer_loaded:
                from syndication.mailing.dkim import signer  # dkimpy is imported only when mail is sent

                self._signer = signer(self.settings.dkim)
                self._signer_loaded = True
        return self._signer
