"""Retention: the old rows ``syndication prune`` removes, and why exactly-once survives it.

Exactly-once rests on the edition, never on its deliveries once it is over. Editions are never removed: the
unique window (``uq_editions_window``) makes a re-run of a window find its edition instead of making another,
and ``edition_posts`` keeps each post in the one edition of its cadence that held it. A re-run of a finished
edition queues nothing (``core.editions.on_rerun``): a cancelled one takes no delivery, and a sent one none
either unless deliveries are still open under it. So only the deliveries (and, with them, their attempts) of
editions that are

- sent or cancelled, the statuses no re-run or scheduler queues to (a draft, sending or paused edition is never
  touched, nor an empty one, which has none),
- with no delivery still open (queued, claimed or deferred: one may be in flight, and a sent edition holding
  one goes back to sending on a re-run, so it keeps them all),
- whose window ended before the cut-off, and with no attempt at or after it (an operator's recent ``editions
  retry`` keeps the edition's deliveries for another full period),

are removed, and all of an edition's deliveries at once: a re-run of it then finds a final edition with no open
delivery, and queues nothing. What is lost is the per-message record (the ``editions list`` counts of that
edition, a retry of what it gave up, the tie of a very late bounce to its delivery); the edition keeps its
``status_reason`` ("2 failed"). Bounces keep their row (``delivery_id`` set to null by its key).

Each statement re-checks what it removes (a delivery still final, its edition still sent or cancelled), so one
that an operator re-queued meanwhile is left alone. Functions take a Session and never commit.

Received messages keep their row for good (its ``message_hash`` makes processing idempotent: the same bounce
imported again changes nothing); only the kept bytes of an unrecognised one are let go.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ColumnElement, Select, delete, func, select, update
from sqlalchemy.orm import Session

from syndication.core.models import FINAL_DELIVERIES, OPEN_DELIVERIES, EditionStatus
from syndication.store.schema import DeliveryAttemptRow, DeliveryRow, EditionRow, InboundMessageRow

# The edition statuses whose deliveries may go: nothing is ever queued to them again.
PRUNABLE_EDITIONS = (EditionStatus.SENT, EditionStatus.CANCELLED)


def prunable_editions(session: Session, cutoff: datetime) -> list[int]:
    """The editions whose deliveries may be removed at ``cutoff`` (the module's rules), oldest first."""
    still_open = (
        select(DeliveryRow.id)
        .where(DeliveryRow.edition_id == EditionRow.id, DeliveryRow.status.in_(OPEN_DELIVERIES))
        .exists()
    )
    recent = (
        select(DeliveryAttemptRow.id)
        .join(DeliveryRow, DeliveryRow.id == DeliveryAttemptRow.delivery_id)
        .where(DeliveryRow.edition_id == EditionRow.id, DeliveryAttemptRow.at >= cutoff)
        .exists()
    )
    has_deliveries = select(DeliveryRow.id).where(DeliveryRow.edition_id == EditionRow.id).exists()
    query = (
        select(EditionRow.id)
        .where(
            EditionRow.status.in_(PRUNABLE_EDITIONS),
            EditionRow.until < cutoff,
            has_deliveries,
            ~still_open,
            ~recent,
        )
        .order_by(EditionRow.until, EditionRow.id)
    )
    return list(session.scalars(query))


def _finished_deliveries(edition_id: int) -> Select[int]:
    # Re-checked in each statement: still final, under an edition still sent or cancelled.
    return (
        select(DeliveryRow.id)
        .join(EditionRow, EditionRow.id == DeliveryRow.edition_id)
        .where(
            DeliveryRow.edition_id == edition_id,
            DeliveryRow.status.in_(FINAL_DELIVERIES),
            EditionRow.status.in_(PRUNABLE_EDITIONS),
        )
    )


def _count(session: Session, condition: ColumnElement[bool], table: type) -> int:
    return session.scalar(select(func.count()).select_from(table).where(condition)) or 0


def prune_edition(session: Session, edition_id: int, *, dry_run: bool = False) -> tuple[int, int]:
    """Remove the finished deliveries of one edition ``prunable_editions`` named, and their attempts; returns
    how many of each (with ``dry_run``, how many would go, and nothing is removed)."""
    finished = _finished_deliveries(edition_id)
    if dry_run:
        attempts = _count(session, DeliveryAttemptRow.delivery_id.in_(finished), DeliveryAttemptRow)
        return _count(session, DeliveryRow.id.in_(finished), DeliveryRow), attempts
    # The attempts first, by name (not left to the key's ON DELETE CASCADE), so that they are counted.
    gone = session.execute(delete(DeliveryAttemptRow).where(DeliveryAttemptRow.delivery_id.in_(finished)))
    removed = session.execute(delete(DeliveryRow).where(DeliveryRow.id.in_(finished)))
    return int(removed.rowcount or 0), int(gone.rowcount or 0)  # type: ignore[attr-defined]


def prune_inbound_bytes(session: Session, cutoff: datetime, *, dry_run: bool = False) -> int:
    """Let go of the bytes kept of messages received before ``cutoff`` (their rows stay); returns how many
    (with ``dry_run``: would be)."""
    condition = (InboundMessageRow.received_at < cutoff) & InboundMessageRow.raw.is_not(None)
    if dry_run:
        return _count(session, condition, InboundMessageRow)
    result = session.execute(update(InboundMessageRow).where(condition).values(raw=None))
    return int(result.rowcount or 0)  # type: ignore[attr-defined]
