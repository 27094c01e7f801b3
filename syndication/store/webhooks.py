"""Outgoing webhooks in the store: the endpoints, the events outbox, each event's delivery to each endpoint and
its attempts. Functions take a Session and never commit.

An event is recorded (``record_event``) in the transaction of the change it announces, and only when an active
endpoint wants its type, so a service without webhooks writes nothing. Runners claim due deliveries under a lease
and a fencing token (``claim``: ``FOR UPDATE SKIP LOCKED`` on PostgreSQL, as ``ledger.claim`` does), post them
outside any transaction, and record the outcome only while they still hold the claim (``finish``).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from syndication.core import webhooks as rules
from syndication.core.webhooks import Attempt, Endpoint
from syndication.store.schema import (
    PostRow,
    WebhookAttemptRow,
    WebhookDeliveryRow,
    WebhookEndpointRow,
    WebhookEventRow,
)


@dataclass(frozen=True)
class WebhookClaim:
    """A delivery a runner holds until its lease ends, under fencing ``token``: what to post, where, with what."""

    delivery_id: int
    token: int
    attempts: int
    event_id: str
    body: str
    endpoint_id: int
    url: str
    secret: str


def add_endpoint(session: Session, url: str, events: Collection[str], secret: str, now: datetime) -> Endpoint:
    """Register ``url`` for ``events``, signed with ``secret`` (kept as given: it must sign every message)."""
    row = WebhookEndpointRow(url=url, events=list(events), secret=secret, created_at=now, active=True)
    session.add(row)
    session.flush()
    return _endpoint(row)


def endpoints(session: Session) -> list[Endpoint]:
    """Every endpoint, oldest first."""
    return [_endpoint(row) for row in session.scalars(select(WebhookEndpointRow).order_by(WebhookEndpointRow.id))]


def endpoint(session: Session, endpoint_id: int) -> Endpoint | None:
    row = session.get(WebhookEndpointRow, endpoint_id)
    return None if row is None else _endpoint(row)


def remove_endpoint(session: Session, endpoint_id: int) -> bool:
    """Remove an endpoint with its deliveries and attempts; False when there is none."""
    session.execute(delete(WebhookAttemptRow).where(WebhookAttemptRow.endpoint_id == endpoint_id))
    session.execute(delete(WebhookDeliveryRow).where(WebhookDeliveryRow.endpoint_id == endpoint_id))
    result = session.execute(delete(WebhookEndpointRow).where(WebhookEndpointRow.id == endpoint_id))
    return bool(getattr(result, "rowcount", 0))


def _listeners(session: Session, event_type: str) -> list[int]:
    # Few endpoints, read by id; the JSON list is filtered here (its operators differ between the databases).
    rows = session.execute(select(WebhookEndpointRow.id, WebhookEndpointRow.events).where(WebhookEndpointRow.active))
    return [endpoint_id for endpoint_id, events in rows if event_type in (events or ())]


def wanted(session: Session, event_type: str) -> bool:
    """Whether some active endpoint wants events of this type (one small query)."""
    return bool(_listeners(session, event_type))


def record_event(session: Session, event_type: str, data: Mapping[str, Any], now: datetime) -> str | None:
    """Put an event in the outbox with one pending delivery per active endpoint that wants its type, in the
    caller's transaction; returns its message id, or None (nothing written) when no endpoint wants it."""
    listeners = _listeners(session, event_type)
    if not listeners:
        return None
    message_id = rules.new_message_id()
    session.add(WebhookEventRow(id=message_id, type=event_type, body=rules.body(event_type, now, data), created_at=now))
    session.flush()
    session.add_all(
        WebhookDeliveryRow(
            event_id=message_id,
            endpoint_id=endpoint_id,
            status=rules.PENDING,
            attempts=0,
            next_attempt_at=now,
            lease_token=0,
            last_error="",
            updated_at=now,
        )
        for endpoint_id in listeners
    )
    session.flush()
    return message_id


def new_guids(session: Session, guids: Collection[str]) -> set[str]:
    """The guids among ``guids`` no stored post has (read before storing a batch, to tell which posts are new)."""
    wanted_guids = list(dict.fromkeys(guids))
    known: set[str] = set()
    for start in range(0, len(wanted_guids), 500):
        chunk = wanted_guids[start : start + 500]
        known.update(session.scalars(select(PostRow.guid).where(PostRow.guid.in_(chunk))))
    return set(wanted_guids) - known


def claim(session: Session, now: datetime, *, lease: timedelta, limit: int) -> list[WebhookClaim]:
    """Lease up to ``limit`` due deliveries to active endpoints (pending and due, or held by a runner whose lease
    ran out), each under a new fencing token."""
    d = WebhookDeliveryRow
    due = (
        select(d.id, d.lease_token, d.attempts, d.event_id, d.endpoint_id)
        .join(WebhookEndpointRow, WebhookEndpointRow.id == d.endpoint_id)
        .where(
            WebhookEndpointRow.active,
            ((d.status == rules.PENDING) & (d.next_attempt_at <= now))
            | ((d.status == rules.SENDING) & (d.lease_until < now)),
        )
        .order_by(d.next_attempt_at, d.id)
        .limit(limit)
    )
    if session.get_bind().dialect.name == "postgresql":
        due = due.with_for_update(skip_locked=True, of=WebhookDeliveryRow)
    rows = session.execute(due).all()
    if not rows:
        return []
    # The rows are locked (PostgreSQL) or this is the only writer (SQLite): each new token is the one read plus one.
    session.execute(
        update(d)
        .where(d.id.in_([row.id for row in rows]))
        .values(status=rules.SENDING, lease_until=now + lease, lease_token=d.lease_token + 1, updated_at=now)
    )
    event_ids = {row.event_id for row in rows}
    bodies = select(WebhookEventRow.id, WebhookEventRow.body).where(WebhookEventRow.id.in_(event_ids))
    events: dict[str, str] = {str(row.id): str(row.body) for row in session.execute(bodies)}
    targets = {
        row.id: (row.url, row.secret)
        for row in session.scalars(
            select(WebhookEndpointRow).where(WebhookEndpointRow.id.in_({r.endpoint_id for r in rows}))
        )
    }
    return [
        WebhookClaim(
            row.id,
            row.lease_token + 1,
            row.attempts,
            row.event_id,
            events[row.event_id],
            row.endpoint_id,
            *targets[row.endpoint_id],
        )
        for row in rows
    ]


def finish(
    session: Session,
    held: WebhookClaim,
    now: datetime,
    *,
    status_code: int | None,
    error: str,
    delivered: bool,
    retry_at: datetime | None,
) -> bool:
    """Record one attempt's outcome, if ``held`` is still the current claim of its delivery (a runner that lost
    its lease records nothing); delivered, or pending again until ``retry_at``, or failed (None). True if recorded."""
    d = WebhookDeliveryRow
    status = rules.SENT if delivered else (rules.PENDING if retry_at is not None else rules.FAILED)
    result = session.execute(
        update(d)
        .where(d.id == held.delivery_id, d.lease_token == held.token, d.status == rules.SENDING)
        .values(
            status=status,
            attempts=d.attempts + 1,
            next_attempt_at=retry_at if retry_at is not None else now,
            lease_until=None,
            last_status_code=status_code,
            last_error=error[: rules.MAX_ERROR],
            updated_at=now,
        )
    )
    if not getattr(result, "rowcount", 0):
        return False
    session.add(
        WebhookAttemptRow(
            delivery_id=held.delivery_id,
            endpoint_id=held.endpoint_id,
            at=now,
            attempt=held.attempts + 1,
            status_code=status_code,
            error=error[: rules.MAX_ERROR],
            delivered=delivered,
        )
    )
    session.flush()
    return True


def attempts(session: Session, endpoint_id: int, limit: int = 20) -> list[Attempt]:
    """The endpoint's last attempts, newest first."""
    a, d, e = WebhookAttemptRow, WebhookDeliveryRow, WebhookEventRow
    query = (
        select(a.at, d.event_id, e.type, a.attempt, a.status_code, a.error, a.delivered)
        .join(d, d.id == a.delivery_id)
        .join(e, e.id == d.event_id)
        .where(a.endpoint_id == endpoint_id)
        .order_by(a.id.desc())
        .limit(limit)
    )
    return [Attempt(*row) for row in session.execute(query)]


def counts(session: Session, endpoint_id: int) -> dict[str, int]:
    """The endpoint's deliveries by status."""
    d = WebhookDeliveryRow
    query = select(d.status, func.count()).where(d.endpoint_id == endpoint_id).group_by(d.status)
    return {status: int(count) for status, count in session.execute(query)}


def _endpoint(row: WebhookEndpointRow) -> Endpoint:
    return Endpoint(row.id, row.url, tuple(row.events or ()), row.secret, row.created_at, bool(row.active))


def prune(session: Session, cutoff: datetime, *, dry_run: bool = False) -> tuple[int, int, int]:
    """Remove the events recorded before ``cutoff`` whose every delivery is over (sent or given up), with their
    deliveries and attempts; returns how many of each (with ``dry_run``: would be). An event with a delivery
    still to send or retry stays whole: at-least-once holds until it is over."""
    d, a, e = WebhookDeliveryRow, WebhookAttemptRow, WebhookEventRow
    unfinished = select(d.id).where(d.event_id == e.id, d.status.in_((rules.PENDING, rules.SENDING))).exists()
    events = select(e.id).where(e.created_at < cutoff, ~unfinished)
    deliveries = select(d.id).where(d.event_id.in_(events))
    counted = (
        session.scalar(select(func.count()).select_from(e).where(e.id.in_(events))) or 0,
        session.scalar(select(func.count()).select_from(d).where(d.id.in_(deliveries))) or 0,
        session.scalar(select(func.count()).select_from(a).where(a.delivery_id.in_(deliveries))) or 0,
    )
    if not dry_run:
        # Children first: SQLite enforces no cascade unless told to.
        doomed = list(session.scalars(events))
        for start in range(0, len(doomed), 500):
            chunk = doomed[start : start + 500]
            chunk_deliveries = select(d.id).where(d.event_id.in_(chunk))
            session.execute(delete(a).where(a.delivery_id.in_(chunk_deliveries)))
            session.execute(delete(d).where(d.event_id.in_(chunk)))
            session.execute(delete(e).where(e.id.in_(chunk)))
    return counted
