"""The editorial team: people, their roles, what each role may do, and their sessions.

Three roles, each allowing what the one below it does:

- ``viewer``: reads every editor page (dashboard, editions, previews, bounces, the audit log);
- ``editor``: also changes things about posts and editions (subject and intro, test sends, approve, pause,
  resume, cancel, retry, reactivate a subscriber);
- ``owner``: also manages the team (people, roles, sessions), API tokens and webhooks.

A person is invited by name and email address and has no password until they set one from the link in the
invitation; a password reset link works the same way. Both links are signed tokens whose subject carries a mark of
the person's password hash (or of the invitation's time), so a link stops working once it was used or a newer one
was sent.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, Final

from syndication.core.audit import editor_actor
from syndication.core.passwords import fingerprint


class Role(StrEnum):
    """What a person of the team may do (``ROLE_ACCESS``)."""

    OWNER = "owner"
    EDITOR = "editor"
    VIEWER = "viewer"


class Access(StrEnum):
    """What an editor page or command needs of the person using it."""

    READ = "read"  # see
    EDIT = "edit"  # change posts and editions
    MANAGE = "manage"  # change the team, tokens and webhooks


ROLES: Final = tuple(Role)
ROLE_ACCESS: Final[dict[Role, frozenset[Access]]] = {
    Role.OWNER: frozenset({Access.READ, Access.EDIT, Access.MANAGE}),
    Role.EDITOR: frozenset({Access.READ, Access.EDIT}),
    Role.VIEWER: frozenset({Access.READ}),
}
NAME_PATTERN: Final = r"[A-Za-z0-9._@+-]{1,100}"
MAX_EMAIL: Final = 320
# How long an invitation and a password reset link stay valid.
INVITATION_SECONDS: Final = 7 * 24 * 3600
RESET_SECONDS: Final = 3600
# How long a session's last use may lag: it is written at most this often, not on every request.
SEEN_EVERY_SECONDS: Final = 300


def allows(role: Role | str, access: Access) -> bool:
    """Whether ``role`` may do what needs ``access`` (an unknown role may do nothing)."""
    try:
        return access in ROLE_ACCESS[Role(role)]
    except ValueError:
        return False


def check_name(name: str) -> str:
    """``name`` as a sign-in name; ValueError saying why it is not one."""
    if not re.fullmatch(NAME_PATTERN, name):
        raise ValueError(f"{name[:100]!r} is not a sign-in name (1 to 100 letters, digits, '.', '_', '@', '+', '-')")
    return name


def check_role(value: str) -> Role:
    """``value`` as a Role; ValueError naming the roles."""
    try:
        return Role(value.strip().lower())
    except ValueError:
        raise ValueError(f"{value[:50]!r} is not a role ({', '.join(ROLES)})") from None


@dataclass(frozen=True)
class Person:
    """Someone of the editorial team. ``password_hash`` is None until they accept their invitation."""

    id: int
    name: str
    email: str | None
    role: Role
    password_hash: str | None
    created_at: datetime
    created_by: str
    invited_at: datetime | None = None
    password_changed_at: datetime | None = None
    last_sign_in_at: datetime | None = None

    @property
    def joined(self) -> bool:
        """Whether they have a password (and so can sign in)."""
        return self.password_hash is not None

    @property
    def actor(self) -> str:
        """Who the audit log says acted when this person did."""
        return editor_actor(self.name)

    def may(self, access: Access) -> bool:
        """Whether this person's role allows ``access``."""
        return allows(self.role, access)

    def link_mark(self) -> str:
        """What an invitation or reset link made now is bound to: their password hash, or before they have one
        the time they were (last) invited. Setting a password, or a new invitation, changes it."""
        if self.password_hash is not None:
            return fingerprint(self.password_hash)
        invited = self.invited_at.isoformat() if self.invited_at else str(self.id)
        return fingerprint(f"invited:{invited}")

    def as_json(self) -> dict[str, Any]:
        """The person for ``people list --json`` (never their password hash)."""
        return {
            "id": self.id,
            "name": self.name,
            "email": self.email,
            "role": str(self.role),
            "joined": self.joined,
            "created_at": _iso(self.created_at),
            "created_by": self.created_by,
            "invited_at": _iso(self.invited_at),
            "password_changed_at": _iso(self.password_changed_at),
            "last_sign_in_at": _iso(self.last_sign_in_at),
        }


@dataclass(frozen=True)
class EditorSession:
    """A signed-in session of a person: its id is what the session cookie carries (signed)."""

    id: str
    person_id: int
    person_name: str
    created_at: datetime
    last_seen_at: datetime
    expires_at: datetime
    address: str
    user_agent: str
    revoked_at: datetime | None = None

    def as_json(self) -> dict[str, Any]:
        """The session for ``people sessions --json``."""
        return {
            "id": self.id,
            "person": self.person_name,
            "created_at": _iso(self.created_at),
            "last_seen_at": _iso(self.last_seen_at),
            "expires_at": _iso(self.expires_at),
            "address": self.address,
            "user_agent": self.user_agent,
            "revoked_at": _iso(self.revoked_at),
        }


@dataclass(frozen=True)
class SignedIn:
    """Who a request's valid session belongs to, as the editor pages need it."""

    person_id: int
    name: str
    role: Role
    session_id: str

    @property
    def actor(self) -> str:
        """Who the audit log says acted."""
        return editor_actor(self.name)

    def may(self, access: Access) -> bool:
        """Whether their role allows ``access``."""
        return allows(self.role, access)


def link_subject(person: Person) -> str:
    """The subject of an invitation or reset link for ``person``: their id and ``link_mark``."""
    return f"{person.id}:{person.link_mark()}"


def parse_link_subject(subject: str) -> tuple[int, str] | None:
    """The person id and mark of a link's subject, or None when it is not one."""
    person_id, _, mark = subject.partition(":")
    if not person_id.isdigit() or not mark:
        return None
    return int(person_id), mark


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat().replace("+00:00", "Z")
