"""Editions and the delivery queue: what was sent to whom, claimed by which sender, and what came of it.

Functions take a Session and never commit: the caller commits a claim, and later each delivery's outcome with
its attempt record, together. On PostgreSQL several senders claim from one queue at once (``FOR UPDATE SKIP
LOCKED``).

A claim is a lease with a fencing token. Each claim of a row takes a new ``lease_token``; whatever a sender does
with the row afterwards (``begin_attempt``, ``renew``, ``record``, ``release``, ``hold_back``) holds only while
the row is still claimed by that owner with that token, so a sender that lost its lease can neither send the row
nor overwrite the outcome of the newer claim. A sender renews its leases while it works (``renew``) and marks a
message in flight (``in_flight_at``) just before its first byte goes out. Rows held by a sender that died return
to the queue when the lease runs out: a crash counts against a row only if it was in flight (the sender died
sending it); rows merely held go back as they were. A row whose sender died ``max_crashes`` times while sending
it is set aside as poisoned; ``requeue`` gives an operator's chosen given-up rows another go.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    Connection,
    String,
    Table,
    Text,
    bindparam,
    case,
    cast,
    delete,
    func,
    insert,
    literal,
    select,
    text,
    tuple_,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from syndication.core.editions import finished
from syndication.core.models import OPEN_DELIVERIES, PROBLEM_DELIVERIES, DeliveryStatus, Edition, EditionStatus
from syndication.core.webhooks import EDITION_SENT, edition_data
from syndication.store import webhooks as webhook_store
from syndication.store.schema import (
    OPEN_DELIVERY_STATUSES,
    Base,
    DeliveryAttemptRow,
    DeliveryRow,
    EditionPostRow,
    EditionRow,
    EditionVariantRow,
    SubscriberRow,
    UTCDateTime,
)
from syndication.store.subscribers import group_key

_deliveries = Base.metadata.tables[DeliveryRow.__tablename__]
_edition_posts = Base.metadata.tables[EditionPostRow.__tablename__]
_attempts = Base.metadata.tables[DeliveryAttemptRow.__tablename__]


@dataclass(frozen=True, slots=True)
class Claim:
    """A delivery a sender holds until ``lease_until`` (renewed while it works), under fencing ``token``."""

    delivery_id: int
    edition_id: int
    subscriber_id: int | None
    message_id: str
    attempts: int
    token: int = 0


def _edition(row: EditionRow) -> Edition:
    return Edition(
        row.id, row.cadence, row.since, row.until, EditionStatus(row.status), row.intro, row.subject, row.created_at,
        row.status_reason or "", row.approved_at or row.created_at,
    )  # fmt: skip


def find_edition(session: Session, cadence: str, since: datetime, until: datetime) -> Edition | None:
    """The edition of exactly this window, if one was created."""
    row = session.scalars(
        select(EditionRow).where(EditionRow.cadence == cadence, EditionRow.since == since, EditionRow.until == until)
    ).first()
    return _edition(row) if row else None


def create_edition(
    session: Session,
    cadence: str,
    since: datetime,
    until: datetime,
    now: datetime,
    status: EditionStatus = EditionStatus.SENDING,
    *,
    reason: str = "",
    approved_at: datetime | None = None,
) -> tuple[Edition, bool]:
    """The edition of this window, created if it did not exist (with ``status``, ``reason`` and, when an operator
    approved it as it was made, ``approved_at``); True when this call created it.

    Two processes racing to create it both end with the same row: the unique window decides.
    """
    existing = find_edition(session, cadence, since, until)
    if existing:
        return existing, False
    # No savepoint: on SQLite (pysqlite) a savepoint that opens the transaction commits on release, which would
    # publish the edition before its deliveries are queued. ON CONFLICT DO NOTHING settles a race on both stores.
    values = {"cadence": cadence, "since": since, "until": until, "status": status, "created_at": now,
              "intro": "", "subject": "", "status_reason": reason, "approved_at": approved_at}  # fmt: skip
    statement = _insert_unless_present(session, EditionRow.__table__, ["cadence", "since", "until"])  # type: ignore[arg-type]
    created = session.execute(statement.values(**values).returning(EditionRow.id)).first() is not None
    found = find_edition(session, cadence, since, until)
    assert found is not None
    return found, created


def edition(session: Session, edition_id: int) -> Edition | None:
    """The edition with this id."""
    row = session.get(EditionRow, edition_id)
    return _edition(row) if row else None


def editions(session: Session, limit: int = 50, statuses: Sequence[EditionStatus] | None = None) -> list[Edition]:
    """The newest editions first (with ``statuses``, only those in one of them)."""
    query = select(EditionRow)
    if statuses is not None:
        query = query.where(EditionRow.status.in_(list(statuses)))
    rows = session.scalars(query.order_by(EditionRow.until.desc(), EditionRow.id.desc()).limit(limit))
    return [_edition(row) for row in rows]


def last_edition(session: Session, cadence: str) -> Edition | None:
    """The edition of ``cadence`` whose window ends last."""
    row = session.scalars(
        select(EditionRow).where(EditionRow.cadence == cadence).order_by(EditionRow.until.desc()).limit(1)
    ).first()
    return _edition(row) if row else None


def cadence_start(session: Session, cadence: str) -> datetime | None:
    """Where the windows of ``cadence`` begin: the start of its earliest edition; None before the first."""
    start: datetime | None = session.scalar(select(func.min(EditionRow.since)).where(EditionRow.cadence == cadence))
    return start


def hold_posts(session: Session, edition: Edition, post_ids: Iterable[int]) -> None:
    """Record that ``edition`` holds these posts, in the transaction that makes it: from then on it shows them
    and no other edition of its cadence takes them. A post another edition of the cadence holds is refused by the
    key (IntegrityError, the transaction undone): one post, one edition per cadence, whoever races."""
    rows = [{"cadence": edition.cadence, "post_id": post_id, "edition_id": edition.id} for post_id in post_ids]
    for start in range(0, len(rows), 1000):
        session.execute(insert(_edition_posts), rows[start : start + 1000])


def release_posts(session: Session, edition_id: int) -> int:
    """Let the next edition of the cadence take the posts this one held (it was cancelled before any message went);
    returns how many."""
    result = session.execute(delete(_edition_posts).where(_edition_posts.c.edition_id == edition_id))
    return int(getattr(result, "rowcount", 0) or 0)


def drafts_created_before(session: Session, moment: datetime) -> list[Edition]:
    """Drafts still waiting for approval that were created before ``moment``, oldest first."""
    rows = session.scalars(
        select(EditionRow)
        .where(EditionRow.status == EditionStatus.DRAFT, EditionRow.created_at < moment)
        .order_by(EditionRow.created_at)
    )
    return [_edition(row) for row in rows]


def set_edition_status(
    session: Session,
    edition_id: int,
    status: EditionStatus,
    now: datetime,
    *,
    reason: str = "",
    only_from: EditionStatus | None = None,
) -> bool:
    """Move an edition to ``status`` with ``reason`` (empty: none; any earlier reason is cleared), approval also
    recording when; with ``only_from``, only if the edition is in that status still. Returns whether it moved."""
    values: dict[str, object] = {"status": status, "status_reason": reason}
    if status == EditionStatus.SENDING:
        values["approved_at"] = now
    statement = update(EditionRow).where(EditionRow.id == edition_id)
    if only_from is not None:
        statement = statement.where(EditionRow.status == only_from)
    result = session.execute(statement.values(**values))
    return bool(result.rowcount)  # type: ignore[attr-defined]


def set_edition_text(
    session: Session, edition_id: int, *, intro: str | None = None, subject: str | None = None
) -> None:
    """An editor's intro and subject for the edition."""
    values = {key: value for key, value in (("intro", intro), ("subject", subject)) if value is not None}
    if values:
        session.execute(update(EditionRow).where(EditionRow.id == edition_id).values(**values))


def queue(session: Session, edition_id: int, deliveries: Iterable[tuple[int, str]], now: datetime) -> int:
    """Add one delivery per (subscriber id, Message-ID); one already queued for the edition is left alone."""
    rows = [
        {"edition_id": edition_id, "subscriber_id": subscriber_id, "status": DeliveryStatus.QUEUED, "attempts": 0,
         "crashes": 0, "next_attempt_at": now, "message_id": message_id, "last_error": ""}
        for subscriber_id, message_id in deliveries
    ]  # fmt: skip
    if not rows:
        return 0
    statement = _insert_unless_present(session, DeliveryRow.__table__, ["edition_id", "subscriber_id"])  # type: ignore[arg-type]
    before = count_deliveries(session, edition_id)
    for start in range(0, len(rows), 1000):
        session.execute(statement, rows[start : start + 1000])
    return count_deliveries(session, edition_id) - before


def queue_readers(
    session: Session, edition_id: int, cadence: str, now: datetime, *, leave_out: Collection[str] = ()
) -> int:
    """Queue one delivery per active subscriber of ``cadence`` in one ``INSERT … SELECT`` (no subscriber row
    leaves the database), except those whose group (``subscribers.group_key``) is in ``leave_out``; each gets a
    Message-ID ``edition-<edition>.<subscriber>.<12 random hex digits>``, kept on every retry. A delivery already
    queued for the edition is left alone. Returns how many were queued."""
    s = SubscriberRow.__table__.c
    d = _deliveries
    if session.get_bind().dialect.name == "postgresql":
        # gen_random_uuid (PostgreSQL 13+) draws from a strong random source; its first 12 hex digits are random.
        random_part = func.substr(func.replace(cast(func.gen_random_uuid(), Text), "-", ""), 1, 12)
    else:
        random_part = func.lower(func.hex(func.randomblob(6)))
    message_id = literal(f"edition-{edition_id}.", String) + cast(s.id, String) + "." + random_part
    values = [
        literal(edition_id), s.id, literal(str(DeliveryStatus.QUEUED), String), literal(0), literal(0),
        literal(now, UTCDateTime()), message_id, literal("", Text), literal(0),
    ]  # fmt: skip
    # In subscriber order: the deliveries' ids follow the list, as they did when queued row by row.
    rows = select(*values).where(s.status == "active", s.cadence == cadence).order_by(s.id)
    if leave_out:
        rows = rows.where(group_key().not_in(list(leave_out)))
    columns = ["edition_id", "subscriber_id", "status", "attempts", "crashes", "next_attempt_at", "message_id",
               "last_error", "lease_token"]  # fmt: skip
    statement = _insert_unless_present(session, d, ["edition_id", "subscriber_id"]).from_select(columns, rows)
    # rowcount is kept for an INSERT only when asked (SQLAlchemy keeps it for UPDATE and DELETE alone).
    result = session.execute(statement.execution_options(preserve_rowcount=True))
    return int(result.rowcount)  # type: ignore[attr-defined]


def _insert_unless_present(session: Session, table: Table, unique: list[str]) -> Any:
    """An INSERT that leaves a row whose ``unique`` columns are already taken alone, on PostgreSQL and SQLite."""
    dialect_insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    return dialect_insert(table).on_conflict_do_nothing(index_elements=unique)


def count_deliveries(session: Session, edition_id: int) -> int:
    """How many deliveries the edition has."""
    return session.scalar(select(func.count()).where(DeliveryRow.edition_id == edition_id)) or 0


def claim(
    session: Session,
    owner: str,
    now: datetime,
    *,
    lease: timedelta,
    limit: int,
    max_crashes: int,
    edition_id: int | None = None,
    holding: Collection[int] = (),
) -> tuple[list[Claim], list[int]]:
    """Lease up to ``limit`` due deliveries of sending editions to ``owner``, each under a new fencing token;
    returns them and the ids set aside as poisoned (``max_crashes`` times, a sender died while sending them).

    A row whose lease ran out is claimed again: a crash counts against it only if it was in flight (its sender
    died sending it); a row its sender merely held goes out as if it had never been claimed. ``holding``: the ids
    the caller holds still (a pipelined sender claims its next batch while sending the one before): never claimed
    again by it, even when a lease it failed to renew in time ran out, so that it cannot send one of them twice."""
    d = _deliveries
    due = (
        select(
            d.c.id,
            d.c.edition_id,
            d.c.subscriber_id,
            d.c.message_id,
            d.c.attempts,
            d.c.status,
            d.c.crashes,
            d.c.lease_token,
            d.c.in_flight_at,
        )
        .join(EditionRow, EditionRow.id == d.c.edition_id)
        .where(
            EditionRow.status == EditionStatus.SENDING,
            # Said outright so that the planner walks ix_deliveries_open: the deliveries still to send, not every
            # one ever sent (at the end of a million-message edition, 150 ms a claim instead of 0.3 ms).
            d.c.status.in_(OPEN_DELIVERY_STATUSES),
            (
                (d.c.status.in_((DeliveryStatus.QUEUED, DeliveryStatus.DEFERRED)) & (d.c.next_attempt_at <= now))
                | ((d.c.status == DeliveryStatus.CLAIMED) & (d.c.lease_until < now))
            ),
        )
        .order_by(d.c.id)
        .limit(limit)
    )
    if edition_id is not None:
        due = due.where(d.c.edition_id == edition_id)
    if holding:
        due = due.where(d.c.id.not_in(sorted(holding)))
    if session.get_bind().dialect.name == "postgresql":
        due = due.with_for_update(skip_locked=True, of=d)
    claims: list[Claim] = []
    poisoned: list[int] = []
    crashed: list[int] = []
    rows = session.execute(due).all()
    for delivery_id, edition, subscriber_id, message_id, attempts, status, crashes, token, in_flight in rows:
        if status == DeliveryStatus.CLAIMED and in_flight is not None:  # its sender died (or hung) sending it
            if crashes + 1 >= max_crashes:
                poisoned.append(delivery_id)
                continue
            crashed.append(delivery_id)
        claims.append(Claim(delivery_id, edition, subscriber_id, message_id, attempts, token + 1))
    # One statement for the whole batch: claiming is on every message's path. The rows are locked (PostgreSQL)
    # or this is the only writer (SQLite), so each row's new token is the one read above plus one.
    if claims:
        session.execute(
            update(d)
            .where(d.c.id.in_([claim.delivery_id for claim in claims]))
            .values(
                status=DeliveryStatus.CLAIMED,
                lease_owner=owner,
                lease_until=now + lease,
                lease_token=d.c.lease_token + 1,
                in_flight_at=None,
            )
        )
    if crashed:
        session.execute(update(d).where(d.c.id.in_(crashed)).values(crashes=d.c.crashes + 1))
    if poisoned:
        session.execute(
            update(d)
            .where(d.c.id.in_(poisoned))
            .values(
                status=DeliveryStatus.POISONED,
                lease_owner=None,
                lease_until=None,
                in_flight_at=None,
                lease_token=d.c.lease_token + 1,
                crashes=d.c.crashes + 1,
                last_error=f"set aside: the sender stopped {max_crashes} times while sending it",
            )
        )
    return claims, poisoned


# The row is still held by this claim: its owner and fencing token, claimed. A sender that lost its lease finds
# no row here, so it can neither start sending nor record an outcome over a newer claim's.
_HELD = (
    _deliveries.c.id == bindparam("delivery_id"),
    _deliveries.c.lease_owner == bindparam("owner"),
    _deliveries.c.lease_token == bindparam("token"),
    _deliveries.c.status == DeliveryStatus.CLAIMED,
)
# Built once: this runs once per message sent, and building the statements cost more than running them.
_RECORD = (
    update(_deliveries)
    .where(*_HELD)
    .values(
        status=bindparam("status"),
        attempts=_deliveries.c.attempts + 1,
        lease_owner=None,
        lease_until=None,
        in_flight_at=None,
        last_error=bindparam("detail"),
        sent_at=func.coalesce(bindparam("sent_at", type_=UTCDateTime()), _deliveries.c.sent_at),
        next_attempt_at=func.coalesce(bindparam("next_at", type_=UTCDateTime()), _deliveries.c.next_attempt_at),
    )
)
_ATTEMPT = insert(_attempts)


_BEGIN = (
    update(_deliveries)
    .where(*_HELD)
    .values(in_flight_at=bindparam("now", type_=UTCDateTime()), lease_until=bindparam("until", type_=UTCDateTime()))
)


def begin_attempt(
    connection: Connection | Session, claim: Claim, owner: str, now: datetime, *, lease: timedelta
) -> bool:
    """Mark the claimed delivery in flight (its first byte goes out next) and extend its lease, if ``owner`` still
    holds it under the claim's token. False: the lease was lost to another sender, and this one must not send."""
    result = connection.execute(
        _BEGIN,
        {"delivery_id": claim.delivery_id, "owner": owner, "token": claim.token, "now": now, "until": now + lease},
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def renew(session: Session, claims: Iterable[Claim], owner: str, now: datetime, *, lease: timedelta) -> set[int]:
    """Extend the leases ``owner`` still holds among ``claims`` (same token) to ``now + lease``; returns the ids of
    those claimed again since (a newer token: another sender's, or set aside). A claim whose outcome was recorded
    or that was handed back meanwhile is neither renewed nor lost."""
    tokens = {claim.delivery_id: claim.token for claim in claims}
    if not tokens:
        return set()
    d = _deliveries
    lost: set[int] = set()
    pairs = sorted(tokens.items())
    skip_locked = session.get_bind().dialect.name == "postgresql"
    for start in range(0, len(pairs), 500):
        chunk = pairs[start : start + 500]
        if skip_locked:
            # A row another transaction has locked now is left for the next beat: only the sender's own group
            # commit (recording it sent, or marking it in flight, which extends its lease too) or a newer claim
            # lock a held row. Waiting for them, while holding locks on the rows renewed so far, could deadlock
            # with a group commit that locks the same rows in another order (and the group commit's failure
            # would stop the drain); a renewal that never waits cannot take part in a deadlock.
            free = select(d.c.id).where(*_HELD_PAIRS).with_for_update(skip_locked=True)
            statement = update(d).where(d.c.id.in_(free))
        else:
            statement = update(d).where(*_HELD_PAIRS)
        session.execute(statement.values(lease_until=now + lease), {"held": chunk, "owner": owner})
        current = session.execute(select(d.c.id, d.c.lease_token).where(d.c.id.in_([i for i, _ in chunk])))
        lost.update(delivery_id for delivery_id, token in current if token != tokens[delivery_id])
    return lost


def record(
    connection: Connection | Session,
    claim: Claim,
    owner: str,
    now: datetime,
    status: DeliveryStatus,
    *,
    code: int | None = None,
    detail: str = "",
    next_attempt_at: datetime | None = None,
) -> bool:
    """Record an attempt's outcome, if ``owner`` still holds the delivery under the claim's token (a lease lost to
    another sender is never overwritten). Returns whether it was recorded."""
    delivery_id = claim.delivery_id
    result = connection.execute(
        _RECORD,
        {
            "delivery_id": delivery_id,
            "owner": owner,
            "token": claim.token,
            "status": status,
            "detail": detail[:1000],
            "sent_at": now if status == DeliveryStatus.SENT else None,
            "next_at": next_attempt_at,
        },
    )
    if not result.rowcount:  # type: ignore[attr-defined]
        return False
    connection.execute(
        _ATTEMPT,
        {"delivery_id": delivery_id, "at": now, "outcome": status, "code": code, "detail": detail[:1000]},
    )
    return True


def record_sent(connection: Connection | Session, sent: Sequence[tuple[Claim, datetime]], owner: str) -> set[int]:
    """Record that the relay accepted each of these claimed deliveries (with when), in two statements whatever
    their number: the deliveries ``owner`` still holds under the claim's token are marked sent, each with its
    attempt (at the moment it was accepted; the delivery's ``sent_at`` is the latest of the group's, at most a
    commit later); a lease lost to another sender is never overwritten. Returns the ids recorded."""
    if not sent:
        return set()
    when = {claim.delivery_id: at for claim, at in sent}
    held = sorted((claim.delivery_id, claim.token) for claim, _ in sent)
    result = connection.execute(_SENT, {"held": held, "owner": owner, "sent_at": max(when.values())})
    kept = set(result.scalars())
    if kept:
        connection.execute(
            _ATTEMPT,
            [{"delivery_id": delivery_id, "at": when[delivery_id], "outcome": DeliveryStatus.SENT, "code": 250,
              "detail": ""} for delivery_id in sorted(kept)],
        )  # fmt: skip
    return kept


# Built once, as _RECORD is: recording a group of sent messages and marking the next in flight run for every
# message, and their (id, token) pairs are one expanding parameter, so each is compiled once.
_HELD_PAIRS = (
    tuple_(_deliveries.c.id, _deliveries.c.lease_token).in_(bindparam("held", expanding=True)),
    _deliveries.c.lease_owner == bindparam("owner"),
    _deliveries.c.status == DeliveryStatus.CLAIMED,
)
_SENT = (
    update(_deliveries)
    .where(*_HELD_PAIRS)
    .values(
        status=DeliveryStatus.SENT,
        attempts=_deliveries.c.attempts + 1,
        lease_owner=None,
        lease_until=None,
        in_flight_at=None,
        last_error="",
        sent_at=bindparam("sent_at", type_=UTCDateTime()),
    )
    .returning(_deliveries.c.id)
)
_IN_FLIGHT = (
    update(_deliveries)
    .where(*_HELD_PAIRS)
    .values(in_flight_at=bindparam("now", type_=UTCDateTime()), lease_until=bindparam("until", type_=UTCDateTime()))
    .returning(_deliveries.c.id)
)


def begin_attempts(
    connection: Connection | Session, claims: Sequence[Claim], owner: str, now: datetime, *, lease: timedelta
) -> set[int]:
    """``begin_attempt`` for several claims in one statement; returns the ids marked in flight (the others' leases
    were lost: they must not be sent by this sender)."""
    if not claims:
        return set()
    held = sorted((claim.delivery_id, claim.token) for claim in claims)
    result = connection.execute(_IN_FLIGHT, {"held": held, "owner": owner, "now": now, "until": now + lease})
    return set(result.scalars())


# PostgreSQL: a group commit in one statement, so that on a connection in autocommit it is one round trip and one
# transaction (the statements of a group were a BEGIN, two UPDATEs, an INSERT and a COMMIT: five round trips, and
# the group commit is what every sending thread waits for before its next message). The rows are given as arrays
# (one statement text whatever the group's size, so the server prepares it once); the sent rows and the rows
# marked in flight are never the same (a claim is sent after its mark, in an earlier group), so the two UPDATEs
# of the one statement never touch one row twice. The same conditions as ``_SENT`` and ``_IN_FLIGHT``: a row is
# only changed while ``owner`` holds it under the claim's token.
_SENT_AND_IN_FLIGHT = text(
    """
    WITH sent AS (
        UPDATE deliveries AS d
        SET status = 'sent', attempts = d.attempts + 1, lease_owner = NULL, lease_until = NULL,
            in_flight_at = NULL, last_error = '', sent_at = :sent_at
        FROM unnest(CAST(:sent_ids AS integer[]), CAST(:sent_tokens AS integer[]),
                    CAST(:sent_times AS timestamptz[])) AS s(id, token, at)
        WHERE d.id = s.id AND d.lease_token = s.token AND d.lease_owner = :owner AND d.status = 'claimed'
        RETURNING d.id, s.at
    ), attempts AS (
        INSERT INTO delivery_attempts (delivery_id, at, outcome, code, detail)
        SELECT id, at, 'sent', 250, '' FROM sent ORDER BY id
    ), marked AS (
        UPDATE deliveries AS d
        SET in_flight_at = :now, lease_until = :until
        FROM unnest(CAST(:mark_ids AS integer[]), CAST(:mark_tokens AS integer[])) AS m(id, token)
        WHERE d.id = m.id AND d.lease_token = m.token AND d.lease_owner = :owner AND d.status = 'claimed'
        RETURNING d.id
    )
    SELECT true, id FROM sent UNION ALL SELECT false, id FROM marked
    """
)


def record_sent_and_begin(
    connection: Connection,
    sent: Sequence[tuple[Claim, datetime]],
    claims: Sequence[Claim],
    owner: str,
    now: datetime,
    *,
    lease: timedelta,
) -> tuple[set[int], set[int]]:
    """``record_sent(sent)`` then ``begin_attempts(claims)``, as one group commit does them; returns the ids
    recorded sent and the ids marked in flight. On PostgreSQL one statement (commit it by itself, or on a
    connection in autocommit); elsewhere the two functions, in the caller's transaction."""
    if connection.dialect.name != "postgresql":
        return record_sent(connection, sent, owner), begin_attempts(connection, claims, owner, now, lease=lease)
    if not sent and not claims:
        return set(), set()
    when = {claim.delivery_id: (claim.token, at) for claim, at in sent}
    sent_ids = sorted(when)
    marks = sorted({claim.delivery_id: claim.token for claim in claims}.items())
    rows = connection.execute(
        _SENT_AND_IN_FLIGHT,
        {
            "sent_ids": _array(sent_ids),
            "sent_tokens": _array(when[delivery_id][0] for delivery_id in sent_ids),
            "sent_times": _array(when[delivery_id][1].isoformat() for delivery_id in sent_ids),
            "sent_at": max((at for _, at in when.values()), default=now),
            "mark_ids": _array(delivery_id for delivery_id, _ in marks),
            "mark_tokens": _array(token for _, token in marks),
            "owner": owner,
            "now": now,
            "until": now + lease,
        },
    )
    kept: set[int] = set()
    marked: set[int] = set()
    for was_sent, delivery_id in rows:
        (kept if was_sent else marked).add(delivery_id)
    return kept, marked


def _array(items: Iterable[object]) -> str:
    """An array literal (``{1,2,3}``) of numbers or ISO 8601 times, which need no quoting, for CAST(... AS type[]):
    the driver passes one string, where adapting a list inspects each of its items (a tenth of a group commit)."""
    return "{" + ",".join(map(str, items)) + "}"


def release(session: Session, claims: Sequence[Claim], owner: str, *, refused: bool = False) -> int:
    """Give claimed deliveries that were not tried back to the queue at once, their attempts unspent (a sender
    stopping, or holding back an edition that was paused); one this sender lost stays as it is, and so does one
    it has in flight unless ``refused`` (the relay refused it: nothing of it went out). Returns how many went
    back."""
    d = _deliveries
    released = 0
    pairs = sorted({(claim.delivery_id, claim.token) for claim in claims})
    for start in range(0, len(pairs), 500):
        statement = update(d).where(
            tuple_(d.c.id, d.c.lease_token).in_(pairs[start : start + 500]),
            d.c.lease_owner == owner,
            d.c.status == DeliveryStatus.CLAIMED,
        )
        if not refused:
            statement = statement.where(d.c.in_flight_at.is_(None))
        result = session.execute(
            statement.values(status=DeliveryStatus.QUEUED, lease_owner=None, lease_until=None, in_flight_at=None)
        )
        released += result.rowcount  # type: ignore[attr-defined]
    return released


def hold_back(
    session: Session, claims: Sequence[Claim], owner: str, now: datetime, *, code: int | None, detail: str
) -> None:
    """Give claimed deliveries back to the queue after the relay refused them, recording that attempt (``code``,
    ``detail``) but no outcome against anyone: the sender's breaker held them back."""
    if not claims:
        return
    d = _deliveries
    pairs = sorted({(claim.delivery_id, claim.token) for claim in claims})
    held = list(
        session.scalars(
            select(d.c.id).where(
                tuple_(d.c.id, d.c.lease_token).in_(pairs), d.c.lease_owner == owner,
                d.c.status == DeliveryStatus.CLAIMED,
            )
        )
    )  # fmt: skip
    if not held:
        return
    session.execute(
        update(d)
        .where(d.c.id.in_(held))
        .values(
            status=DeliveryStatus.QUEUED,
            lease_owner=None,
            lease_until=None,
            in_flight_at=None,
            last_error=detail[:1000],
        )
    )
    session.execute(
        _ATTEMPT,
        [
            {"delivery_id": delivery_id, "at": now, "outcome": DeliveryStatus.QUEUED, "code": code,
             "detail": detail[:1000]}
            for delivery_id in held
        ],
    )  # fmt: skip


def attempted(session: Session, edition_id: int) -> bool:
    """Whether any delivery of the edition has an attempt recorded (it is no longer at its very start)."""
    query = (
        select(_attempts.c.id)
        .join(DeliveryRow, DeliveryRow.id == _attempts.c.delivery_id)
        .where(DeliveryRow.edition_id == edition_id)
        .limit(1)
    )
    return session.execute(query).first() is not None


def progress(session: Session, edition_id: int) -> dict[str, int]:
    """Deliveries of the edition per status."""
    query = (
        select(DeliveryRow.status, func.count())
        .where(DeliveryRow.edition_id == edition_id)
        .group_by(DeliveryRow.status)
    )
    counts: dict[str, int] = dict(session.execute(query).all())
    return counts


def open_deliveries(session: Session, edition_id: int) -> int:
    """How many deliveries of the edition are still to send (queued, claimed or deferred)."""
    query = select(func.count()).where(DeliveryRow.edition_id == edition_id, DeliveryRow.status.in_(OPEN_DELIVERIES))
    return session.scalar(query) or 0


def last_attempt_id(session: Session) -> int:
    """The id of the newest attempt recorded (0: none); what a drain recorded after it has greater ids."""
    return session.scalar(select(func.coalesce(func.max(_attempts.c.id), 0))) or 0


def outcomes_after(session: Session, after_id: int, edition_id: int | None = None) -> list[tuple[str, str, int]]:
    """The attempts recorded after attempt ``after_id`` (of one edition, or all), as (outcome, detail, count)."""
    a = _attempts
    query = select(a.c.outcome, a.c.detail, func.count()).where(a.c.id > after_id)
    if edition_id is not None:
        query = query.join(DeliveryRow, DeliveryRow.id == a.c.delivery_id).where(DeliveryRow.edition_id == edition_id)
    rows = session.execute(query.group_by(a.c.outcome, a.c.detail)).all()
    return [(outcome, detail or "", count) for outcome, detail, count in rows]


def problem_details(session: Session, edition_id: int | None = None) -> list[tuple[str, str, int]]:
    """The deferred, failed, bounced, unknown and poisoned deliveries (of one edition, or of every edition not
    over yet) as (status, last error, count)."""
    query = select(DeliveryRow.status, DeliveryRow.last_error, func.count()).where(
        DeliveryRow.status.in_(PROBLEM_DELIVERIES)
    )
    if edition_id is not None:
        query = query.where(DeliveryRow.edition_id == edition_id)
    else:
        query = query.join(EditionRow, EditionRow.id == DeliveryRow.edition_id).where(
            EditionRow.status.in_((EditionStatus.SENDING, EditionStatus.PAUSED))
        )
    rows = session.execute(query.group_by(DeliveryRow.status, DeliveryRow.last_error)).all()
    return [(status, detail or "", count) for status, detail, count in rows]


@dataclass(frozen=True, slots=True)
class DeliveryProblem:
    """A delivery that did not go (yet): to whom (None once the subscriber was erased), its status, why."""

    delivery_id: int
    email: str | None
    status: DeliveryStatus
    attempts: int
    detail: str
    next_attempt_at: datetime


def problems(session: Session, edition_id: int, limit: int = 200) -> list[DeliveryProblem]:
    """The edition's deferred, failed, bounced, unknown and poisoned deliveries, the final ones first."""
    order = case(
        {DeliveryStatus.FAILED: 0, DeliveryStatus.BOUNCED: 0, DeliveryStatus.UNKNOWN: 1, DeliveryStatus.POISONED: 1},
        value=DeliveryRow.status,
        else_=2,
    )
    query = (
        select(DeliveryRow.id, SubscriberRow.email, DeliveryRow.status, DeliveryRow.attempts, DeliveryRow.last_error,
               DeliveryRow.next_attempt_at)
        .outerjoin(SubscriberRow, SubscriberRow.id == DeliveryRow.subscriber_id)
        .where(DeliveryRow.edition_id == edition_id, DeliveryRow.status.in_(PROBLEM_DELIVERIES))
        .order_by(order, DeliveryRow.id)
        .limit(limit)
    )  # fmt: skip
    return [
        DeliveryProblem(delivery_id, email, DeliveryStatus(status), attempts, detail, next_at)
        for delivery_id, email, status, attempts, detail, next_at in session.execute(query)
    ]


def due_count(session: Session, now: datetime, edition_id: int | None = None) -> int:
    """How many deliveries of sending editions (or of one) ``claim`` would take now: the total a drain shows its
    progress against."""
    d = _deliveries
    query = (
        select(func.count())
        .select_from(d)
        .join(EditionRow, EditionRow.id == d.c.edition_id)
        .where(
            EditionRow.status == EditionStatus.SENDING,
            (
                (d.c.status.in_((DeliveryStatus.QUEUED, DeliveryStatus.DEFERRED)) & (d.c.next_attempt_at <= now))
                | ((d.c.status == DeliveryStatus.CLAIMED) & (d.c.lease_until < now))
            ),
        )
    )
    if edition_id is not None:
        query = query.where(d.c.edition_id == edition_id)
    return session.scalar(query) or 0


def queue_depth(session: Session, now: datetime) -> int:
    """Deliveries of sending editions still to send (due or not)."""
    query = (
        select(func.count())
        .select_from(DeliveryRow)
        .join(EditionRow, EditionRow.id == DeliveryRow.edition_id)
        .where(EditionRow.status == EditionStatus.SENDING, DeliveryRow.status.in_(OPEN_DELIVERIES))
    )
    return session.scalar(query) or 0


def finish_editions(session: Session, now: datetime | None = None) -> list[int]:
    """Mark sending editions with no open delivery left as sent, each with what was given up as its reason
    (``core.editions.finished``: "2 failed, 1 unknown"); returns their ids. With ``now``, each is announced to the
    webhooks that want ``edition.sent``, in this transaction."""
    still_open = (
        select(DeliveryRow.id)
        .where(DeliveryRow.edition_id == EditionRow.id, DeliveryRow.status.in_(OPEN_DELIVERIES))
        .exists()
    )
    ids = list(session.scalars(select(EditionRow.id).where(EditionRow.status == EditionStatus.SENDING, ~still_open)))
    for edition_id in ids:
        counts = progress(session, edition_id)
        status, reason = finished(counts)
        session.execute(
            update(EditionRow)
            .where(EditionRow.id == edition_id, EditionRow.status == EditionStatus.SENDING)
            .values(status=status, status_reason=reason)
        )
        if now is not None and webhook_store.wanted(session, EDITION_SENT):
            sent = edition(session, edition_id)
            assert sent is not None
            webhook_store.record_event(session, EDITION_SENT, edition_data(sent, counts), now)
    return ids


# What marks an attempt whose outcome was not known (no reply after the message), and an operator's re-queueing.
AMBIGUOUS_DETAIL = "ambiguous: "
REQUEUED_DETAIL = "re-queued by an operator"


def ambiguous_attempts(session: Session, delivery_id: int) -> int:
    """How many attempts of the delivery ended without knowing whether the relay took the message, since an
    operator last re-queued it."""
    a = _attempts
    requeued = (
        select(func.coalesce(func.max(a.c.id), 0))
        .where(a.c.delivery_id == delivery_id, a.c.detail == REQUEUED_DETAIL)
        .scalar_subquery()
    )
    query = select(func.count()).where(
        a.c.delivery_id == delivery_id,
        a.c.outcome.in_((DeliveryStatus.DEFERRED, DeliveryStatus.UNKNOWN)),
        a.c.detail.startswith(AMBIGUOUS_DETAIL),
        a.c.id > requeued,
    )
    return session.scalar(query) or 0


def requeue(session: Session, edition_id: int, statuses: Sequence[DeliveryStatus], now: datetime) -> dict[str, int]:
    """Put the edition's deliveries in ``statuses`` back in the queue, due now, their attempts and crashes reset
    and their Message-ID kept, each with an attempt noting it; returns how many of each status went back."""
    d = _deliveries
    rows = session.execute(
        select(d.c.id, d.c.status).where(d.c.edition_id == edition_id, d.c.status.in_(list(statuses)))
    ).all()
    if not rows:
        return {}
    ids = [delivery_id for delivery_id, _ in rows]
    for start in range(0, len(ids), 1000):
        chunk = ids[start : start + 1000]
        session.execute(
            update(d)
            .where(d.c.id.in_(chunk), d.c.status.in_(list(statuses)))
            .values(
                status=DeliveryStatus.QUEUED,
                attempts=0,
                crashes=0,
                next_attempt_at=now,
                lease_owner=None,
                lease_until=None,
                in_flight_at=None,
            )
        )
        session.execute(
            _ATTEMPT,
            [{"delivery_id": delivery_id, "at": now, "outcome": DeliveryStatus.QUEUED, "code": None,
              "detail": REQUEUED_DETAIL} for delivery_id in chunk],
        )  # fmt: skip
    counts: dict[str, int] = {}
    for _, status in rows:
        counts[status] = counts.get(status, 0) + 1
    return counts


def edition_page(session: Session, *, before_id: int | None, limit: int) -> list[Edition]:
    """At most ``limit`` editions, newest (highest id) first, older than the edition ``before_id`` (a page of the
    API's list)."""
    query = select(EditionRow).order_by(EditionRow.id.desc()).limit(limit)
    if before_id is not None:
        query = query.where(EditionRow.id < before_id)
    return [_edition(row) for row in session.scalars(query)]


@dataclass(frozen=True, slots=True)
class StoredVariant:
    """A variant of an edition as rendered once for every sender (``empty``: nothing for those readers)."""

    empty: bool
    subject: str
    preheader: str
    html: str
    text: str
    language: str
    links: tuple[str, str, str]  # the placeholders: unsubscribe, preferences, view online
    problems: tuple[str, ...]


def stored_variant(session: Session, edition_id: int, key: str) -> StoredVariant | None:
    """The variant of the edition stored under ``key``, if a sender rendered it already."""
    row = session.get(EditionVariantRow, (edition_id, key))
    if row is None:
        return None
    unsubscribe, preferences, view_online = row.links
    return StoredVariant(row.empty, row.subject, row.preheader, row.html, row.text, row.language,
                         (unsubscribe, preferences, view_online), tuple(row.problems))  # fmt: skip


def store_variant(session: Session, edition_id: int, key: str, variant: StoredVariant, now: datetime) -> None:
    """Keep a rendered variant for every sender; one stored first (by a rival rendering it at the same time, from
    the same inputs) is kept."""
    values = {"edition_id": edition_id, "key": key, "empty": variant.empty, "subject": variant.subject,
              "preheader": variant.preheader, "html": variant.html, "text": variant.text,
              "language": variant.language, "links": list(variant.links), "problems": list(variant.problems),
              "created_at": now}  # fmt: skip
    table = EditionVariantRow.__table__
    session.execute(_insert_unless_present(session, table, ["edition_id", "key"]).values(**values))  # type: ignore[arg-type]
