"""Outgoing webhooks: the owner registers endpoints (``syndication webhooks``), the use cases announce what changed
in the transaction of the change, and ``deliver_webhooks`` posts the due deliveries, signed, retrying with backoff.

Delivered at least once: an event is in the outbox as soon as its change commits; a delivery is marked sent only
after a 2xx answer, so a runner that dies between the two posts it again, with the same ``webhook-id``.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from urllib.parse import urlsplit

from sqlalchemy.orm import Session

from syndication.app.service import Service
from syndication.core import webhooks as rules
from syndication.core.audit import WEBHOOK_ADDED, WEBHOOK_REMOVED
from syndication.core.models import Edition, Post, Subscriber
from syndication.core.webhooks import Attempt, Endpoint, WebhookRuleError
from syndication.errors import SourceError, SyndicationError
from syndication.store import audit as audit_store
from syndication.store import database
from syndication.store import subscribers as subscriber_store
from syndication.store import webhooks as store

log = logging.getLogger("syndication.webhooks")

MAX_URL = 2048
_BATCH = 50


class WebhookError(SyndicationError):
    """A webhook endpoint or a change to one was refused; the message says why."""


@dataclass(frozen=True)
class EndpointView:
    """An endpoint with its deliveries by status (sent, pending, failed...)."""

    endpoint: Endpoint
    deliveries: dict[str, int]

    def as_json(self) -> dict[str, object]:
        return {**self.endpoint.as_json(), "deliveries": dict(self.deliveries)}


@dataclass
class WebhookReport:
    """What one drain did: deliveries posted and accepted, to be tried again, given up, and why each did not go."""

    delivered: int = 0
    retrying: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)

    @property
    def handled(self) -> int:
        return self.delivered + self.retrying + self.failed

    @property
    def summary(self) -> str:
        return f"{self.delivered} delivered, {self.retrying} to retry, {self.failed} failed"


# --- The owner's commands ---------------------------------------------------------------------------------------


def check_url(url: str, *, allow_private: bool) -> str:
    """The endpoint URL, checked: http(s), a host, not too long, and (unless ``allow_private``) not an address
    literal, nor ``localhost``, inside loopback or private networks. Host names are checked again after DNS at
    every delivery."""
    from syndication.sources.http import classify_address  # httpx: only for the commands that post

    text = url.strip()
    try:
        parts = urlsplit(text)
        host = parts.hostname
    except ValueError as error:
        raise WebhookError(f"{url}: not a valid URL ({error})") from None
    if parts.scheme.lower() not in ("http", "https") or not host:
        raise WebhookError(f"{url}: a webhook URL is http(s) and names a host")
    if len(text) > MAX_URL:
        raise WebhookError(f"{url[:80]}…: longer than {MAX_URL} characters")
    if not allow_private:
        reason = "a loopback name" if host.lower() == "localhost" or host.lower().endswith(".localhost") else None
        try:
            ipaddress.ip_address(host)
            reason = classify_address(host)
        except ValueError:
            pass  # a name: judged by what it resolves to, at each delivery
        if reason is not None:
            raise WebhookError(f"{url}: refused: {host} is {reason} (set [webhooks] allow_private = true to allow it)")
    return text


def add_endpoint(
    service: Service, url: str, events: Iterable[str], *, actor: str, secret: str | None = None
) -> tuple[Endpoint, str | None]:
    """Register ``url`` for ``events``; returns the endpoint and, when no ``secret`` was given, the secret made for
    it (shown once: lists mask it). Recorded in the audit log as ``actor``'s."""
    settings = service.settings.webhooks
    checked = check_url(url, allow_private=settings.allow_private)
    try:
        wanted = rules.check_events(events)
        made = None
        if secret is None:
            made = secret = rules.new_secret()
        secret = secret.strip()
        rules.secret_key(secret)
    except WebhookRuleError as error:
        raise WebhookError(str(error)) from None
    with database.transaction(service.engine) as session:
        now = service.clock()
        endpoint = store.add_endpoint(session, checked, wanted, secret, now)
        _audit(session, now, actor, WEBHOOK_ADDED, endpoint)
    return endpoint, made


def list_endpoints(service: Service) -> list[EndpointView]:
    """Every endpoint with its deliveries by status."""
    with database.transaction(service.engine) as session:
        return [EndpointView(e, store.counts(session, e.id)) for e in store.endpoints(session)]


def remove_endpoint(service: Service, endpoint_id: int, *, actor: str) -> None:
    """Remove an endpoint, its deliveries and attempts; WebhookError when there is none. Recorded in the audit log
    as ``actor``'s."""
    with database.transaction(service.engine) as session:
        endpoint = store.endpoint(session, endpoint_id)
        if endpoint is None or not store.remove_endpoint(session, endpoint_id):
            raise WebhookError(f"no webhook endpoint {endpoint_id}")
        _audit(session, service.clock(), actor, WEBHOOK_REMOVED, endpoint)


def _audit(session: Session, now: datetime, actor: str, action: str, endpoint: Endpoint) -> None:
    """Record, in the change's transaction, who added or removed ``endpoint`` (never its secret)."""
    details = {"url": endpoint.url, "events": list(endpoint.events)}
    audit_store.record(
        session, at=now, actor=actor, action=action, subject_kind="webhook", subject_id=endpoint.id, details=details
    )


def endpoint_attempts(service: Service, endpoint_id: int, limit: int = 20) -> tuple[Endpoint, list[Attempt]]:
    """An endpoint and its last attempts, newest first; WebhookError when there is none."""
    with database.transaction(service.engine) as session:
        endpoint = store.endpoint(session, endpoint_id)
        if endpoint is None:
            raise WebhookError(f"no webhook endpoint {endpoint_id}")
        return endpoint, store.attempts(session, endpoint_id, limit)


# --- Announcing, in the transaction of the change ---------------------------------------------------------------


def announce_subscriber(session: Session, now: datetime, subscriber_id: int, status: str) -> None:
    """Announce that a subscriber's status became ``status`` (active: confirmed; unsubscribed, bounced,
    complained) to the endpoints that want it; call it in the transaction that changed the status."""
    if _wanted_event(session, status) is None:
        return
    subscriber = subscriber_store.subscriber_by_id(session, subscriber_id)
    if subscriber is not None:  # the status given: a row changed by a bare UPDATE may be read stale here
        announce_subscribers(session, now, [subscriber], status)


def announce_subscribers(session: Session, now: datetime, subscribers: Sequence[Subscriber], status: str) -> None:
    """Announce that each of ``subscribers``' status became ``status``, as ``announce_subscriber`` (who wants it is
    looked up once: an import announces a thousand at a time)."""
    event_type = _wanted_event(session, status) if subscribers else None
    if event_type is None:
        return
    for subscriber in subscribers:
        store.record_event(session, event_type, rules.subscriber_data(replace(subscriber, status=status)), now)


def _wanted_event(session: Session, status: str) -> str | None:
    """The event a status change to ``status`` announces, or None when it announces none or no endpoint wants it."""
    event_type = rules.SUBSCRIBER_EVENTS.get(status)
    return event_type if event_type is not None and store.wanted(session, event_type) else None


def announce_approval(session: Session, now: datetime, edition: Edition) -> None:
    """Announce ``edition.approved``; call it in the transaction that approved it."""
    store.record_event(session, rules.EDITION_APPROVED, rules.edition_data(edition), now)


def new_posts(session: Session, posts: Sequence[Post]) -> set[str] | None:
    """Before storing ``posts``: the guids among them no post has yet, or None when no endpoint wants
    ``post.published`` (nothing is looked up)."""
    if not posts or not store.wanted(session, rules.POST_PUBLISHED):
        return None
    return store.new_guids(session, [p.guid for p in posts])


def announce_posts(session: Session, now: datetime, posts: Sequence[Post], new: set[str] | None) -> int:
    """After storing ``posts``: announce ``post.published`` for each that was new (``new_posts``) and whose time
    has come (a post dated in the future is not announced); returns how many were."""
    if not new:
        return 0
    newest: dict[str, Post] = {}  # a guid twice in a batch: its newest version is the one stored
    for item in posts:
        if item.guid in new and (item.guid not in newest or item.updated > newest[item.guid].updated):
            newest[item.guid] = item
    due = [item for item in newest.values() if item.published <= now]
    for item in due:
        store.record_event(session, rules.POST_PUBLISHED, rules.post_data(item), now)
    return len(due)


# --- Delivering -------------------------------------------------------------------------------------------------


def deliver_webhooks(service: Service, *, limit: int | None = None) -> WebhookReport:
    """Post every due delivery (retries included), each signed as the Standard Webhooks convention says: a 2xx
    answer delivers it, anything else (or no answer) tries it again later (30 s, 2 min, 10 min, 1 h, 6 h, 12 h)
    until ``[webhooks] max_attempts``, then gives it up as failed; a request refused for its address is given up
    at once. Nothing is held in a transaction while posting."""
    settings = service.settings.webhooks
    lease = timedelta(seconds=settings.timeout_seconds * 2 + 30)
    report = WebhookReport()
    while limit is None or report.handled < limit:
        batch = _BATCH if limit is None else min(_BATCH, limit - report.handled)
        with database.transaction(service.engine) as session:
            claims = store.claim(session, service.clock(), lease=lease, limit=batch)
        if not claims:
            break
        for held in claims:
            _deliver_one(service, held, report)
    return report


def _deliver_one(service: Service, held: store.WebhookClaim, report: WebhookReport) -> None:
    from syndication.sources.http import AddressRefused, RequestRefused, post  # httpx: only where it posts

    settings = service.settings.webhooks
    status_code: int | None = None
    refused = False
    try:
        headers = rules.headers(held.secret, held.event_id, service.clock(), held.body)
        answer = post(
            held.url,
            held.body.encode("utf-8"),
            headers=headers,
            timeout=settings.timeout_seconds,
            allow_private_networks=settings.allow_private,
        )
        status_code = answer.status
        delivered = 200 <= answer.status < 300
        error = "" if delivered else f"HTTP {answer.status}"
    except AddressRefused as refusal:
        delivered, refused, error = False, True, f"{refusal} (set [webhooks] allow_private = true to allow it)"
    except RequestRefused as refusal:
        delivered, refused, error = False, True, str(refusal)
    except (SourceError, WebhookRuleError) as failure:
        delivered, error = False, str(failure)
    now = service.clock()
    retry = None if delivered or refused else rules.retry_at(held.attempts + 1, now, settings.max_attempts)
    with database.transaction(service.engine) as session:
        recorded = store.finish(
            session, held, now, status_code=status_code, error=error, delivered=delivered, retry_at=retry
        )
    if not recorded:
        return  # its lease ran out and another runner holds it now: that one's outcome counts
    if delivered:
        report.delivered += 1
        return
    report.errors.append(f"{held.url} ({held.event_id}): {error}")
    if retry is None:
        report.failed += 1
        log.warning(
            "webhook %s to %s given up: %s",
            held.event_id,
            held.url,
            error,
            extra={"event": "webhook-failed", "endpoint": held.endpoint_id},
        )
    else:
        report.retrying += 1
