"""The audit log's vocabulary: who did what to what, and when.

An action is a stable dotted name (``edition.approved``); an actor says who, with its kind before a colon:
``editor:<name>`` (signed in on the editor pages), ``cli:<operating system user>`` (the command line),
``token:<name>`` (a client of the JSON API), or ``system`` (the scheduler and the sender). The names are what the
JSON export and the store keep: never reworded.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

SYSTEM: Final = "system"

# Every action recorded, by its stable name (a new one is added here and worded on the audit page).
EDITION_APPROVED: Final = "edition.approved"
EDITION_PAUSED: Final = "edition.paused"
EDITION_RESUMED: Final = "edition.resumed"
EDITION_CANCELLED: Final = "edition.cancelled"
EDITION_TEXT_CHANGED: Final = "edition.text_changed"
EDITION_TEST_SENT: Final = "edition.test_sent"
EDITION_RETRIED: Final = "edition.retried"
SUBSCRIBER_ERASED: Final = "subscriber.erased"
SUBSCRIBER_REACTIVATED: Final = "subscriber.reactivated"
TOKEN_CREATED: Final = "token.created"  # noqa: S105 (an action's name, not a secret)
TOKEN_REVOKED: Final = "token.revoked"  # noqa: S105
WEBHOOK_ADDED: Final = "webhook.added"
WEBHOOK_REMOVED: Final = "webhook.removed"
PERSON_ADDED: Final = "person.added"
PERSON_INVITED: Final = "person.invited"
PERSON_JOINED: Final = "person.joined"
PERSON_ROLE_CHANGED: Final = "person.role_changed"
PERSON_REMOVED: Final = "person.removed"
PERSON_PASSWORD_RESET: Final = "person.password_reset"  # noqa: S105 (an action's name, not a secret)
PERSON_PASSWORD_SET: Final = "person.password_set"  # noqa: S105
SESSIONS_REVOKED: Final = "person.sessions_revoked"
ACTIONS: Final = (
    EDITION_APPROVED,
    EDITION_PAUSED,
    EDITION_RESUMED,
    EDITION_CANCELLED,
    EDITION_TEXT_CHANGED,
    EDITION_TEST_SENT,
    EDITION_RETRIED,
    SUBSCRIBER_ERASED,
    SUBSCRIBER_REACTIVATED,
    TOKEN_CREATED,
    TOKEN_REVOKED,
    WEBHOOK_ADDED,
    WEBHOOK_REMOVED,
    PERSON_ADDED,
    PERSON_INVITED,
    PERSON_JOINED,
    PERSON_ROLE_CHANGED,
    PERSON_REMOVED,
    PERSON_PASSWORD_RESET,
    PERSON_PASSWORD_SET,
    SESSIONS_REVOKED,
)
MAX_ACTOR: Final = 200


def editor_actor(name: str) -> str:
    """The actor of an editor signed in as ``name``."""
    return f"editor:{name}"


def cli_actor(user: str) -> str:
    """The actor of the command line run by the operating system's ``user``."""
    return f"cli:{user}"


@dataclass(frozen=True)
class AuditEvent:
    """One recorded action: ``subject_kind`` (``edition``, ``subscriber``) and ``subject_id`` name what it was
    done to (an erased subscriber's id names nobody any more); ``details`` what an auditor needs besides."""

    id: int
    at: datetime
    actor: str
    action: str
    subject_kind: str
    subject_id: int | None
    details: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        """The event as the JSON export gives it (times in ISO 8601 UTC)."""
        return {
            "id": self.id,
            "at": self.at.isoformat(),
            "actor": self.actor,
            "action": self.action,
            "subject": {"kind": self.subject_kind, "id": self.subject_id},
            "details": self.details,
        }
