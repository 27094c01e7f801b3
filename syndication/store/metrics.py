"""Counts the store keeps, read for ``/metrics`` at scrape time: the same figures whichever process is asked."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import InstrumentedAttribute, Session

from syndication.core.models import DeliveryStatus, EditionStatus
from syndication.store.schema import (
    BounceRow,
    DeliveryRow,
    EditionRow,
    InboundMessageRow,
    JobRunRow,
    SubscriberRow,
)

# Deliveries waiting for their time: queued, or deferred until a retry (a claimed one is being sent).
_WAITING = (DeliveryStatus.QUEUED, DeliveryStatus.DEFERRED)


def count_by(session: Session, column: InstrumentedAttribute[str]) -> dict[str, int]:
    """How many rows of ``column``'s table hold each of its values."""
    return {str(value): count for value, count in session.execute(select(column, func.count()).group_by(column))}


def deliveries_by_status(session: Session) -> dict[str, int]:
    """Every delivery ever queued (those not pruned), by status."""
    return count_by(session, DeliveryRow.status)


def editions_by_status(session: Session) -> dict[str, int]:
    """Every edition, by status."""
    return count_by(session, EditionRow.status)


def subscribers_by_status(session: Session) -> dict[str, int]:
    """Every subscriber, by status."""
    return count_by(session, SubscriberRow.status)


def bounces_by_fault(session: Session) -> dict[str, int]:
    """Every bounce counted against a subscriber, by fault (address: hard, mailbox: soft)."""
    return count_by(session, BounceRow.fault)


def inbound_by_kind(session: Session) -> dict[str, int]:
    """Every message that reached the bounce or unsubscribe address, by kind (dsn, complaint, ...)."""
    return count_by(session, InboundMessageRow.kind)


def oldest_due(session: Session, now: datetime) -> datetime | None:
    """When the longest-waiting delivery of a sending edition became due, if one is due now."""
    query = (
        select(func.min(DeliveryRow.next_attempt_at))
        .join(EditionRow, EditionRow.id == DeliveryRow.edition_id)
        .where(
            EditionRow.status == EditionStatus.SENDING,
            DeliveryRow.status.in_(_WAITING),
            DeliveryRow.next_attempt_at <= now,
        )
    )
    return session.scalar(query)  # min() keeps the column's type: a UTC datetime on every database


def job_results(session: Session) -> list[tuple[str, bool | None, datetime | None]]:
    """Each scheduled job's last run: its id, whether it went well (None while running), when it finished."""
    query = select(JobRunRow.job_id, JobRunRow.ok, JobRunRow.finished_at).order_by(JobRunRow.job_id)
    return [(job_id, ok, finished) for job_id, ok, finished in session.execute(query)]
