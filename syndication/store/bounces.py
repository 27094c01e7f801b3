"""Storing and reading the messages that reached the bounce address and the bounces counted per subscriber.

Functions take a Session and never commit. ``inbound_messages`` holds one row per message (its SHA-256 makes
processing idempotent); ``bounces`` one row per bounce counted against a subscriber, with the score it added.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Update, and_, bindparam, func, insert, or_, select, update
from sqlalchemy.orm import Session

from syndication.store.schema import BounceRow, DeliveryRow, InboundMessageRow, SubscriberRow

# The statements of the intake are Core, built once with bound parameters: an import of thousands of reports runs
# a handful of them per message, and building a statement each time (or the ORM's unit of work) would cost several
# times what the database does.
_SEEN = select(InboundMessageRow.id).where(InboundMessageRow.message_hash == bindparam("digest"))
_INSERT_INBOUND = insert(InboundMessageRow)
_SET_OUTCOME = (
    update(InboundMessageRow)
    .where(InboundMessageRow.id == bindparam("inbound_id"))
    .values(outcome=bindparam("new_outcome"))
)
_INSERT_BOUNCE = insert(BounceRow)
_SCORE = select(
    func.coalesce(func.sum(BounceRow.score).filter(BounceRow.at >= bindparam("since")), 0.0),
    func.max(BounceRow.score).filter(BounceRow.delivery_id == bindparam("delivery_id")),
).where(BounceRow.subscriber_id == bindparam("subscriber_id"))
_STATE_COLUMNS = (SubscriberRow.id, SubscriberRow.email, SubscriberRow.status)
_STATE = select(*_STATE_COLUMNS).where(SubscriberRow.id == bindparam("subscriber_id"))
_STATE_BY_EMAIL = select(*_STATE_COLUMNS).where(SubscriberRow.email == bindparam("email"))
_DELIVERY = select(DeliveryRow.id, DeliveryRow.edition_id, DeliveryRow.subscriber_id, DeliveryRow.message_id).where(
    DeliveryRow.id == bindparam("delivery_id")
)


@dataclass(frozen=True, slots=True)
class InboundRecord:
    """One message that reached the bounce or unsubscribe address, and what was done with it."""

    id: int
    received_at: datetime
    source: str
    kind: str
    summary: str
    outcome: str
    raw_bytes: int  # bytes kept of the message (only unrecognised messages are kept)


@dataclass(frozen=True, slots=True)
class BounceRecord:
    """One bounce counted against a subscriber: what was said, when, for which delivery and edition."""

    id: int
    at: datetime
    subscriber_id: int | None
    delivery_id: int | None
    edition_id: int | None
    inbound_id: int | None
    source: str
    fault: str
    status: str
    diagnostic: str
    score: float


@dataclass(frozen=True, slots=True)
class SubscriberState:
    """What a bounce needs of a subscriber: their id, address and status."""

    id: int
    email: str
    status: str


@dataclass(frozen=True, slots=True)
class DeliveryRef:
    """What a bounce needs of a delivery: its id, edition and subscriber."""

    id: int
    edition_id: int
    subscriber_id: int | None
    message_id: str


def inbound_seen(session: Session, message_hash: str) -> bool:
    """Whether a message with this SHA-256 (hex) was recorded before."""
    return session.connection().execute(_SEEN, {"digest": message_hash}).first() is not None


def record_inbound(
    session: Session,
    *,
    received_at: datetime,
    source: str,
    kind: str,
    message_hash: str,
    summary: str,
    outcome: str = "",
    raw: bytes | None = None,
) -> int | None:
    """Record a message; its id, or None when a message with this hash was recorded before (nothing is written).

    Two processes recording the same message at once: the second fails at flush or commit on the unique hash.
    """
    if inbound_seen(session, message_hash):
        return None
    values = {"received_at": received_at, "source": source, "kind": kind, "message_hash": message_hash,
              "summary": summary, "outcome": outcome, "raw": raw}  # fmt: skip
    key = session.connection().execute(_INSERT_INBOUND, values).inserted_primary_key
    assert key is not None
    return int(key[0])


def set_inbound_outcome(session: Session, inbound_id: int, outcome: str) -> None:
    """Write what processing a recorded message did."""
    session.connection().execute(_SET_OUTCOME, {"inbound_id": inbound_id, "new_outcome": outcome})


def inbound_messages(session: Session, *, limit: int = 50, kind: str | None = None) -> list[InboundRecord]:
    """The recorded messages, newest first, optionally of one kind."""
    raw_bytes = func.coalesce(func.length(InboundMessageRow.raw), 0)
    query = select(
        InboundMessageRow.id,
        InboundMessageRow.received_at,
        InboundMessageRow.source,
        InboundMessageRow.kind,
        InboundMessageRow.summary,
        InboundMessageRow.outcome,
        raw_bytes,
    ).order_by(InboundMessageRow.received_at.desc(), InboundMessageRow.id.desc())
    if kind is not None:
        query = query.where(InboundMessageRow.kind == kind)
    return [InboundRecord(*row) for row in session.execute(query.limit(limit))]


def inbound_raw(session: Session, inbound_id: int) -> bytes | None:
    """The bytes kept of a recorded message (unrecognised ones), or None."""
    return session.scalar(select(InboundMessageRow.raw).where(InboundMessageRow.id == inbound_id))


def record_bounce(
    session: Session,
    *,
    at: datetime,
    subscriber_id: int,
    source: str,
    fault: str,
    status: str,
    diagnostic: str,
    score: float,
    delivery_id: int | None = None,
    edition_id: int | None = None,
    inbound_id: int | None = None,
) -> BounceRecord:
    """Store one bounce counted against a subscriber."""
    values = {"at": at, "subscriber_id": subscriber_id, "delivery_id": delivery_id, "edition_id": edition_id,
              "inbound_id": inbound_id, "source": source, "fault": fault, "status": status[:16],
              "diagnostic": diagnostic, "score": score}  # fmt: skip
    key = session.connection().execute(_INSERT_BOUNCE, values).inserted_primary_key
    assert key is not None
    return BounceRecord(id=int(key[0]), **values)  # type: ignore[arg-type]


def score_and_counted(
    session: Session, subscriber_id: int, since: datetime, delivery_id: int | None
) -> tuple[float, float | None]:
    """In one query: the sum of the scores of the subscriber's bounces at or after ``since``, and the most a
    bounce of ``delivery_id`` added for them (None when none was recorded, or no delivery is given)."""
    params = {"subscriber_id": subscriber_id, "since": since, "delivery_id": delivery_id}
    recent, counted = session.connection().execute(_SCORE, params).one()
    return float(recent or 0.0), (None if delivery_id is None or counted is None else float(counted))


def subscriber_state(session: Session, subscriber_id: int) -> SubscriberState | None:
    """A subscriber's id, address and status, or None."""
    row = session.connection().execute(_STATE, {"subscriber_id": subscriber_id}).first()
    return None if row is None else SubscriberState(*row)


def subscriber_state_by_email(session: Session, email: str) -> SubscriberState | None:
    """The id, address and status of the subscriber with this (normalised) address, or None."""
    row = session.connection().execute(_STATE_BY_EMAIL, {"email": email}).first()
    return None if row is None else SubscriberState(*row)


def end_subscription(
    session: Session, subscriber_id: int, status: str, now: datetime, *, only_from: tuple[str, ...]
) -> bool:
    """Give a subscriber ``status`` (bounced, complained, unsubscribed) if theirs is one of ``only_from``; whether
    it changed. One statement, so a status another transaction set in the meantime is never overwritten."""
    statement = _END.get(only_from)
    if statement is None:
        statement = _END[only_from] = (
            update(SubscriberRow)
            .where(SubscriberRow.id == bindparam("subscriber_id"), SubscriberRow.status.in_(only_from))
            .values(status=bindparam("new_status"), status_changed_at=bindparam("changed_at"))
        )
    params = {"subscriber_id": subscriber_id, "new_status": status, "changed_at": now}
    return bool(session.connection().execute(statement, params).rowcount)


# One statement per set of statuses a subscription may end from (an expanding IN would be compiled every time).
_END: dict[tuple[str, ...], Update] = {}


def score_since(session: Session, subscriber_id: int, since: datetime) -> float:
    """The sum of the scores of the subscriber's bounces at or after ``since``."""
    return score_and_counted(session, subscriber_id, since, None)[0]


def subscriber_bounces(session: Session, subscriber_id: int) -> list[BounceRecord]:
    """A subscriber's bounces, newest first."""
    query = select(BounceRow).where(BounceRow.subscriber_id == subscriber_id)
    return [_bounce(row) for row in session.scalars(query.order_by(BounceRow.at.desc(), BounceRow.id.desc()))]


def edition_bounces(session: Session, edition_id: int) -> list[BounceRecord]:
    """The bounces of an edition's deliveries, newest first."""
    query = select(BounceRow).where(BounceRow.edition_id == edition_id)
    return [_bounce(row) for row in session.scalars(query.order_by(BounceRow.at.desc(), BounceRow.id.desc()))]


def recent_bounces(
    session: Session, limit: int = 100, before: tuple[datetime, int] | None = None
) -> list[tuple[BounceRecord, str | None]]:
    """The newest bounces counted against anyone, each with the subscriber's address (None once erased); with
    ``before`` (a bounce's time and id), those after it in this order (the next page of a list)."""
    query = (
        select(BounceRow, SubscriberRow.email)
        .outerjoin(SubscriberRow, SubscriberRow.id == BounceRow.subscriber_id)
        .order_by(BounceRow.at.desc(), BounceRow.id.desc())
        .limit(limit)
    )
    if before is not None:
        at, bounce_id = before
        query = query.where(or_(BounceRow.at < at, and_(BounceRow.at == at, BounceRow.id < bounce_id)))
    return [(_bounce(row), email) for row, email in session.execute(query)]


def delivery(session: Session, delivery_id: int) -> DeliveryRef | None:
    """The delivery with this id, or None."""
    row = session.connection().execute(_DELIVERY, {"delivery_id": delivery_id}).first()
    return None if row is None else DeliveryRef(*row)


def delivery_of_message(
    session: Session, message_key: str, edition_id: int | None = None, subscriber_id: int | None = None
) -> DeliveryRef | None:
    """The delivery whose stored ``message_id`` (the left part of its Message-ID) is ``message_key``.

    With the edition and subscriber the key names (``edition-<e>.<s>.<random>``) the look-up uses the unique
    (edition, subscriber) index; without, it searches the whole table.
    """
    query = select(DeliveryRow.id, DeliveryRow.edition_id, DeliveryRow.subscriber_id, DeliveryRow.message_id).where(
        DeliveryRow.message_id == message_key
    )
    if edition_id is not None and subscriber_id is not None:
        query = query.where(DeliveryRow.edition_id == edition_id, DeliveryRow.subscriber_id == subscriber_id)
    row = session.execute(query.limit(1)).first()
    return None if row is None else DeliveryRef(*row)


def _bounce(row: BounceRow) -> BounceRecord:
    return BounceRecord(
        id=row.id,
        at=row.at,
        subscriber_id=row.subscriber_id,
        delivery_id=row.delivery_id,
        edition_id=row.edition_id,
        inbound_id=row.inbound_id,
        source=row.source,
        fault=row.fault,
        status=row.status,
        diagnostic=row.diagnostic,
        score=row.score,
    )
