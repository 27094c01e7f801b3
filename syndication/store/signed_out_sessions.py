"""Editor sessions signed out before they expired.

A session cookie is a signed token that stays valid until it expires; signing out deletes it from the browser,
but a copy (another device's, a stolen one) would still sign in. Each session carries a random id, and signing
out records that id here until the cookie would have expired anyway; rows past that are pruned as new ones come.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from syndication.store.schema import SignedOutSessionRow


def sign_out(session: Session, session_id: str, expires_at: datetime, now: datetime) -> None:
    """Record that ``session_id`` is signed out (until ``expires_at``), and forget the ones already expired."""
    session.execute(delete(SignedOutSessionRow).where(SignedOutSessionRow.expires_at < now))
    if session.get(SignedOutSessionRow, session_id) is None:
        session.add(SignedOutSessionRow(session_id=session_id, expires_at=expires_at))


def is_signed_out(session: Session, session_id: str) -> bool:
    """Whether ``session_id`` was signed out."""
    query = select(SignedOutSessionRow.session_id).where(SignedOutSessionRow.session_id == session_id)
    return session.execute(query).first() is not None
