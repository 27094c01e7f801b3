"""The audit log as drivers read it: who did what, and when, newest first (``core.audit``; the use cases that
change something record it in their own transaction through ``record``)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from syndication.app.service import Service
from syndication.app.subscribers import operator_name
from syndication.core.audit import AuditEvent, cli_actor
from syndication.errors import SyndicationError
from syndication.store import audit as store
from syndication.store import database

MAX_LIMIT = 1000


def record(
    session: Session,
    at: datetime,
    actor: str,
    action: str,
    subject: tuple[str, int | None],
    **details: Any,
) -> None:
    """Record, in the caller's transaction, that ``actor`` did ``action`` to ``subject`` (kind, id)."""
    if not actor:
        raise SyndicationError("an audited action needs its actor")
    kind, subject_id = subject
    store.record(session, at=at, actor=actor, action=action, subject_kind=kind, subject_id=subject_id, details=details)


def command_line_actor() -> str:
    """The actor of this process's command line: ``cli:<operating system user>``."""
    return cli_actor(operator_name())


def audit_events(
    service: Service, *, since: datetime | None = None, limit: int = 50, before_id: int | None = None
) -> list[AuditEvent]:
    """The recorded events newest first: at or after ``since``, older than the event ``before_id`` (the cursor
    of the next page: the last id of this one), at most ``limit`` (1 to 1000)."""
    if not 1 <= limit <= MAX_LIMIT:
        raise SyndicationError(f"the limit must be from 1 to {MAX_LIMIT}, not {limit}")
    with database.transaction(service.engine) as session:
        return store.events(session, since=since, before_id=before_id, limit=limit)
