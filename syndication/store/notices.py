"""The outgoing queue of notices (a confirmation, a rejoin link, a change of preferences): what to send to whom,
claimed by which drain, and what came of it.

Functions take a Session and never commit: a notice is queued in the transaction of what it tells about (the
subscriber stored by the subscribe form), a claim is committed on its own, and each notice's outcome in a
transaction of its own. Claims are leases, like the deliveries' (``ledger.py``): on PostgreSQL several drains
claim at once (``FOR UPDATE SKIP LOCKED``); everywhere a claim only takes rows still due when it writes, so two
drains never hold one notice. A notice of a subscriber erased since is gone with them (``ON DELETE CASCADE``).
"""

from __future__ import annotations

import contextlib
import threading
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final

from sqlalchemy import Engine, and_, delete, func, insert, or_, select, update
from sqlalchemy.orm import Session

from syndication.store.schema import NoticeRow

QUEUED: Final = "queued"
CLAIMED: Final = "claimed"
SENT: Final = "sent"
FAILED: Final = "failed"
STATUSES: Final = (QUEUED, CLAIMED, SENT, FAILED)


@dataclass(frozen=True, slots=True)
class ClaimedNotice:
    """A notice a drain holds until its lease runs out."""

    notice_id: int
    kind: str
    subscriber_id: int | None
    address: str
    context: Mapping[str, Any]
    attempts: int
    created_at: datetime


_TURNS: weakref.WeakKeyDictionary[Engine, threading.Lock] = weakref.WeakKeyDictionary()
_TURNS_LOCK = threading.Lock()


def write_turn(engine: Engine) -> contextlib.AbstractContextManager[object]:
    """Held around a transaction that writes the queue (and what is stored with it): on SQLite, which has one
    writer, this process's threads take turns here instead of meeting SQLite's busy handler, which waits in sleeps
    of milliseconds (the web's request threads and its drain write at once). PostgreSQL needs no turns."""
    if engine.dialect.name != "sqlite":
        return contextlib.nullcontext()
    with _TURNS_LOCK:
        turn = _TURNS.get(engine)
        if turn is None:
            turn = _TURNS[engine] = threading.Lock()
    return turn


_INSERT = insert(NoticeRow).returning(NoticeRow.id)


def queue(
    session: Session,
    kind: str,
    address: str,
    context: Mapping[str, Any],
    now: datetime,
    *,
    subscriber_id: int | None = None,
) -> int:
    """Queue one notice, due now; returns its id."""
    values = {
        "kind": kind, "subscriber_id": subscriber_id, "address": address, "context": dict(context),
        "status": QUEUED, "attempts": 0, "created_at": now, "next_attempt_at": now, "last_error": "",
    }  # fmt: skip
    notice_id: int = session.execute(_INSERT, values).scalar_one()
    return notice_id


def _due(now: datetime) -> Any:
    return or_(
        and_(NoticeRow.status == QUEUED, NoticeRow.next_attempt_at <= now),
        and_(NoticeRow.status == CLAIMED, NoticeRow.lease_until < now),
    )


_CLAIMED_COLUMNS = (
    NoticeRow.id,
    NoticeRow.kind,
    NoticeRow.subscriber_id,
    NoticeRow.address,
    NoticeRow.context,
    NoticeRow.attempts,
    NoticeRow.created_at,
)


def claim(session: Session, owner: str, now: datetime, *, lease: timedelta, limit: int) -> list[ClaimedNotice]:
    """Lease up to ``limit`` due notices (queued and due, or held by a drain whose lease ran out) to ``owner``."""
    due = select(NoticeRow.id).where(_due(now)).order_by(NoticeRow.next_attempt_at, NoticeRow.id).limit(limit)
    if session.get_bind().dialect.name == "postgresql":
        due = due.with_for_update(skip_locked=True)
    ids = list(session.scalars(due))
    if not ids:
        return []
    # Only rows still due when written: on SQLite, where nothing is locked while reading, a drain that read the
    # same rows first has them already.
    taken = session.execute(
        update(NoticeRow)
        .where(NoticeRow.id.in_(ids), _due(now))
        .values(status=CLAIMED, lease_owner=owner, lease_until=now + lease)
        .returning(*_CLAIMED_COLUMNS)
    ).all()
    claims = [ClaimedNotice(*row) for row in taken]
    return sorted(claims, key=lambda notice: notice.notice_id)


def record(
    session: Session,
    notice_id: int,
    owner: str,
    now: datetime,
    status: str,
    *,
    detail: str = "",
    next_attempt_at: datetime | None = None,
) -> bool:
    """Record an attempt's outcome (``sent``, ``failed``, or ``queued`` again with ``next_attempt_at``) if
    ``owner`` still holds the notice; whether it was recorded."""
    values: dict[str, Any] = {
        "status": status, "lease_owner": None, "lease_until": None, "last_error": detail[:1000],
        "attempts": NoticeRow.attempts + 1,
    }  # fmt: skip
    if status == SENT:
        values["sent_at"] = now
    if next_attempt_at is not None:
        values["next_attempt_at"] = next_attempt_at
    result = session.execute(
        update(NoticeRow)
        .where(NoticeRow.id == notice_id, NoticeRow.lease_owner == owner, NoticeRow.status == CLAIMED)
        .values(**values)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def release(session: Session, notice_ids: list[int], owner: str) -> None:
    """Give claimed notices back to the queue unsent, their attempts unspent (a drain stopping)."""
    if notice_ids:
        session.execute(
            update(NoticeRow)
            .where(NoticeRow.id.in_(notice_ids), NoticeRow.lease_owner == owner, NoticeRow.status == CLAIMED)
            .values(status=QUEUED, lease_owner=None, lease_until=None)
        )


def next_due(session: Session) -> datetime | None:
    """When the next queued notice is due (None: none is queued)."""
    return session.scalar(select(func.min(NoticeRow.next_attempt_at)).where(NoticeRow.status == QUEUED))


def counts(session: Session) -> dict[str, int]:
    """Notices per status."""
    rows = session.execute(select(NoticeRow.status, func.count()).group_by(NoticeRow.status)).all()
    return {str(status): int(count) for status, count in rows}


def prune(session: Session, before: datetime) -> int:
    """Forget sent and failed notices last due before ``before``; how many."""
    result = session.execute(
        delete(NoticeRow).where(NoticeRow.status.in_((SENT, FAILED)), NoticeRow.next_attempt_at < before)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]
