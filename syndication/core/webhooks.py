"""Outgoing webhooks, the pure part: the event types, the secrets and signatures of the Standard Webhooks
convention (https://www.standardwebhooks.com/), the body of a message and when a failed delivery is tried again.

A message is signed with its endpoint's secret, ``whsec_`` and base64 of 24 to 64 random bytes: the signature is
``v1,`` and base64 of the HMAC-SHA256, keyed with those decoded bytes, of ``{id}.{timestamp}.{body}``, sent in the
``webhook-signature`` header beside ``webhook-id`` (the same on every retry: receivers deduplicate on it) and
``webhook-timestamp`` (seconds since the epoch, of the attempt).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from syndication.core.models import Edition, Post, Subscriber

SUBSCRIBER_CONFIRMED: Final = "subscriber.confirmed"
SUBSCRIBER_UNSUBSCRIBED: Final = "subscriber.unsubscribed"
SUBSCRIBER_BOUNCED: Final = "subscriber.bounced"
SUBSCRIBER_COMPLAINED: Final = "subscriber.complained"
EDITION_APPROVED: Final = "edition.approved"
EDITION_SENT: Final = "edition.sent"
POST_PUBLISHED: Final = "post.published"
EVENT_TYPES: Final = (
    SUBSCRIBER_CONFIRMED,
    SUBSCRIBER_UNSUBSCRIBED,
    SUBSCRIBER_BOUNCED,
    SUBSCRIBER_COMPLAINED,
    EDITION_APPROVED,
    EDITION_SENT,
    POST_PUBLISHED,
)
# The subscriber status each subscriber event announces, by the status it went to.
SUBSCRIBER_EVENTS: Final = {
    "active": SUBSCRIBER_CONFIRMED,
    "unsubscribed": SUBSCRIBER_UNSUBSCRIBED,
    "bounced": SUBSCRIBER_BOUNCED,
    "complained": SUBSCRIBER_COMPLAINED,
}

SECRET_PREFIX: Final = "whsec_"  # noqa: S105 (the prefix, not a secret)
_SECRET_BYTES: Final = 32
_MIN_SECRET_BYTES: Final = 24
_MAX_SECRET_BYTES: Final = 64
SIGNATURE_VERSION: Final = "v1"
# Wait before the 2nd, 3rd... attempt; the last one repeats until ``max_attempts``.
RETRY_DELAYS: Final = (
    timedelta(seconds=30),
    timedelta(minutes=2),
    timedelta(minutes=10),
    timedelta(hours=1),
    timedelta(hours=6),
    timedelta(hours=12),
)
MAX_ERROR: Final = 500

# Delivery statuses: waiting for its (next) attempt, held by a runner that is posting it, delivered, given up.
PENDING: Final = "pending"
SENDING: Final = "sending"
SENT: Final = "sent"
FAILED: Final = "failed"


class WebhookRuleError(ValueError):
    """A secret, an event type or a URL the webhooks refuse; the message says why."""


@dataclass(frozen=True)
class Endpoint:
    """A URL the owner registered for some event types; ``secret`` signs what is sent to it."""

    id: int
    url: str
    events: tuple[str, ...]
    secret: str
    created_at: datetime
    active: bool

    def as_json(self) -> dict[str, Any]:
        """What ``webhooks list --json`` prints: the secret masked."""
        return {
            "id": self.id,
            "url": self.url,
            "events": list(self.events),
            "secret": mask_secret(self.secret),
            "created_at": self.created_at,
            "active": self.active,
        }


@dataclass(frozen=True)
class Attempt:
    """One attempt at delivering an event to an endpoint: when, the answer (status code, or the error)."""

    at: datetime
    event_id: str
    event_type: str
    attempt: int
    status_code: int | None
    error: str
    delivered: bool

    def as_json(self) -> dict[str, Any]:
        return {
            "at": self.at,
            "event_id": self.event_id,
            "event_type": self.event_type,
            "attempt": self.attempt,
            "status_code": self.status_code,
            "error": self.error,
            "delivered": self.delivered,
        }


def new_secret() -> str:
    """A fresh secret: ``whsec_`` and base64 of 32 random bytes."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(_SECRET_BYTES)).decode("ascii")


def secret_key(secret: str) -> bytes:
    """The HMAC key of ``secret`` (its base64 decoded, after ``whsec_``); WebhookRuleError when it is not one."""
    text = secret.strip()
    if not text.startswith(SECRET_PREFIX):
        raise WebhookRuleError(f"a webhook secret starts with {SECRET_PREFIX!r} (then base64 of 24 to 64 bytes)")
    try:
        key = base64.b64decode(text.removeprefix(SECRET_PREFIX), validate=True)
    except (binascii.Error, ValueError):
        raise WebhookRuleError("a webhook secret is 'whsec_' then base64: this one is not base64") from None
    if not _MIN_SECRET_BYTES <= len(key) <= _MAX_SECRET_BYTES:
        raise WebhookRuleError(f"a webhook secret holds 24 to 64 bytes, not {len(key)}")
    return key


def mask_secret(secret: str) -> str:
    """The secret as lists show it: its prefix and last four characters."""
    return f"{SECRET_PREFIX}…{secret[-4:]}"


def sign(secret: str, message_id: str, timestamp: int, body: str) -> str:
    """The ``webhook-signature`` header of ``body`` sent as ``message_id`` at ``timestamp``."""
    signed = f"{message_id}.{timestamp}.{body}".encode()
    digest = hmac.new(secret_key(secret), signed, hashlib.sha256).digest()
    return f"{SIGNATURE_VERSION},{base64.b64encode(digest).decode('ascii')}"


def headers(secret: str, message_id: str, at: datetime, body: str) -> dict[str, str]:
    """Every header of one attempt: the id, its timestamp and signature, and the content type."""
    timestamp = int(at.timestamp())
    return {
        "content-type": "application/json",
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(secret, message_id, timestamp, body),
    }


def new_message_id() -> str:
    """A message id, stable for the event's every delivery and retry."""
    return f"msg_{uuid.uuid4().hex}"


def body(event_type: str, at: datetime, data: Mapping[str, Any]) -> str:
    """The JSON body of an event: its type, when it happened (ISO 8601 UTC, ``Z``) and what it is about."""
    return json.dumps(
        {"type": event_type, "timestamp": iso(at), "data": dict(data)},
        ensure_ascii=False,
        separators=(",", ":"),
        sort_keys=True,
        default=_json_value,
    )


def iso(moment: datetime) -> str:
    """ISO 8601 in UTC with ``Z``, to the second."""
    return moment.astimezone(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def _json_value(value: object) -> object:
    if isinstance(value, datetime):
        return iso(value)
    if isinstance(value, tuple | set | frozenset):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON")


def check_events(names: Iterable[str]) -> tuple[str, ...]:
    """The event types named (in EVENT_TYPES' order, once each); WebhookRuleError naming an unknown one."""
    wanted = [name.strip() for name in names if name.strip()]
    unknown = [name for name in wanted if name not in EVENT_TYPES]
    if unknown:
        raise WebhookRuleError(f"unknown event {unknown[0]!r} (expected some of {', '.join(EVENT_TYPES)})")
    if not wanted:
        raise WebhookRuleError(f"name at least one event ({', '.join(EVENT_TYPES)})")
    return tuple(name for name in EVENT_TYPES if name in wanted)


def retry_at(attempts: int, now: datetime, max_attempts: int) -> datetime | None:
    """When to try again after ``attempts`` failed attempts, or None when that was the last one."""
    if attempts >= max_attempts:
        return None
    return now + RETRY_DELAYS[min(attempts, len(RETRY_DELAYS)) - 1]


def subscriber_data(subscriber: Subscriber) -> dict[str, Any]:
    """What a subscriber event says of the subscriber (as they are after the change)."""
    return {
        "id": subscriber.id,
        "email": subscriber.email,
        "name": subscriber.name,
        "status": subscriber.status,
        "cadence": subscriber.cadence,
        "themes": list(subscriber.themes) if subscriber.themes is not None else None,
        "language": subscriber.language,
    }


def edition_data(edition: Edition, deliveries: Mapping[str, int] | None = None) -> dict[str, Any]:
    """What an edition event says of the edition; ``deliveries``: how many of its deliveries ended how."""
    data: dict[str, Any] = {
        "id": edition.id,
        "cadence": edition.cadence,
        "since": edition.since,
        "until": edition.until,
        "status": str(edition.status),
        "subject": edition.subject,
    }
    if deliveries is not None:
        data["deliveries"] = {str(status): count for status, count in sorted(deliveries.items())}
    if edition.reason:
        data["reason"] = edition.reason
    return data


def post_data(post: Post) -> dict[str, Any]:
    """What ``post.published`` says of the post."""
    return {
        "guid": post.guid,
        "title": post.title,
        "url": post.url,
        "summary": post.summary,
        "published": post.published,
        "language": post.language,
        "authors": [a.name for a in post.authors],
        "themes": list(post.themes),
        "regions": list(post.regions),
    }
