"""The editorial team's use cases: people and roles, invitations, passwords and sessions (``core.team``).

The command line, the editor pages and ``init`` call these; each change is recorded in the audit log in the
transaction that makes it. Invitations and password resets are emails with a signed link (``invite``, ``reset``)
that sets a password; a link works once, and not after a newer one was sent. An owner cannot remove or demote the
last owner, so the team can always be managed from the pages.

The configuration's ``[editors] passwords`` were where editors lived before; ``adopt_configured_editors`` makes
them owners of the team once, when the store has nobody yet (``syndication init``; ``people import`` adds the
ones still missing on purpose). From then on the store is the place to manage people.
"""

from __future__ import annotations

import functools
import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import Final

from sqlalchemy.orm import Session

from syndication.app.audit import record as audit
from syndication.app.digests import send_notice
from syndication.app.service import Service, adopt_editors
from syndication.app.subscribers import SubscriberError, normalise_email
from syndication.config import signing_keys
from syndication.core.audit import (
    PERSON_ADDED,
    PERSON_INVITED,
    PERSON_JOINED,
    PERSON_PASSWORD_RESET,
    PERSON_PASSWORD_SET,
    PERSON_REMOVED,
    PERSON_ROLE_CHANGED,
    SESSIONS_REVOKED,
    SYSTEM,
)
from syndication.core.passwords import check_new_password, hash_password, verify_password
from syndication.core.team import (
    INVITATION_SECONDS,
    RESET_SECONDS,
    SEEN_EVERY_SECONDS,
    EditorSession,
    Person,
    Role,
    SignedIn,
    check_name,
    link_subject,
    parse_link_subject,
)
from syndication.core.tokens import make_token, read_token
from syndication.errors import SyndicationError, TokenError
from syndication.mailing.render import Links, MailRenderer
from syndication.store import database
from syndication.store import people as store

INVITE: Final = "invite"
RESET: Final = "reset"
SESSION_ID_BYTES: Final = 16


class TeamError(SyndicationError):
    """A change to the team was refused; the message says why, ``reason`` is a stable code for the pages to word:
    ``exists``, ``no_person``, ``last_owner``, ``joined``, ``no_email``, ``bad_address``, ``no_session``."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class LinkRefused(TokenError):
    """An invitation or reset link that does not work; ``reason``: ``invalid`` (forged, cut, altered),
    ``expired``, ``used`` (used already, or a newer one was sent since) or ``gone`` (its person left the team)."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class Invitation:
    """An invitation made: the person, the link that sets their password, and whether the email left (``problem``
    says why not: the owner can then pass the link on another way)."""

    person: Person
    url: str
    problem: str = ""

    @property
    def sent(self) -> bool:
        """Whether the invitation email was handed to the relay."""
        return not self.problem


# --- Who is in the team -------------------------------------------------------------------------------------------


def adopt_configured_editors(service: Service, *, everyone_missing: bool = False, actor: str = SYSTEM) -> list[str]:
    """Make owners of the configuration's editors (``[editors] passwords``): when the team is still empty (what
    ``init`` does), or with ``everyone_missing`` each name not in it yet. Returns the names added."""
    return adopt_editors(service.settings, service.engine, service.clock(), actor, only_if_empty=not everyone_missing)


def list_people(service: Service) -> list[Person]:
    """Everyone in the team, by name."""
    with database.transaction(service.engine) as session:
        return store.people(session)


def find_person(service: Service, reference: str) -> Person:
    """The person by sign-in name (or ``#id``); TeamError when there is none."""
    with database.transaction(service.engine) as session:
        return _find(session, reference)


def add_person(service: Service, name: str, email: str | None, role: Role, password: str, *, actor: str) -> Person:
    """Add someone with a password set now (the command line's way, for the first owner or a locked-out team)."""
    check_new_password(password)  # ValueError: said by the caller with the name
    stored = hash_password(password)
    with database.transaction(service.engine) as session:
        person = _new_person(session, service, name, email, role, stored, actor)
        _audit(session, service, actor, PERSON_ADDED, person.id, name=person.name, role=str(role))
        return person


def invite(
    service: Service, name: str, email: str, role: Role, *, actor: str, language: str | None = None
) -> Invitation:
    """Add ``name`` (without a password) and email them an invitation to set one, or send a new invitation to
    someone invited before who has not joined yet (their role and address as given now)."""
    address = _address(email)
    with database.transaction(service.engine) as session:
        existing = store.person_named(session, check_name(name))
        if existing is not None and existing.joined:
            raise TeamError(f"{name} is already in the team", "exists")
        now = service.clock()
        if existing is None:
            person = _new_person(session, service, name, address, role, None, actor)
        else:
            changed = store.update_person(session, existing.id, email=address, role=role, invited_at=now)
            assert changed is not None
            person = changed
        _audit(session, service, actor, PERSON_INVITED, person.id, name=person.name, email=address, role=str(role))
    return _send_link(service, person, INVITE, language)


def resend_invitation(service: Service, reference: str, *, actor: str, language: str | None = None) -> Invitation:
    """A new invitation for someone who has not joined yet (the links sent before stop working)."""
    person = find_person(service, reference)
    if person.joined:
        raise TeamError(f"{person.name} has joined already: send a password reset instead", "joined")
    if not person.email:
        raise TeamError(f"{person.name} has no email address to invite", "no_email")
    return invite(service, person.name, person.email, person.role, actor=actor, language=language)


def change_role(service: Service, reference: str, role: Role, *, actor: str) -> Person:
    """Give someone another role; TeamError when it would leave the team without an owner."""
    with database.transaction(service.engine) as session:
        person = _find(session, reference)
        if person.role == role:
            return person
        if person.role == Role.OWNER:
            _keep_an_owner(session, person, "change the role of")
        changed = store.update_person(session, person.id, role=role)
        assert changed is not None
        _audit(session, service, actor, PERSON_ROLE_CHANGED, person.id, name=person.name, old=person.role, new=role)
        return changed


def remove_person(service: Service, reference: str, *, actor: str) -> Person:
    """Remove someone (their sessions end with them); TeamError for the last owner."""
    with database.transaction(service.engine) as session:
        person = _find(session, reference)
        if person.role == Role.OWNER:
            _keep_an_owner(session, person, "remove")
        store.remove_person(session, person.id)
        _audit(session, service, actor, PERSON_REMOVED, person.id, name=person.name, role=str(person.role))
        return person


# --- Passwords ------------------------------------------------------------------------------------------------------


def authenticate(service: Service, name: str, password: str) -> Person | None:
    """The person signing in as ``name`` with ``password``, or None. An unknown name, or one without a password
    yet, takes as long as a wrong password (a hash is checked either way)."""
    with database.transaction(service.engine) as session:
        person = store.person_named(session, name) if len(name) <= 100 else None
    stored = person.password_hash if person is not None else None
    matches = verify_password(password, stored or _dummy_hash())
    if person is None or stored is None or not matches:
        return None
    return person


def link_person(service: Service, purpose: str, token: str) -> Person:
    """Whose invitation (``invite``) or reset (``reset``) link ``token`` is; LinkRefused when it is forged,
    expired, used already (the password was set since), replaced by a newer one, or its person left."""
    max_age = INVITATION_SECONDS if purpose == INVITE else RESET_SECONDS
    keys = signing_keys(service.settings)
    try:
        subject = read_token(keys, purpose, token, max_age, now=service.clock())
    except TokenError as error:
        try:
            read_token(keys, purpose, token, 10 * 365 * 24 * 3600, now=service.clock())
        except TokenError:
            raise LinkRefused(str(error), "invalid") from None
        raise LinkRefused(f"this {purpose} link has expired: ask for a new one", "expired") from None
    parsed = parse_link_subject(subject)
    if parsed is None:
        raise LinkRefused(f"this {purpose} link is not valid (altered, or made for something else)", "invalid")
    person_id, mark = parsed
    with database.transaction(service.engine) as session:
        person = store.person(session, person_id)
    if person is None:
        raise LinkRefused(f"this {purpose} link is for someone no longer in the team", "gone")
    if purpose == INVITE and person.joined:
        raise LinkRefused("this invitation was accepted already: sign in, or ask for a password reset", "used")
    if person.link_mark() != mark:
        raise LinkRefused(f"this {purpose} link was used already or replaced by a newer one: ask for a new one", "used")
    return person


def set_password_from_link(service: Service, purpose: str, token: str, password: str) -> Person:
    """Set the password of the link's person (accepting an invitation, or a reset): the link stops working and
    every session they had ends. LinkRefused for the link, ValueError for a password too weak."""
    person = link_person(service, purpose, token)
    check_new_password(password)
    action = PERSON_JOINED if purpose == INVITE else PERSON_PASSWORD_RESET
    return _set_password(service, person, hash_password(password), action, person.actor)


def set_password(service: Service, reference: str, password: str, *, actor: str) -> Person:
    """Set someone's password directly (the command line's recovery); their sessions end."""
    check_new_password(password)
    person = find_person(service, reference)
    return _set_password(service, person, hash_password(password), PERSON_PASSWORD_SET, actor)


def request_reset(service: Service, reference: str, *, language: str | None = None) -> Invitation | None:
    """Email a password reset link to the person with this name or address (an invitation again to one who has
    not joined yet); None when there is nobody to send it to. The caller says the same thing either way."""
    reference = reference.strip()
    with database.transaction(service.engine) as session:
        found = store.person_named(session, reference) if len(reference) <= 100 else None
        if found is None and "@" in reference:
            try:
                matches = store.people_at(session, normalise_email(reference))
            except SubscriberError:
                matches = []
            found = matches[0] if len(matches) == 1 else None
    if found is None or not found.email:
        return None
    if not found.joined:
        return invite(service, found.name, found.email, found.role, actor=found.actor, language=language)
    return _send_link(service, found, RESET, language)


def send_reset(service: Service, reference: str, *, actor: str, language: str | None = None) -> Invitation:
    """Email someone a password reset link at an owner's request; TeamError when they have no address."""
    person = find_person(service, reference)
    if not person.email:
        raise TeamError(f"{person.name} has no email address for a reset link", "no_email")
    if not person.joined:
        return resend_invitation(service, reference, actor=actor, language=language)
    return _send_link(service, person, RESET, language)


# --- Sessions -------------------------------------------------------------------------------------------------------


def start_session(service: Service, person: Person, *, address: str, agent: str) -> str:
    """A new session for ``person`` (lasting ``[editors] session_hours``): its id, for the cookie."""
    session_id = secrets.token_hex(SESSION_ID_BYTES)
    now = service.clock()
    hours = service.settings.editors.session_hours
    with database.transaction(service.engine) as session:
        store.start_session(
            session,
            session_id=session_id,
            person_id=person.id,
            now=now,
            expires_at=now + timedelta(hours=hours),
            address=address,
            agent=agent,
        )
        store.update_person(session, person.id, last_sign_in_at=now)
    return session_id


def signed_in(service: Service, session_id: str) -> SignedIn | None:
    """Who session ``session_id`` signs in, as they are now (their role included), or None when it ended."""
    now = service.clock()
    with database.transaction(service.engine) as session:
        found = store.signed_in(session, session_id, now)
        if found is None:
            return None
        who, last_seen = found
        if (now - last_seen).total_seconds() >= SEEN_EVERY_SECONDS:
            store.seen(session, session_id, now)
        return who


def sign_out(service: Service, session_id: str) -> None:
    """End session ``session_id`` (its cookie signs nobody in any more, wherever it was copied)."""
    with database.transaction(service.engine) as session:
        store.revoke(session, service.clock(), session_id=session_id)


def live_sessions(service: Service, reference: str | None = None) -> list[EditorSession]:
    """The sessions that still sign someone in: everyone's, or one person's; most recently used first."""
    with database.transaction(service.engine) as session:
        person_id = _find(session, reference).id if reference else None
        return store.sessions(session, service.clock(), person_id)


def revoke_session(service: Service, session_id: str, *, actor: str) -> EditorSession:
    """End one session at an owner's request; TeamError when it is not a live session."""
    with database.transaction(service.engine) as session:
        found = store.editor_session(session, session_id) if len(session_id) <= 32 else None
        if found is None or not store.revoke(session, service.clock(), session_id=session_id):
            raise TeamError(f"no live session {session_id[:40]!r}", "no_session")
        _audit(session, service, actor, SESSIONS_REVOKED, found.person_id, name=found.person_name, sessions=1)
        return found


def revoke_sessions(service: Service, reference: str, *, actor: str) -> int:
    """End every session of someone; how many there were."""
    with database.transaction(service.engine) as session:
        person = _find(session, reference)
        ended = store.revoke(session, service.clock(), person_id=person.id)
        _audit(session, service, actor, SESSIONS_REVOKED, person.id, name=person.name, sessions=ended)
        return ended


# --- Inside -----------------------------------------------------------------------------------------------------


def _find(session: Session, reference: str) -> Person:
    reference = reference.strip()
    person = None
    if reference.startswith("#") and reference[1:].isdigit():
        person = store.person(session, int(reference[1:]))
    elif len(reference) <= 100:
        person = store.person_named(session, reference)
    if person is None:
        raise TeamError(f"nobody in the team is called {reference[:100]!r}", "no_person")
    return person


def _new_person(
    session: Session, service: Service, name: str, email: str | None, role: Role, stored: str | None, actor: str
) -> Person:
    check_name(name)  # ValueError
    if store.person_named(session, name) is not None:
        raise TeamError(f"{name} is already in the team", "exists")
    address = _address(email) if email else None
    return store.add_person(
        session, name=name, email=address, role=role, password_hash=stored, now=service.clock(), created_by=actor
    )


def _address(email: str) -> str:
    try:
        return normalise_email(email)
    except SubscriberError as error:
        raise TeamError(str(error), "bad_address") from None


def _keep_an_owner(session: Session, person: Person, doing: str) -> None:
    if store.owners(session) <= 1:
        raise TeamError(f"cannot {doing} {person.name}: the team needs at least one owner", "last_owner")


def _set_password(service: Service, person: Person, stored: str, action: str, actor: str) -> Person:
    now = service.clock()
    with database.transaction(service.engine) as session:
        changed = store.update_person(session, person.id, password_hash=stored, password_changed_at=now)
        if changed is None:
            raise TeamError(f"{person.name} is no longer in the team", "no_person")
        ended = store.revoke(session, now, person_id=person.id)
        _audit(session, service, actor, action, person.id, name=person.name, sessions_ended=ended)
        return changed


def _send_link(service: Service, person: Person, purpose: str, language: str | None) -> Invitation:
    settings = service.settings
    token = make_token(signing_keys(settings), purpose, link_subject(person), now=service.clock())
    page = "welcome" if purpose == INVITE else "reset"
    url = f"{settings.site.base_url}/editor/{page}/{token}"
    if not person.email:
        return Invitation(person, url, "no email address")
    email_name = "invitation" if purpose == INVITE else "password_reset"
    context = {
        "name": person.name,
        "role": str(person.role),
        "url": url,
        "hours": (INVITATION_SECONDS if purpose == INVITE else RESET_SECONDS) // 3600,
    }
    base = settings.site.base_url
    links = Links(unsubscribe=f"{base}/", preferences=f"{base}/", view_online=f"{base}/editor/")
    try:
        email = MailRenderer(settings).render_notice(email_name, language or settings.site.language, context, links)
        send_notice(service, email, person.email, person.name, f"{email_name}.{person.id}")
    except SyndicationError as error:
        return Invitation(person, url, str(error))
    return Invitation(person, url)


def _audit(
    session: Session, service: Service, actor: str, action: str, person_id: int | None, **details: object
) -> None:
    audit(session, service.clock(), actor, action, ("person", person_id), **details)


@functools.cache
def _dummy_hash() -> str:
    """Checked against when the name is unknown, so that a wrong name takes as long as a wrong password."""
    return hash_password(secrets.token_urlsafe(16))
