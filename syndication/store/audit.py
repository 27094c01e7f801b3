"""The audit log: one row per action recorded (``core.audit``), written by the use case in the same transaction as
the change it records, so that there is never one without the other. Functions take a Session and never commit."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from syndication.core.audit import MAX_ACTOR, AuditEvent
from syndication.store.schema import AuditEventRow


def record(
    session: Session,
    *,
    at: datetime,
    actor: str,
    action: str,
    subject_kind: str,
    subject_id: int | None,
    details: dict[str, Any] | None = None,
) -> None:
    """Record that ``actor`` did ``action`` to the subject at ``at``."""
    session.add(
        AuditEventRow(
            at=at,
            actor=actor[:MAX_ACTOR],
            action=action,
            subject_kind=subject_kind,
            subject_id=subject_id,
            details=dict(details or {}),
        )
    )
    session.flush()


def events(
    session: Session, *, since: datetime | None = None, before_id: int | None = None, limit: int = 50
) -> list[AuditEvent]:
    """The events newest first (by id: the order they were recorded), at or after ``since``, with an id below
    ``before_id`` (the cursor of the next page), at most ``limit``."""
    query = select(AuditEventRow).order_by(AuditEventRow.id.desc()).limit(limit)
    if since is not None:
        query = query.where(AuditEventRow.at >= since)
    if before_id is not None:
        query = query.where(AuditEventRow.id < before_id)
    return [_event(row) for row in session.scalars(query)]


def prune(session: Session, cutoff: datetime, *, dry_run: bool = False) -> int:
    """Remove the events recorded before ``cutoff``; returns how many (with ``dry_run``: would be)."""
    condition = AuditEventRow.at < cutoff
    if dry_run:
        return session.scalar(select(func.count()).select_from(AuditEventRow).where(condition)) or 0
    result = session.execute(delete(AuditEventRow).where(condition))
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


def _event(row: AuditEventRow) -> AuditEvent:
    return AuditEvent(row.id, row.at, row.actor, row.action, row.subject_kind, row.subject_id, dict(row.details or {}))
