"""Storing and reading subscribers and suppressions. Functions take a Session and never commit.

Addresses reach this module already checked and normalised (``syndication.app.subscribers.normalise_email``);
the suppression list holds only their SHA-256, so an erased person leaves no readable address behind.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, String, Text, cast, delete, func, insert, select
from sqlalchemy.orm import Session

from syndication.core.models import CADENCES, SUBSCRIBER_STATUSES, Consent, Subscriber
from syndication.store.schema import Base, SubscriberRow, SuppressionRow

_subscribers = Base.metadata.tables[SubscriberRow.__tablename__]

# Rows fetched at a time when streaming: the sender walks every active subscriber without holding them all.
_STREAM_CHUNK = 500


def email_hash(email: str) -> str:
    """The SHA-256 (hex) of a normalised address: what the suppression list keeps instead of the address."""
    return hashlib.sha256(email.encode("utf-8")).hexdigest()


@dataclass(frozen=True, slots=True)
class NewSubscriber:
    """A subscriber to add: their address (new to the store), preferences, status and consent."""

    email: str
    name: str
    language: str
    themes: Sequence[str] | None
    cadence: str
    status: str
    consent: Consent
    reads: Sequence[str] = ()
    language_choice: str | None = None


def insert_subscriber(
    session: Session,
    *,
    email: str,
    name: str,
    language: str,
    themes: Sequence[str] | None,
    cadence: str,
    status: str,
    consent: Consent,
    now: datetime,
) -> Subscriber:
    """Add a subscriber; an ``active`` one counts as confirmed at ``now``. The address must be new."""
    new = NewSubscriber(email, name, language, themes, cadence, status, consent)
    (subscriber,) = insert_subscribers(session, [new], now)
    return subscriber


def insert_subscribers(session: Session, new: Sequence[NewSubscriber], now: datetime) -> list[Subscriber]:
    """Add subscribers, in their order, by one statement (an import adds a thousand at a time); ``active`` ones
    count as confirmed at ``now``. Every address must be new."""
    if not new:
        return []
    for one in new:
        _check(status=one.status, cadence=one.cadence)
    values = [
        {
            "email": one.email,
            "name": one.name,
            "language": one.language,
            "themes": None if one.themes is None else list(one.themes),
            "cadence": one.cadence,
            "status": one.status,
            "consent_at": one.consent.at,
            "consent_method": one.consent.method,
            "consent_source": one.consent.source,
            "created_at": now,
            "status_changed_at": now,
            "confirmed_at": now if one.status == "active" else None,
            "reads": list(one.reads) or None,
            "language_choice": _stored_choice(one.language_choice),
        }
        for one in new
    ]
    # Core, and no RETURNING: one short statement run for every row (psycopg pipelines them), where a multi-row
    # VALUES with RETURNING has the driver parse thousands of placeholders per chunk. They are read back by address
    # in one query.
    session.execute(insert(_subscribers), values)
    added = subscribers_by_emails(session, [one.email for one in new])
    return [added[one.email] for one in new]


def _stored_choice(language_choice: str | None) -> str | None:
    """The language choice as stored: None for the site's (``default``)."""
    return None if language_choice == "default" else language_choice


def subscriber_by_id(session: Session, subscriber_id: int) -> Subscriber | None:
    """The subscriber with this id, or None."""
    row = session.get(SubscriberRow, subscriber_id)
    return _subscriber(row) if row is not None else None


def subscribers_by_ids(session: Session, subscriber_ids: Sequence[int]) -> dict[int, Subscriber]:
    """The subscribers with these ids (those still there), by id, in one query."""
    rows = session.scalars(select(SubscriberRow).where(SubscriberRow.id.in_(list(subscriber_ids))))
    return {row.id: _subscriber(row) for row in rows}


def subscriber_by_email(session: Session, email: str) -> Subscriber | None:
    """The subscriber with this normalised address, or None."""
    return subscribers_by_emails(session, [email]).get(email)


def subscribers_by_emails(session: Session, emails: Sequence[str]) -> dict[str, Subscriber]:
    """The subscribers with these normalised addresses (those there), by address, in one query."""
    if not emails:
        return {}
    rows = session.scalars(select(SubscriberRow).where(SubscriberRow.email.in_(list(emails))))
    return {row.email: _subscriber(row) for row in rows}


def status_since(session: Session, subscriber_id: int) -> datetime | None:
    """When the subscriber's status last changed, or None if there is no such subscriber."""
    return session.scalar(select(SubscriberRow.status_changed_at).where(SubscriberRow.id == subscriber_id))


def update_preferences(
    session: Session,
    subscriber_id: int,
    *,
    name: str | None = None,
    language: str | None = None,
    themes: Sequence[str] | None = None,
    everything: bool = False,
    cadence: str | None = None,
    reads: Sequence[str] | None = None,
    language_choice: str | None = None,
) -> Subscriber | None:
    """Change what is given (None keeps a value; ``everything=True`` sets themes to all; ``language_choice``
    ``"default"`` goes back to the site's); None if not found."""
    row = session.get(SubscriberRow, subscriber_id)
    if row is None:
        return None
    if reads is not None:
        row.reads = list(reads) or None
    if language_choice is not None:
        row.language_choice = _stored_choice(language_choice)
    if cadence is not None:
        _check(cadence=cadence)
        row.cadence = cadence
    if name is not None:
        row.name = name
    if language is not None:
        row.language = language
    if everything:
        row.themes = None
    elif themes is not None:
        row.themes = list(themes)
    session.flush()
    return _subscriber(row)


def set_status(session: Session, subscriber_id: int, status: str, now: datetime) -> Subscriber | None:
    """Set a subscriber's status (a change is dated ``now``; becoming active confirms); None if not found."""
    _check(status=status)
    row = session.get(SubscriberRow, subscriber_id)
    if row is None:
        return None
    if row.status != status:
        row.status = status
        row.status_changed_at = now
    if status == "active" and row.confirmed_at is None:
        row.confirmed_at = now
    session.flush()
    return _subscriber(row)


def record_consent(session: Session, subscriber_id: int, consent: Consent) -> Subscriber | None:
    """Replace the consent record (a renewed consent replaces the old one); None if not found."""
    row = session.get(SubscriberRow, subscriber_id)
    if row is None:
        return None
    row.consent_at, row.consent_method, row.consent_source = consent.at, consent.method, consent.source
    session.flush()
    return _subscriber(row)


def delete_subscriber(session: Session, subscriber_id: int) -> bool:
    """Erase a subscriber's row; their deliveries stay, with no subscriber (the foreign key sets NULL)."""
    result = session.execute(delete(SubscriberRow).where(SubscriberRow.id == subscriber_id))
    return bool(getattr(result, "rowcount", 0))


def active_subscribers(session: Session, cadence: str) -> Iterator[Subscriber]:
    """Every active subscriber of ``cadence`` in id order, fetched in chunks (the sender's list)."""
    _check(cadence=cadence)
    return subscribers(session, status="active", cadence=cadence)


def subscribers(session: Session, *, status: str | None = None, cadence: str | None = None) -> Iterator[Subscriber]:
    """Subscribers in id order, optionally of one status and one cadence, fetched in chunks."""
    _check(status=status, cadence=cadence)
    return (_subscriber(row) for row in _rows(session, status=status, cadence=cadence))


def subscriber_records(
    session: Session, *, status: str | None = None, cadence: str | None = None
) -> Iterator[dict[str, Any]]:
    """Every column we hold on each subscriber, by column name, in id order: what an export must show.

    Read from the table itself, so a column added later is exported without anyone remembering to.
    """
    _check(status=status, cadence=cadence)
    columns = record_columns()
    return ({key: getattr(row, key) for key in columns} for row in _rows(session, status=status, cadence=cadence))


def record_columns() -> list[str]:
    """The names of every column of a subscriber, in table order (the keys of ``subscriber_records``)."""
    return [column.key for column in SubscriberRow.__table__.columns]


def status_counts(session: Session) -> dict[tuple[str, str], int]:
    """How many subscribers there are per (cadence, status)."""
    query = select(SubscriberRow.cadence, SubscriberRow.status, func.count()).group_by(
        SubscriberRow.cadence, SubscriberRow.status
    )
    return {(cadence, status): count for cadence, status, count in session.execute(query)}


def theme_counts(session: Session, status: str = "active") -> dict[str | None, int]:
    """How many subscribers of ``status`` follow each theme slug; the None key counts those who follow everything."""
    _check(status=status)
    counts: Counter[str | None] = Counter()
    # Counted per distinct list in the database (a few dozen lists for a million readers), then per theme here:
    # themes are a JSON list, which SQLite and PostgreSQL unnest differently. The list's text is what is grouped
    # (PostgreSQL's json has no equality), so each group's text is read back as JSON.
    listed = cast(SubscriberRow.themes, Text)
    query = select(listed, func.count()).where(SubscriberRow.status == status).group_by(listed)
    for text, count in session.execute(query):
        themes = None if text is None else json.loads(text)
        if themes is None:
            counts[None] += count
        else:
            for theme in themes:
                counts[theme] += count
    return dict(counts)


def suppression_reason(session: Session, email: str) -> tuple[str, datetime] | None:
    """Why and since when ``email`` (normalised) is suppressed, or None if it is not."""
    return suppression_reasons(session, [email]).get(email)


def suppression_reasons(session: Session, emails: Sequence[str]) -> dict[str, tuple[str, datetime]]:
    """Why and since when each of ``emails`` (normalised) that is suppressed is, by address, in one query."""
    if not emails:
        return {}
    hashes = {email_hash(email): email for email in emails}
    rows = session.execute(
        select(SuppressionRow.email_hash, SuppressionRow.reason, SuppressionRow.created_at).where(
            SuppressionRow.email_hash.in_(list(hashes))
        )
    )
    return {hashes[row.email_hash]: (row.reason, row.created_at) for row in rows}


def suppress(session: Session, email: str, reason: str, now: datetime) -> None:
    """Keep ``email``'s hash so that it cannot be added again silently; suppressing twice keeps the first."""
    if session.get(SuppressionRow, email_hash(email)) is None:
        session.add(SuppressionRow(email_hash=email_hash(email), reason=reason, created_at=now))
        session.flush()


def lift_suppression(session: Session, email: str) -> bool:
    """Forget ``email``'s suppression (the person asked to subscribe again); whether there was one."""
    result = session.execute(delete(SuppressionRow).where(SuppressionRow.email_hash == email_hash(email)))
    return bool(getattr(result, "rowcount", 0))


@dataclass(frozen=True, slots=True)
class ReaderGroup:
    """Active subscribers of a cadence who get the same digest: their themes (None: everything), the language of
    their emails, the languages they read besides it and their choice for the others (None: the site's); ``key``
    names the group in SQL (``group_key``), ``count`` is how many they are."""

    themes: tuple[str, ...] | None
    language: str
    reads: tuple[str, ...]
    language_choice: str | None
    key: str
    count: int


def group_key() -> ColumnElement[str]:
    """A subscriber row's group as one string (themes, language, reads, choice, as the store holds them): what
    ``reader_groups`` groups by and what a set-based INSERT filters on."""
    s = SubscriberRow.__table__.c
    return (
        func.coalesce(cast(s.themes, Text), "")
        + "|"
        + cast(s.language, String)
        + "|"
        + func.coalesce(cast(s.reads, Text), "")
        + "|"
        + func.coalesce(s.language_choice, "")
    )


def reader_groups(session: Session, cadence: str) -> list[ReaderGroup]:
    """The active subscribers of ``cadence`` as groups that get the same digest, with how many are in each: one
    GROUP BY in the database (a few hundred rows whatever the list's size), never a subscriber row loaded."""
    _check(cadence=cadence)
    s = SubscriberRow.__table__.c
    themes, reads = cast(s.themes, Text), cast(s.reads, Text)
    query = (
        select(themes, s.language, reads, s.language_choice, group_key(), func.count())
        .where(s.status == "active", s.cadence == cadence)
        .group_by(themes, s.language, reads, s.language_choice)
    )
    groups = []
    for raw_themes, language, raw_reads, choice, key, count in session.execute(query):
        # JSON's null and SQL's NULL both mean "none" (None may be stored either way).
        followed = json.loads(raw_themes) if raw_themes else None
        read = json.loads(raw_reads) if raw_reads else None
        groups.append(
            ReaderGroup(None if followed is None else tuple(followed), language, tuple(read or ()), choice, key, count)
        )
    return groups


def _rows(session: Session, *, status: str | None, cadence: str | None) -> Iterator[SubscriberRow]:
    query = select(SubscriberRow).order_by(SubscriberRow.id).execution_options(yield_per=_STREAM_CHUNK)
    if status is not None:
        query = query.where(SubscriberRow.status == status)
    if cadence is not None:
        query = query.where(SubscriberRow.cadence == cadence)
    yield from session.scalars(query)


def _check(*, status: str | None = None, cadence: str | None = None) -> None:
    # Values come from use cases that validated them; a wrong one here is a programming error, not user input.
    if status is not None and status not in SUBSCRIBER_STATUSES:
        raise ValueError(f"unknown subscriber status {status!r}")
    if cadence is not None and cadence not in CADENCES:
        raise ValueError(f"unknown cadence {cadence!r}")


def _subscriber(row: SubscriberRow) -> Subscriber:
    return Subscriber(
        id=row.id,
        email=row.email,
        name=row.name,
        language=row.language,
        themes=None if row.themes is None else tuple(row.themes),
        cadence=row.cadence,
        status=row.status,
        consent=Consent(at=row.consent_at, method=row.consent_method, source=row.consent_source),
        created_at=row.created_at,
        confirmed_at=row.confirmed_at,
        reads=tuple(row.reads or ()),
        language_choice=row.language_choice,
    )


def subscriber_page(session: Session, *, status: str | None, after_id: int | None, limit: int) -> list[Subscriber]:
    """At most ``limit`` subscribers in id order after the subscriber ``after_id`` (a page of the API's list),
    optionally of one status."""
    _check(status=status)
    query = select(SubscriberRow).order_by(SubscriberRow.id).limit(limit)
    if status is not None:
        query = query.where(SubscriberRow.status == status)
    if after_id is not None:
        query = query.where(SubscriberRow.id > after_id)
    return [_subscriber(row) for row in session.scalars(query)]
