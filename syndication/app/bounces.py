"""Bounces: the one rule that counts them against a subscriber, and the intake of every message that reaches the
bounce address (an import of saved messages, the LMTP/SMTP receiver, the IMAP mailbox poller).

**The score.** A hard bounce (the address does not exist: ``Fault.ADDRESS``) adds ``[bounces] hard_score``, a
soft one (the mailbox cannot take mail for now: ``Fault.MAILBOX``) ``soft_score``. Only the bounces of the last
``stale_after_days`` count; when they reach ``threshold`` a pending or active subscriber becomes ``bounced``.
One delivery counts once, at its highest score: the relay's 5xx while sending and a DSN for the same message later
are one bounce. Refusals of the sending side and temporary ones never count against anyone. Every bounce is kept
(what was said, when, for which delivery and edition), whether it counted or not, so editors see why.

**The intake.** Each message is recorded once (by its SHA-256: the same message imported twice, or fetched twice,
changes nothing), classified by ``syndication.inbound.classify``, and acted on: a DSN counts a bounce for each
failed recipient, an ARF complaint makes the subscriber ``complained`` at once and for good, a message to the
``List-Unsubscribe`` mailto address unsubscribes its sender, an auto-reply is ignored, and anything else is kept
(its first 256 KiB) for an operator to look at. What was done is one readable line, stored with the message.
Nothing in a message can make the intake raise; a database error does (the receiver then answers 4xx and the MTA
tries again later).

**VERP.** With ``[bounces] address`` set, each delivery's envelope sender is ``<local>+<token>@<domain>``, the
token naming the delivery (``core.tokens.verp_token``), so a bounce is matched to its delivery even when the
report inside it is mangled.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final, Protocol

from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session

from syndication.app.service import Service
from syndication.app.webhooks import announce_subscriber
from syndication.config import Settings, signing_keys
from syndication.core.bounces import Fault
from syndication.core.models import SUBSCRIBER_STATUSES
from syndication.core.progress import Progress, running
from syndication.core.tokens import read_verp_token, verp_token
from syndication.errors import ConfigError
from syndication.inbound.classify import InboundReport, MessageKind, classify_message
from syndication.store import bounces as store
from syndication.store import database
from syndication.store.bounces import BounceRecord, InboundRecord

__all__ = [
    "KINDS",
    "BounceOutcome",
    "BounceRecord",
    "InboundOutcome",
    "InboundRecord",
    "Incoming",
    "Stoppable",
    "bounce_score",
    "delivery_of_address",
    "edition_bounces",
    "list_inbound",
    "poll_mailbox_once",
    "process_message",
    "process_messages",
    "record_bounce",
    "start_receiver",
    "subscriber_bounces",
    "verp_address",
]

log = logging.getLogger("syndication.bounces")

# The kinds of inbound message (dsn, complaint, unsubscribe, auto-reply, unrecognised), for listings and filters.
KINDS: Final = tuple(str(kind) for kind in MessageKind)
# The most of an unrecognised message kept for an operator to look at.
MAX_RAW_KEPT: Final = 256 * 1024
# The longest summary stored with a message.
MAX_SUMMARY: Final = 500
# Statuses a bounce can end: an unsubscribe or a complaint says more than a bounce and is kept.
_SUPPRESSIBLE: Final = ("pending", "active")
_NOT_COMPLAINED: Final = tuple(status for status in SUBSCRIBER_STATUSES if status != "complained")
# What the Mailer's Message-IDs of digests start with (app.editions._message_id): "edition-<e>.<s>.<random>".
_DIGEST_KEY = re.compile(r"edition-(\d{1,18})\.(\d{1,18})\.")


# --- VERP -----------------------------------------------------------------------------------------------------


def verp_address(service: Service, delivery_id: int) -> str:
    """The envelope sender of delivery ``delivery_id``: ``<local>+<token>@<domain>`` of ``[bounces] address``.

    Raises ConfigError when ``[bounces] address`` or the signing key is not set.
    """
    base = service.settings.bounces.address
    if base is None:
        raise ConfigError("[bounces] address is not set: there is no VERP envelope sender to make")
    local, _, domain = base.partition("@")
    return f"{local}+{verp_token(signing_keys(service.settings), delivery_id)}@{domain}"


def delivery_of_address(service: Service, address: str) -> int | None:
    """The delivery a VERP address under ``[bounces] address`` names (any case); None for any other address,
    and for a token that was altered or not made with one of our keys."""
    return _delivery_of_address(service.settings, _keys(service.settings), address)


def _delivery_of_address(settings: Settings, keys: Sequence[str] | None, address: str) -> int | None:
    base = settings.bounces.address
    if base is None or not keys:
        return None
    base_local, _, base_domain = base.partition("@")
    local, at, domain = address.strip().strip("<>").strip().lower().rpartition("@")
    prefix, plus, token = local.partition("+")
    if not at or not plus or prefix != base_local or domain.rstrip(".") != base_domain:
        return None
    return read_verp_token(keys, token)


def _keys(settings: Settings) -> list[str] | None:
    try:
        return signing_keys(settings)
    except ConfigError:
        return None  # no key: no VERP address can be read (nor was one made)


# --- The one bounce rule --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BounceOutcome:
    """What one bounce did to a subscriber.

    ``subscriber_id``/``email``/``subscriber_status``: who, and their status after (None: no such subscriber);
    ``counted``: a bounce was stored (False for a fault that is not the recipient's, or no such subscriber);
    ``added``: the score it added (0 when its delivery was counted before at least as high); ``score``: the
    subscriber's score now, within ``stale_after_days``; ``suppressed``: this bounce made them ``bounced``.
    """

    subscriber_id: int | None
    email: str | None
    subscriber_status: str | None
    fault: Fault
    status: str
    counted: bool = False
    added: float = 0.0
    score: float = 0.0
    threshold: float = 0.0
    suppressed: bool = False
    counted_before: bool = False

    def describe(self, address: str | None = None) -> str:
        """One line: ``bob@example.org: hard bounce 5.1.1, score 5 of 5: suppressed``."""
        who = self.email or address or "?"
        code = f" {self.status}" if self.status else ""
        if self.subscriber_id is None:
            return f"{who}: {_fault_words(self.fault)}{code}: not a subscriber, nothing to do"
        if not self.counted:
            return f"{who}: {_fault_words(self.fault)}{code}: not counted against the address"
        line = f"{who}: {_fault_words(self.fault)}{code}, score {self.score:g} of {self.threshold:g}"
        if self.counted_before:
            line += f" (this delivery counted before, +{self.added:g})"
        if self.suppressed:
            return line + ": suppressed"
        if self.subscriber_status not in _SUPPRESSIBLE:
            return line + f"; stays {self.subscriber_status}"
        return line


def _fault_words(fault: Fault) -> str:
    return {
        Fault.ADDRESS: "hard bounce",
        Fault.MAILBOX: "soft bounce",
        Fault.SENDING_SIDE: "sending-side refusal",
        Fault.TEMPORARY: "temporary failure",
    }[fault]


def record_bounce(
    service: Service,
    *,
    subscriber_id: int,
    fault: Fault | str,
    status: str = "",
    diagnostic: str = "",
    source: str,
    delivery_id: int | None = None,
    edition_id: int | None = None,
    inbound_id: int | None = None,
) -> BounceOutcome:
    """Count one bounce against a subscriber (``source`` ``smtp``: the relay's reply while sending; ``dsn``: a
    report that came back later) and suppress them when their score reaches the threshold. See the module's text
    for the rule; this is its one home."""
    with database.transaction(service.engine) as session:
        return _record_bounce(
            session,
            service.settings,
            service.clock(),
            subscriber_id=subscriber_id,
            fault=Fault(fault),
            status=status,
            diagnostic=diagnostic,
            source=source,
            delivery_id=delivery_id,
            edition_id=edition_id,
            inbound_id=inbound_id,
        )


def _record_bounce(
    session: Session,
    settings: Settings,
    now: datetime,
    *,
    subscriber_id: int,
    fault: Fault,
    status: str,
    diagnostic: str,
    source: str,
    delivery_id: int | None,
    edition_id: int | None,
    inbound_id: int | None,
    known: store.SubscriberState | None = None,
) -> BounceOutcome:
    rules = settings.bounces
    subscriber = (
        known if known is not None and known.id == subscriber_id else store.subscriber_state(session, subscriber_id)
    )
    if subscriber is None:
        return BounceOutcome(None, None, None, fault, status, threshold=rules.threshold)
    if fault not in (Fault.ADDRESS, Fault.MAILBOX):
        return BounceOutcome(
            subscriber.id, subscriber.email, subscriber.status, fault, status, threshold=rules.threshold
        )
    if delivery_id is not None and edition_id is None:
        found = store.delivery(session, delivery_id)
        edition_id = found.edition_id if found is not None else None
    weight = rules.hard_score if fault is Fault.ADDRESS else rules.soft_score
    since = now - timedelta(days=rules.stale_after_days)
    score, before = store.score_and_counted(session, subscriber_id, since, delivery_id)
    added = weight if before is None else max(0.0, weight - before)
    store.record_bounce(
        session,
        at=now,
        subscriber_id=subscriber_id,
        source=source,
        fault=str(fault),
        status=status,
        diagnostic=diagnostic[:2000],
        score=added,
        delivery_id=delivery_id,
        edition_id=edition_id,
        inbound_id=inbound_id,
    )
    score += added
    suppressed = False
    if score >= rules.threshold - 1e-9 and subscriber.status in _SUPPRESSIBLE:
        suppressed = store.end_subscription(session, subscriber_id, "bounced", now, only_from=_SUPPRESSIBLE)
        if suppressed:
            announce_subscriber(session, now, subscriber_id, "bounced")
    return BounceOutcome(
        subscriber.id,
        subscriber.email,
        "bounced" if suppressed else subscriber.status,
        fault,
        status,
        counted=True,
        added=added,
        score=score,
        threshold=rules.threshold,
        suppressed=suppressed,
        counted_before=before is not None,
    )


# --- The intake -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class InboundOutcome:
    """What processing one message did: its row (None for a duplicate), its kind, and one line saying what."""

    inbound_id: int | None
    kind: str
    outcome: str
    summary: str = ""
    duplicate: bool = False


@dataclass(frozen=True)
class Incoming:
    """One message to process: its bytes and the envelope recipients it came with (when known)."""

    raw: bytes
    envelope_recipients: Sequence[str] = ()


# Messages processed per transaction by ``process_messages`` (an import): one commit for many small changes.
BATCH_SIZE: Final = 200


def process_message(
    service: Service, raw: bytes, *, envelope_recipients: Sequence[str] = (), source: str = "import"
) -> InboundOutcome:
    """Record, classify and act on one message that reached the bounce or unsubscribe address (``source``:
    ``import``, ``receiver`` or ``mailbox``), in a transaction of its own. A message processed before changes
    nothing. Never raises for what the message holds; raises a database error (so the receiver answers 4xx and
    the MTA retries)."""
    (outcome,) = _process_batch(service, [Incoming(raw, tuple(envelope_recipients))], source)
    return outcome


def process_messages(
    service: Service,
    messages: Iterable[Incoming],
    *,
    source: str = "import",
    batch_size: int = BATCH_SIZE,
    progress: Progress | None = None,
    total: int | None = None,
) -> Iterator[InboundOutcome]:
    """``process_message`` for many messages, ``batch_size`` to a transaction (each batch's outcomes are yielded
    once it committed): what an import of saved messages uses. ``progress`` is told of each message processed,
    against ``total`` (how many ``messages`` holds, if known)."""
    with running(progress, "messages", total) as shows:
        batch: list[Incoming] = []
        for message in messages:
            batch.append(message)
            if len(batch) >= batch_size:
                yield from _processed(service, batch, source, shows)
                batch = []
        if batch:
            yield from _processed(service, batch, source, shows)


def _processed(service: Service, batch: Sequence[Incoming], source: str, progress: Progress) -> list[InboundOutcome]:
    outcomes = _process_batch(service, batch, source)
    progress.advance(len(batch))
    return outcomes


def _process_batch(service: Service, batch: Sequence[Incoming], source: str) -> list[InboundOutcome]:
    settings = service.settings
    classified = [(message, _classify(settings, message)) for message in batch]
    try:
        with database.transaction(service.engine) as session:
            now = service.clock()
            return [_process(session, settings, now, message, report, source) for message, report in classified]
    except IntegrityError:
        # A message of the batch recorded by another process at the same moment (two receivers, a receiver and
        # an import): theirs stands. One message at a time, each in its own transaction, tells which.
        if len(batch) > 1:
            return [outcome for message in batch for outcome in _process_batch(service, [message], source)]
        with database.transaction(service.engine) as session:
            if not store.inbound_seen(session, hashlib.sha256(batch[0].raw).hexdigest()):
                raise
        report = classified[0][1]
        return [_duplicate(report)]


def _classify(settings: Settings, message: Incoming) -> InboundReport:
    unsubscribe = [settings.mail.unsubscribe_mailto] if settings.mail.unsubscribe_mailto else []
    try:
        return classify_message(
            message.raw, envelope_recipients=message.envelope_recipients, unsubscribe_addresses=unsubscribe
        )
    except Exception as error:  # the classifier's own bug: the message is kept for a look, the intake goes on
        log.exception("the classifier failed on a message; it is kept as unrecognised")
        return InboundReport(
            kind=MessageKind.UNRECOGNISED,
            failed=(),
            complainant=None,
            original_message_id=None,
            addressed_to=tuple(message.envelope_recipients),
            sender=None,
            message_id=None,
            summary=f"could not be read: {type(error).__name__}: {error}",
        )


def _duplicate(report: InboundReport) -> InboundOutcome:
    summary = _one_line(report.summary)[:MAX_SUMMARY]
    return InboundOutcome(None, str(report.kind), "already processed: nothing changed", summary, duplicate=True)


def _process(
    session: Session, settings: Settings, now: datetime, message: Incoming, report: InboundReport, source: str
) -> InboundOutcome:
    kind = str(report.kind)
    summary = _one_line(report.summary)[:MAX_SUMMARY]
    raw = message.raw
    inbound_id = store.record_inbound(
        session,
        received_at=now,
        source=source,
        kind=kind,
        message_hash=hashlib.sha256(raw).hexdigest(),
        summary=summary,
        raw=raw[:MAX_RAW_KEPT] if kind == MessageKind.UNRECOGNISED else None,
    )
    if inbound_id is None:
        return _duplicate(report)
    try:
        outcome = _act(session, settings, now, report, inbound_id, message.envelope_recipients)
    except SQLAlchemyError:
        raise
    except Exception as error:  # a bug of ours on this message must not stop the intake of the next
        log.exception("processing an inbound message failed")
        outcome = f"not processed: {type(error).__name__}: {error}"
    outcome = _one_line(outcome)
    store.set_inbound_outcome(session, inbound_id, outcome)
    return InboundOutcome(inbound_id, kind, outcome, summary)


def _act(
    session: Session,
    settings: Settings,
    now: datetime,
    report: InboundReport,
    inbound_id: int,
    envelope_recipients: Sequence[str],
) -> str:
    keys = _keys(settings)
    verp = _verp_delivery(session, settings, keys, [*report.addressed_to, *envelope_recipients])
    if report.kind == MessageKind.DSN:
        return _act_on_dsn(session, settings, now, report, inbound_id, verp)
    if report.kind == MessageKind.COMPLAINT:
        return _act_on_complaint(session, now, report, verp)
    if report.kind == MessageKind.UNSUBSCRIBE:
        return _act_on_unsubscribe(session, now, report)
    if report.kind == MessageKind.AUTO_REPLY:
        return "auto-reply: ignored"
    return "unrecognised: kept for an operator to look at; nothing changed"


def _verp_delivery(
    session: Session, settings: Settings, keys: Sequence[str] | None, addresses: Iterable[str]
) -> store.DeliveryRef | None:
    for address in addresses:
        delivery_id = _delivery_of_address(settings, keys, address)
        if delivery_id is not None:
            return store.delivery(session, delivery_id)
    return None


def _delivery_of_message_id(session: Session, message_id: str | None) -> store.DeliveryRef | None:
    if not message_id:
        return None
    key = message_id.strip().strip("<>").rpartition("@")[0]
    if not key:
        return None
    named = _DIGEST_KEY.match(key)
    if named is not None:
        return store.delivery_of_message(session, key, int(named.group(1)), int(named.group(2)))
    return store.delivery_of_message(session, key)


def _subscriber_of_address(session: Session, address: str | None) -> store.SubscriberState | None:
    if not address:
        return None
    local, at, domain = address.strip().strip("<>").strip().rpartition("@")
    if not at or not local or not domain:
        return None
    return store.subscriber_state_by_email(session, f"{local.lower()}@{domain.lower().rstrip('.')}")


def _owner(
    session: Session, delivery: store.DeliveryRef | None
) -> tuple[store.DeliveryRef, store.SubscriberState] | None:
    if delivery is None or delivery.subscriber_id is None:
        return None
    owner = store.subscriber_state(session, delivery.subscriber_id)
    return None if owner is None else (delivery, owner)


def _act_on_dsn(
    session: Session,
    settings: Settings,
    now: datetime,
    report: InboundReport,
    inbound_id: int,
    verp: store.DeliveryRef | None,
) -> str:
    failed = list(report.failed)
    if not failed:
        # A delay warning ("Action: delayed") or a success notice: the MTA still tries, or it got through.
        return "delivery report with no failure (delayed or delivered): nothing changed"
    # The delivery the report is about: named by its VERP address, else by our Message-ID quoted in it.
    found = _owner(session, verp) or _owner(session, _delivery_of_message_id(session, report.original_message_id))
    lines = []
    for recipient in failed:
        delivery: store.DeliveryRef | None = None
        subscriber: store.SubscriberState | None = None
        # One delivery has one recipient: it is theirs if the report names them, or names only one address
        # (a forwarding or a relay may have rewritten it).
        if found is not None and (len(failed) == 1 or found[1].email == recipient.address.strip().lower()):
            delivery, subscriber = found
        else:
            subscriber = _subscriber_of_address(session, recipient.address)
        if subscriber is None:
            code = f" {recipient.status}" if recipient.status else ""
            lines.append(f"{recipient.address}: {_fault_words(recipient.fault)}{code}: not a subscriber, nothing to do")
            continue
        outcome = _record_bounce(
            session,
            settings,
            now,
            subscriber_id=subscriber.id,
            fault=recipient.fault,
            status=recipient.status,
            diagnostic=recipient.diagnostic,
            source="dsn",
            delivery_id=delivery.id if delivery else None,
            edition_id=delivery.edition_id if delivery else None,
            inbound_id=inbound_id,
            known=subscriber,
        )
        lines.append(outcome.describe())
    return "; ".join(lines)


def _act_on_complaint(session: Session, now: datetime, report: InboundReport, verp: store.DeliveryRef | None) -> str:
    found = _owner(session, verp) or _owner(session, _delivery_of_message_id(session, report.original_message_id))
    subscriber = found[1] if found is not None else _subscriber_of_address(session, report.complainant)
    if subscriber is None:
        who = report.complainant or "a recipient we cannot tell"
        return f"{who}: complaint (reported as spam): not a subscriber, nothing to do"
    if subscriber.status == "complained":
        return f"{subscriber.email}: complaint (reported as spam): complained already"
    # From any status: a complaint is final, whatever happened before.
    if store.end_subscription(session, subscriber.id, "complained", now, only_from=_NOT_COMPLAINED):
        announce_subscriber(session, now, subscriber.id, "complained")
    return (
        f"{subscriber.email}: complaint (reported as spam): complained, never sent to again (was {subscriber.status})"
    )


def _act_on_unsubscribe(session: Session, now: datetime, report: InboundReport) -> str:
    subscriber = _subscriber_of_address(session, report.sender)
    who = report.sender or "an unknown sender"
    if subscriber is None:
        return f"{who}: unsubscribe request: not a subscriber, nothing to do"
    if subscriber.status not in _SUPPRESSIBLE:
        return f"{subscriber.email}: unsubscribe request: stays {subscriber.status}"
    if store.end_subscription(session, subscriber.id, "unsubscribed", now, only_from=_SUPPRESSIBLE):
        announce_subscriber(session, now, subscriber.id, "unsubscribed")
    return f"{subscriber.email}: unsubscribe request: unsubscribed"


def _one_line(text: str) -> str:
    return " ".join(text.split())


# --- Reading --------------------------------------------------------------------------------------------------


def list_inbound(service: Service, limit: int = 50, kind: str | None = None) -> list[InboundRecord]:
    """The messages that reached the bounce and unsubscribe addresses, newest first, with what each did."""
    if kind is not None and kind not in KINDS:
        raise ConfigError(f"unknown kind {kind!r} (one of {', '.join(KINDS)})")
    with database.transaction(service.engine) as session:
        return store.inbound_messages(session, limit=limit, kind=kind)


def subscriber_bounces(service: Service, subscriber_id: int) -> list[BounceRecord]:
    """A subscriber's bounces, newest first: what was said, when, for which edition, and the score each added."""
    with database.transaction(service.engine) as session:
        return store.subscriber_bounces(session, subscriber_id)


def edition_bounces(service: Service, edition_id: int) -> list[BounceRecord]:
    """The bounces of an edition's deliveries, newest first."""
    with database.transaction(service.engine) as session:
        return store.edition_bounces(session, edition_id)


def recent_bounces(
    service: Service, limit: int = 100, before: tuple[datetime, int] | None = None
) -> list[tuple[BounceRecord, str | None]]:
    """The newest bounces counted against anyone, with each subscriber's address (None once erased); ``before``
    (a bounce's time and id): only those listed after it."""
    with database.transaction(service.engine) as session:
        return store.recent_bounces(session, limit, before)


def bounce_score(service: Service, subscriber_id: int) -> float:
    """A subscriber's score now: the scores of their bounces within ``[bounces] stale_after_days``."""
    since = service.clock() - timedelta(days=service.settings.bounces.stale_after_days)
    with database.transaction(service.engine) as session:
        return store.score_since(session, subscriber_id, since)


# --- The receiver and the mailbox -----------------------------------------------------------------------------


class Stoppable(Protocol):
    """A running receiver: ``stop()`` ends it."""

    def stop(self) -> None: ...


def start_receiver(
    service: Service, *, host: str | None = None, port: int | None = None, lmtp: bool | None = None
) -> Stoppable:
    """Start the LMTP (or SMTP) listener the MTA delivers the bounce address to, on ``host:port`` (default
    ``[bounces] listen``); each message is processed as it arrives. Returns it running: ``stop()`` ends it."""
    from syndication.inbound.receiver import BounceReceiver

    listen = service.settings.bounces.listen_address
    if (host is None or port is None) and listen is None:
        raise ConfigError('no address to listen on: set [bounces] listen = "127.0.0.1:8026" or give --host/--port')
    default_host, default_port = listen or ("127.0.0.1", 8026)

    def handle(raw: bytes, recipients: list[str]) -> None:
        outcome = process_message(service, raw, envelope_recipients=recipients, source="receiver")
        log.info("%s", outcome.outcome, extra={"event": "inbound", "kind": outcome.kind})

    receiver = BounceReceiver(
        handle,
        host or default_host,
        port or default_port,
        lmtp=service.settings.bounces.lmtp if lmtp is None else lmtp,
    )
    receiver.start()
    return receiver


def poll_mailbox_once(service: Service) -> tuple[int, int]:
    """Read the new messages of ``[bounces.mailbox]`` and process each (moved or flagged once processed, never
    processed twice); returns (handled, failed). ConfigError when no mailbox or no password is configured."""
    from syndication.inbound.mailbox import MailboxAccess, poll_mailbox

    mailbox = service.settings.bounces.mailbox
    if mailbox is None:
        raise ConfigError("[bounces.mailbox] is not configured")
    if mailbox.password is None or not mailbox.password.get_secret_value():
        raise ConfigError("[bounces.mailbox] has no password: set SYNDICATION_BOUNCES_MAILBOX_PASSWORD")
    access = MailboxAccess(
        host=mailbox.host,
        port=mailbox.port,
        user=mailbox.user,
        password=mailbox.password.get_secret_value(),
        folder=mailbox.folder,
        processed_folder=mailbox.processed_folder,
        security=mailbox.security,
    )

    def handle(raw: bytes, recipients: list[str]) -> None:
        outcome = process_message(service, raw, envelope_recipients=recipients, source="mailbox")
        log.info("%s", outcome.outcome, extra={"event": "inbound", "kind": outcome.kind})

    return poll_mailbox(access, handle)
