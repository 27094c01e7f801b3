"""The editorial team and their sessions. Functions take a Session and never commit."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from syndication.core.audit import PERSON_ADDED
from syndication.core.team import EditorSession, Person, Role, SignedIn
from syndication.store import audit
from syndication.store.schema import EditorSessionRow, PersonRow


def add_person(
    session: Session,
    *,
    name: str,
    email: str | None,
    role: Role,
    password_hash: str | None,
    now: datetime,
    created_by: str,
) -> Person:
    """Store a new person (the caller checked that the name is free); returns them with their id."""
    row = PersonRow(
        name=name,
        email=email,
        role=str(role),
        password_hash=password_hash,
        created_at=now,
        created_by=created_by,
        invited_at=None if password_hash else now,
        password_changed_at=now if password_hash else None,
    )
    session.add(row)
    session.flush()
    return _person(row)


def people(session: Session) -> list[Person]:
    """Everyone, by name."""
    return [_person(row) for row in session.scalars(select(PersonRow).order_by(PersonRow.name))]


def count(session: Session) -> int:
    """How many people there are."""
    return int(session.scalar(select(func.count()).select_from(PersonRow)) or 0)


def owners(session: Session) -> int:
    """How many owners there are."""
    query = select(func.count()).select_from(PersonRow).where(PersonRow.role == str(Role.OWNER))
    return int(session.scalar(query) or 0)


def person(session: Session, person_id: int) -> Person | None:
    """The person with this id."""
    row = session.get(PersonRow, person_id)
    return None if row is None else _person(row)


def person_named(session: Session, name: str) -> Person | None:
    """The person with this sign-in name (exactly)."""
    row = session.scalars(select(PersonRow).where(PersonRow.name == name)).first()
    return None if row is None else _person(row)


def people_at(session: Session, email: str) -> list[Person]:
    """The people with this address (compared without case)."""
    query = select(PersonRow).where(func.lower(PersonRow.email) == email.lower()).order_by(PersonRow.id)
    return [_person(row) for row in session.scalars(query)]


def update_person(session: Session, person_id: int, **values: object) -> Person | None:
    """Change the columns named (``role``, ``email``, ``password_hash``, ``invited_at``, ``password_changed_at``,
    ``last_sign_in_at``); the person as they are now, or None when there is none."""
    row = session.get(PersonRow, person_id, with_for_update=True)
    if row is None:
        return None
    for column, value in values.items():
        setattr(row, column, str(value) if isinstance(value, Role) else value)
    session.flush()
    return _person(row)


def remove_person(session: Session, person_id: int) -> None:
    """Remove the person and their sessions."""
    session.execute(delete(EditorSessionRow).where(EditorSessionRow.person_id == person_id))
    session.execute(delete(PersonRow).where(PersonRow.id == person_id))


def adopt(
    session: Session, passwords: Mapping[str, str], now: datetime, created_by: str, *, only_if_empty: bool
) -> list[str]:
    """Make owners of ``passwords``' names (name → hash) that are not people yet, each recorded in the audit log;
    with ``only_if_empty`` only when there is nobody yet. Returns the names added."""
    if only_if_empty and count(session):
        return []
    known = set(session.scalars(select(PersonRow.name)))
    added = []
    for name, stored in passwords.items():
        if name in known:
            continue
        person = add_person(
            session,
            name=name,
            email=name if "@" in name else None,
            role=Role.OWNER,
            password_hash=stored,
            now=now,
            created_by=created_by,
        )
        details = {"name": name, "role": str(Role.OWNER), "source": "configuration"}
        audit.record(
            session, at=now, actor=created_by, action=PERSON_ADDED, subject_kind="person", subject_id=person.id,
            details=details,
        )  # fmt: skip
        added.append(name)
    return added


# --- Sessions -----------------------------------------------------------------------------------------------------


def start_session(
    session: Session, *, session_id: str, person_id: int, now: datetime, expires_at: datetime, address: str, agent: str
) -> None:
    """Record a new session, and forget the ones that ended long enough ago to sign nobody in anyway."""
    session.execute(delete(EditorSessionRow).where(EditorSessionRow.expires_at < now))
    session.add(
        EditorSessionRow(
            id=session_id,
            person_id=person_id,
            created_at=now,
            last_seen_at=now,
            expires_at=expires_at,
            address=address[:64],
            user_agent=agent[:200],
        )
    )


def signed_in(session: Session, session_id: str, now: datetime) -> tuple[SignedIn, datetime] | None:
    """Who the live session ``session_id`` signs in and when it was last seen; None when it is unknown, expired or
    revoked, or its person has no password."""
    query = (
        select(EditorSessionRow.last_seen_at, PersonRow.id, PersonRow.name, PersonRow.role)
        .join(PersonRow, PersonRow.id == EditorSessionRow.person_id)
        .where(
            EditorSessionRow.id == session_id,
            EditorSessionRow.revoked_at.is_(None),
            EditorSessionRow.expires_at > now,
            PersonRow.password_hash.is_not(None),
        )
    )
    row = session.execute(query).first()
    if row is None:
        return None
    last_seen, person_id, name, role = row
    return SignedIn(person_id, name, Role(role), session_id), last_seen


def seen(session: Session, session_id: str, now: datetime) -> None:
    """Record that the session was used now."""
    session.execute(update(EditorSessionRow).where(EditorSessionRow.id == session_id).values(last_seen_at=now))


def sessions(session: Session, now: datetime, person_id: int | None = None) -> list[EditorSession]:
    """The live sessions (not expired, not revoked), of one person or everyone's, most recently used first."""
    query = (
        select(EditorSessionRow, PersonRow.name)
        .join(PersonRow, PersonRow.id == EditorSessionRow.person_id)
        .where(EditorSessionRow.revoked_at.is_(None), EditorSessionRow.expires_at > now)
        .order_by(EditorSessionRow.last_seen_at.desc(), EditorSessionRow.id)
    )
    if person_id is not None:
        query = query.where(EditorSessionRow.person_id == person_id)
    return [_session(row, name) for row, name in session.execute(query)]


def editor_session(session: Session, session_id: str) -> EditorSession | None:
    """The session with this id, live or not."""
    query = (
        select(EditorSessionRow, PersonRow.name)
        .join(PersonRow, PersonRow.id == EditorSessionRow.person_id)
        .where(EditorSessionRow.id == session_id)
    )
    found = session.execute(query).first()
    return None if found is None else _session(found[0], found[1])


def revoke(session: Session, now: datetime, *, session_id: str | None = None, person_id: int | None = None) -> int:
    """Revoke one session, or every live one of a person; how many were live."""
    query = update(EditorSessionRow).where(EditorSessionRow.revoked_at.is_(None), EditorSessionRow.expires_at > now)
    if session_id is not None:
        query = query.where(EditorSessionRow.id == session_id)
    if person_id is not None:
        query = query.where(EditorSessionRow.person_id == person_id)
    return int(session.execute(query.values(revoked_at=now)).rowcount)  # type: ignore[attr-defined]


def _person(row: PersonRow) -> Person:
    return Person(
        id=row.id,
        name=row.name,
        email=row.email,
        role=Role(row.role),
        password_hash=row.password_hash,
        created_at=row.created_at,
        created_by=row.created_by,
        invited_at=row.invited_at,
        password_changed_at=row.password_changed_at,
        last_sign_in_at=row.last_sign_in_at,
    )


def _session(row: EditorSessionRow, name: str) -> EditorSession:
    return EditorSession(
        id=row.id,
        person_id=row.person_id,
        person_name=name,
        created_at=row.created_at,
        last_seen_at=row.last_seen_at,
        expires_at=row.expires_at,
        address=row.address,
        user_agent=row.user_agent,
        revoked_at=row.revoked_at,
    )
