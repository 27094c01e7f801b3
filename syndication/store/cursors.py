"""Each source's cursor: what it had already pulled, so the next pull asks only for what is new."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from syndication.store.schema import SourceCursorRow


def load_cursor(session: Session, source: str) -> dict[str, Any]:
    """The stored state of ``source``, or an empty dict for a source never pulled."""
    row = session.get(SourceCursorRow, source)
    return dict(row.state) if row else {}


def save_cursor(session: Session, source: str, state: dict[str, Any], now: datetime) -> None:
    """Record ``state`` for ``source``; it commits with the posts of the same pull."""
    row = session.get(SourceCursorRow, source)
    if row is None:
        session.add(SourceCursorRow(source=source, state=state, updated_at=now))
    else:
        row.state = state
        row.updated_at = now
