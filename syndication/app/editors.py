"""The editors' sessions: a session signed out anywhere is signed out everywhere until it would have expired."""

from __future__ import annotations

from datetime import timedelta

from syndication.app.service import Service
from syndication.store import database, signed_out_sessions


def is_signed_out(service: Service, session_id: str) -> bool:
    """True when the editor's session ``session_id`` was signed out."""
    with database.transaction(service.engine) as session:
        return signed_out_sessions.is_signed_out(session, session_id)


def sign_out(service: Service, session_id: str, session_seconds: int) -> None:
    """Record that session ``session_id`` ended; it is remembered as long as it could have lasted."""
    now = service.clock()
    with database.transaction(service.engine) as session:
        signed_out_sessions.sign_out(session, session_id, now + timedelta(seconds=session_seconds), now)
