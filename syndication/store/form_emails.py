"""The daily cap on emails the subscribe form sends to one address, counted in the store.

The web app also limits requests in memory, but that forgets on restart and is per process; this count is what
keeps anyone from making the service send one person more than a few unasked-for emails a day. Addresses are
kept as their SHA-256 (the suppression list's hash), and rows older than a week are pruned as new ones come.
"""

from __future__ import annotations

from datetime import date, timedelta

from sqlalchemy import delete
from sqlalchemy.orm import Session

from syndication.store.schema import Base, FormEmailRow
from syndication.store.subscribers import email_hash

KEPT_DAYS = 7
_form_emails = Base.metadata.tables[FormEmailRow.__tablename__]


def reserve(session: Session, email: str, day: date, cap: int) -> bool:
    """Count one more email to ``email`` (normalised) on ``day`` if fewer than ``cap`` were counted; whether it
    was counted (False: the cap is reached, send nothing).

    One statement (an upsert whose update only happens under the cap), so two requests at once cannot both take
    the last place.
    """
    from sqlalchemy.dialects.postgresql import insert as pg_insert  # not imported by every command using the store
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    table = _form_emails
    insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    statement = (
        insert(table)
        .values(email_hash=email_hash(email), day=day, count=1)
        .on_conflict_do_update(
            index_elements=["email_hash", "day"],
            set_={"count": table.c.count + 1},
            where=table.c.count < cap,
        )
        .returning(table.c.count)
    )
    counted = session.execute(statement).first() is not None
    global _pruned_on
    if _pruned_on != day:
        # Once a day per process, not per call: the delete scans the table (its key starts with the hash), and
        # under a burst of subscriptions it would otherwise grow with every request.
        session.execute(delete(FormEmailRow).where(FormEmailRow.day < day - timedelta(days=KEPT_DAYS)))
        _pruned_on = day
    return counted


# The day this process last removed the counts of days gone by.
_pruned_on: date | None = None


def sent_on(session: Session, email: str, day: date) -> int:
    """How many form emails were counted for ``email`` on ``day``."""
    row = session.get(FormEmailRow, (email_hash(email), day))
    return row.count if row else 0
