"""The JSON API's use cases (``/api/v1``, ``web.api``): its tokens (created and revoked from the command line,
recorded in the audit log), authenticating a request, the answers kept for ``Idempotency-Key`` retries, and the
pages of its lists, each behind an opaque cursor."""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final, Generic, TypeVar

from sqlalchemy.exc import IntegrityError

from syndication.app.audit import record as audit
from syndication.app.bounces import recent_bounces
from syndication.app.digests import preview_links
from syndication.app.editions import (
    EditionReport,
    NoSuchEdition,
    edition_email,
    edition_report,
    find_edition,
    send_test,
)
from syndication.app.gathering import import_records
from syndication.app.posts import delete_posts
from syndication.app.service import Service
from syndication.app.subscribers import (
    ImportReport,
    check_cadence,
    check_language,
    check_language_choice,
    check_reads,
    check_status,
    clean_name,
    default_language,
    find_subscriber,
    import_subscriber_records,
    normalise_email,
    parse_themes,
)
from syndication.core.api_tokens import (
    MAX_NAME,
    ApiToken,
    check_scopes,
    new_secret,
    parse_token,
    secret_hash,
    secret_matches,
    token_text,
)
from syndication.core.audit import TOKEN_CREATED, TOKEN_REVOKED
from syndication.core.languages import canonical_tag
from syndication.core.models import Post, Subscriber
from syndication.errors import SyndicationError
from syndication.mailing.render import RenderedEmail
from syndication.sources.normalise import build_post
from syndication.store import api_tokens as store
from syndication.store import database, ledger
from syndication.store import posts as post_store
from syndication.store import subscribers as subscriber_store
from syndication.store.bounces import BounceRecord

MAX_PAGE: Final = 100
# At most this many items in one import (posts or subscribers): a bigger batch is refused whole (413).
MAX_BATCH: Final = 1000
# How long the answer to an Idempotency-Key is kept: a retry within it gets the same answer.
IDEMPOTENCY_HOURS: Final = 24
# A token's last use is written at most this often: not one write per request.
_LAST_USED_EVERY: Final = timedelta(minutes=1)
# The fields of a post record (JSON Lines), named in a refusal when its reason names one.
_POST_FIELDS: Final = (
    "guid",
    "title",
    "url",
    "summary",
    "content_html",
    "authors",
    "published",
    "updated",
    "themes",
    "regions",
    "language",
    "image",
)
_AUTHOR: Final = re.compile(r"\bauthor\b")

T = TypeVar("T")


class ApiError(SyndicationError):
    """A request the API refuses. ``code`` is stable (clients branch on it); ``field`` names the input at fault,
    when one is."""

    code = "refused"

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class Unauthenticated(ApiError):
    """No token, or one that is malformed, unknown or revoked."""

    code = "unauthenticated"


class BadInput(ApiError):
    """An input that is not valid (a parameter, a field of the body)."""

    code = "invalid_input"


class NotFound(ApiError):
    """Nothing has this id."""

    code = "not_found"


class IdempotencyConflict(ApiError):
    """An Idempotency-Key used again with another request."""

    code = "idempotency_key_reused"


class SubscriberRefused(ApiError):
    """The address cannot be added as asked (suppressed, or a subscription that ended)."""

    code = "subscriber_refused"


class TooLarge(ApiError):
    """A batch with more items than MAX_BATCH."""

    code = "batch_too_large"


class NothingToSend(ApiError):
    """The edition holds nothing for the readers asked for: no email to send."""

    code = "nothing_to_send"


class NoSuchToken(SyndicationError):
    """No token has this id."""


# --- Tokens -------------------------------------------------------------------------------------------------------


def create_token(service: Service, name: str, scopes: Sequence[str], *, actor: str) -> tuple[ApiToken, str]:
    """Create a token named ``name`` with ``scopes``; returns it and the token text, which is shown once (the
    store keeps only its hash). Recorded in the audit log as ``actor``'s."""
    name = " ".join(name.split())
    if not name or len(name) > MAX_NAME:
        raise SyndicationError(f"a token's name is 1 to {MAX_NAME} characters")
    try:
        chosen = check_scopes(tuple(scopes))
    except ValueError as error:
        raise SyndicationError(str(error)) from None
    secret = new_secret()
    now = service.clock()
    with database.transaction(service.engine) as session:
        token = store.add_token(
            session, name=name, scopes=chosen, secret_hash=secret_hash(secret), now=now, created_by=actor
        )
        audit(session, now, actor, TOKEN_CREATED, ("token", token.id), name=name, scopes=list(chosen))
    return token, token_text(token.id, secret)


def list_tokens(service: Service) -> list[ApiToken]:
    """Every token, revoked ones too, in id order."""
    with database.transaction(service.engine) as session:
        return store.tokens(session)


def revoke_token(service: Service, token_id: int, *, actor: str) -> ApiToken:
    """Revoke a token at once (its next request is refused); recorded in the audit log. NoSuchToken."""
    now = service.clock()
    with database.transaction(service.engine) as session:
        found = store.token_and_hash(session, token_id)
        if found is None:
            raise NoSuchToken(f"no token {token_id}")
        if found[0].revoked_at is not None:
            return found[0]
        token = store.revoke(session, token_id, now)
        assert token is not None
        audit(session, now, actor, TOKEN_REVOKED, ("token", token_id), name=token.name)
    return token


def authenticate(service: Service, text: str | None) -> ApiToken:
    """The token a request carries (``Authorization: Bearer <token>``), when it is known and not revoked;
    Unauthenticated otherwise (one message for unknown and wrong secrets alike)."""
    if not text:
        raise Unauthenticated("this request needs a token: Authorization: Bearer synd_...")
    parsed = parse_token(text)
    if parsed is None:
        raise Unauthenticated("the token is not valid")
    token_id, secret = parsed
    now = service.clock()
    with database.transaction(service.engine) as session:
        found = store.token_and_hash(session, token_id)
        if found is None or not secret_matches(secret, found[1]):
            raise Unauthenticated("the token is not valid")
        token = found[0]
        if token.revoked_at is not None:
            raise Unauthenticated("the token was revoked")
        if token.last_used_at is None or now - token.last_used_at >= _LAST_USED_EVERY:
            store.touch(session, token_id, now)
    return token


# --- Idempotency --------------------------------------------------------------------------------------------------


def request_hash(operation: str, body: Any) -> str:
    """A hash of what a write asks for: its operation and its body as JSON with sorted keys."""
    text = json.dumps([operation, body], sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def kept_answer(service: Service, token: ApiToken, key: str, fingerprint: str) -> tuple[int, str] | None:
    """The (status, body) given to ``key`` of ``token`` within IDEMPOTENCY_HOURS, or None; IdempotencyConflict
    when the key was used for another request."""
    since = service.clock() - timedelta(hours=IDEMPOTENCY_HOURS)
    with database.transaction(service.engine) as session:
        kept = store.kept_answer(session, token.id, key, since)
    if kept is None:
        return None
    if kept[0] != fingerprint:
        raise IdempotencyConflict("this Idempotency-Key was used with another request", field="Idempotency-Key")
    return kept[1], kept[2]


def keep_answer(service: Service, token: ApiToken, key: str, fingerprint: str, status: int, body: str) -> None:
    """Keep the answer to ``key`` for IDEMPOTENCY_HOURS (and forget those older). A key answered meanwhile by a
    concurrent request keeps that first answer."""
    now = service.clock()
    try:
        with database.transaction(service.engine) as session:
            store.forget_answers(session, now - timedelta(hours=IDEMPOTENCY_HOURS))
            store.keep_answer(
                session, token_id=token.id, key=key, request_hash=fingerprint, status=status, body=body, now=now
            )
    except IntegrityError:
        pass


# --- Pages --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page of a list and the cursor of the next (None: this is the last)."""

    items: list[T]
    next: str | None = None


def _limit(limit: int) -> int:
    if not 1 <= limit <= MAX_PAGE:
        raise BadInput(f"limit must be from 1 to {MAX_PAGE}, not {limit}", field="limit")
    return limit


def _encode(kind: str, *values: Any) -> str:
    text = json.dumps([kind, *values], separators=(",", ":"))
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def _decode(kind: str, cursor: str | None) -> list[Any] | None:
    if cursor is None:
        return None
    try:
        values = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        if not isinstance(values, list) or not values or values[0] != kind:
            raise ValueError(cursor)
        return values[1:]
    except (ValueError, UnicodeError, TypeError):
        raise BadInput("this cursor is not one this list gave", field="cursor") from None


@dataclass(frozen=True)
class PostFilters:
    """What a list of posts is filtered by (as ``posts list``): slugs, a language tag, a time range."""

    theme: str | None = None
    region: str | None = None
    author: str | None = None
    language: str | None = None
    since: datetime | None = None
    until: datetime | None = None


def post_page(service: Service, filters: PostFilters, *, cursor: str | None, limit: int) -> Page[tuple[int, Post]]:
    """Published posts with their ids, newest first, ``limit`` at a time from ``cursor``."""
    limit = _limit(limit)
    if filters.theme is not None and filters.theme not in {theme.slug for theme in service.settings.themes}:
        raise BadInput(f"unknown theme {filters.theme!r}", field="theme")
    before = _time_cursor("posts", cursor)
    language = None if filters.language is None else canonical_tag(filters.language)
    with database.transaction(service.engine) as session:
        found = post_store.post_page(
            session,
            now=service.clock(),
            limit=limit + 1,
            theme=filters.theme,
            region=filters.region,
            author=filters.author,
            language=language,
            since=filters.since,
            until=filters.until,
            before=before,
        )
    items = found[:limit]
    more = len(found) > limit
    return Page(items, _encode("posts", items[-1][1].published.isoformat(), items[-1][0]) if more else None)


def find_post(service: Service, reference: str) -> tuple[int, Post]:
    """The published post whose guid (or id) is ``reference``, with its id; NotFound."""
    with database.transaction(service.engine) as session:
        found = post_store.post_by_reference(session, reference, service.clock())
    if found is None:
        raise NotFound(f"no post {reference!r}")
    return found


@dataclass(frozen=True)
class PostOutcome:
    """What storing one post did: ``created``, ``updated`` or ``unchanged`` (an update needs a newer
    ``updated``), its id, the post as stored and the warnings of its import."""

    action: str
    post_id: int
    post: Post
    warnings: list[str] = field(default_factory=list)


def put_post(service: Service, fields: Any) -> PostOutcome:
    """Create or update one post given as a JSON Lines record, validated and stored as an import stores it
    (``app.gathering.import_records``); BadInput naming the field at fault."""
    try:
        guid = build_post(fields, "post", service.vocabulary).post.guid
    except SyndicationError as error:
        reason = getattr(error, "reason", str(error))
        raise BadInput(reason, field=refused_field(reason)) from None
    report = import_records(service, [fields], source_label="api")
    if report.rejections:
        reason = report.rejections[0].reason
        raise BadInput(reason, field=refused_field(reason))
    with database.transaction(service.engine) as session:
        found = post_store.post_by_reference(session, guid, None)
    assert found is not None
    action = "created" if report.added else "updated" if report.updated else "unchanged"
    return PostOutcome(action, found[0], found[1], [notice.reason for notice in report.warnings])


def refused_field(reason: str) -> str | None:
    """The record field a refusal's reason names (``missing title``, ``invalid URL ...``), if it names one."""
    lowered = reason.lower()
    if _AUTHOR.search(lowered):
        return "authors"
    for name in _POST_FIELDS:
        if re.search(rf"\b{name}\b", lowered):
            return name
    return None


def subscriber_page(service: Service, *, status: str | None, cursor: str | None, limit: int) -> Page[Subscriber]:
    """Subscribers in id order, optionally of one status, ``limit`` at a time from ``cursor``."""
    limit = _limit(limit)
    if status is not None:
        try:
            status = check_status(status)
        except SyndicationError as error:
            raise BadInput(str(error), field="status") from None
    after = _decode("subscribers", cursor)
    after_id = _cursor_id(after)
    with database.transaction(service.engine) as session:
        found = subscriber_store.subscriber_page(session, status=status, after_id=after_id, limit=limit + 1)
    items = found[:limit]
    return Page(items, _encode("subscribers", items[-1].id) if len(found) > limit else None)


def edition_page(service: Service, *, cursor: str | None, limit: int) -> Page[EditionReport]:
    """Editions newest first, each with its deliveries per status and why some did not go, ``limit`` at a time
    from ``cursor``."""
    limit = _limit(limit)
    before_id = _cursor_id(_decode("editions", cursor))
    with database.transaction(service.engine) as session:
        found = ledger.edition_page(session, before_id=before_id, limit=limit + 1)
    items = [edition_report(service, edition.id) for edition in found[:limit]]
    return Page(items, _encode("editions", items[-1].edition.id) if len(found) > limit else None)


def _time_cursor(kind: str, cursor: str | None) -> tuple[datetime, int] | None:
    """The (time, id) a list of ``kind`` newest first goes on from, given its ``cursor``; None for the first
    page; BadInput for a cursor this list did not give."""
    after = _decode(kind, cursor)
    if after is None:
        return None
    try:
        return datetime.fromisoformat(after[0]), int(after[1])
    except (ValueError, TypeError, IndexError):
        raise BadInput("this cursor is not one this list gave", field="cursor") from None


def _cursor_id(values: list[Any] | None) -> int | None:
    if values is None:
        return None
    if len(values) != 1 or not isinstance(values[0], int):
        raise BadInput("this cursor is not one this list gave", field="cursor")
    return int(values[0])


def check_subscriber_input(
    service: Service, email: str, themes: Sequence[str] | None, cadence: str | None, language: str | None
) -> None:
    """BadInput naming the first field of a new subscriber that the form would refuse too."""
    settings = service.settings
    checks: list[tuple[str, Any]] = [
        ("email", lambda: normalise_email(email)),
        ("themes", lambda: themes is None or parse_themes(settings, themes)),
        ("cadence", lambda: cadence is None or check_cadence(cadence)),
        ("language", lambda: language is None or check_language(settings, language)),
    ]
    for name, check in checks:
        try:
            check()
        except SyndicationError as error:
            raise BadInput(str(error), field=name) from None


# --- Batches ------------------------------------------------------------------------------------------------------


def check_batch(items: Sequence[Any]) -> None:
    """TooLarge when ``items`` has more than MAX_BATCH items."""
    if len(items) > MAX_BATCH:
        raise TooLarge(f"{len(items)} items in one batch; at most {MAX_BATCH}: send them in several")


@dataclass(frozen=True)
class ItemOutcome:
    """What an import did with one item of its batch (``index`` from 0): ``action`` is ``created``, ``updated``,
    ``unchanged`` or ``refused`` for posts; ``added``, ``confirmed``, ``reactivated``, ``updated``, ``unchanged``
    or ``refused`` for subscribers. ``reason`` says why an item was refused; for a post, ``field_name`` names the
    field at fault when the reason names one."""

    index: int
    action: str
    guid: str | None = None
    post_id: int | None = None
    email: str | None = None
    subscriber_id: int | None = None
    reason: str | None = None
    field_name: str | None = None
    warnings: list[str] = field(default_factory=list)


def import_posts(service: Service, records: Sequence[Any]) -> list[ItemOutcome]:
    """Import a batch of post records as ``syndication import`` imports JSON Lines (``app.gathering.
    import_records``: the same validation, refused records reported, the others kept); one outcome per record, in
    their order. A record superseded by a later one of the same guid (newer ``updated``) is ``unchanged``, saying
    so. TooLarge over MAX_BATCH."""
    check_batch(records)
    built: dict[int, tuple[str, datetime]] = {}
    for index, fields in enumerate(records):
        try:
            post = build_post(fields, _place(index), service.vocabulary).post
        except SyndicationError:
            continue  # the import refuses it, saying why
        built[index] = (post.guid, post.updated)
    guids = {guid for guid, _ in built.values()}
    with database.transaction(service.engine) as session:
        before = post_store.post_versions(session, guids)
    report = import_records(service, records, source_label="api")
    with database.transaction(service.engine) as session:
        after = post_store.post_versions(session, guids)
    refused = {notice.where: notice.reason for notice in report.rejections}
    warned: dict[str, list[str]] = {}
    for notice in report.warnings:
        warned.setdefault(notice.where, []).append(notice.reason)
    kept: dict[str, int] = {}  # the record whose version of a guid is stored: the first with the newest updated
    for index, (guid, updated) in built.items():
        if guid not in kept or updated > built[kept[guid]][1]:
            kept[guid] = index
    outcomes = []
    for index in range(len(records)):
        place = _place(index)
        if index not in built or place in refused:
            reason = refused.get(place, "refused")
            outcomes.append(ItemOutcome(index, "refused", reason=reason, field_name=refused_field(reason)))
            continue
        guid, _ = built[index]
        warnings = [*warned.get(place, []), *warned.get(guid, [])]
        stored = after.get(guid)
        previous = before.get(guid)
        if kept[guid] != index:
            action = "unchanged"
            warnings.append(f"item {kept[guid]} has the same guid and is the version kept")
        elif previous is None:
            action = "created"
        elif stored is not None and stored[1] != previous[1]:
            action = "updated"
        else:
            action = "unchanged"
        outcomes.append(ItemOutcome(index, action, guid=guid, post_id=stored[0] if stored else None, warnings=warnings))
    return outcomes


def _place(index: int) -> str:
    return f"record {index + 1}"  # as import_records names them


def unpublish_post(service: Service, reference: str) -> tuple[int, Post]:
    """Delete the post whose guid (or id) is ``reference``, published or not, as ``posts delete`` does
    (``app.posts.delete_posts``: the next feed build takes it out); returns it as it was. NotFound."""
    with database.transaction(service.engine) as session:
        found = post_store.post_by_reference(session, reference, None)
    if found is None:
        raise NotFound(f"no post {reference!r}")
    delete_posts(service, [found[1].guid])
    return found


def import_subscriber_batch(
    service: Service,
    records: Sequence[Any],
    *,
    source: str,
    confirmed: bool,
    update: bool,
    reactivate: bool,
    reason: str | None,
    actor: str,
) -> tuple[ImportReport, list[ItemOutcome]]:
    """Import a batch of subscriber records by the rules of ``subscribers import``
    (``app.subscribers.import_subscriber_records``; the confirmations queued for the notices' drain); the report
    and one outcome per record, in their order. TooLarge over MAX_BATCH."""
    check_batch(records)
    report = import_subscriber_records(
        service, records, source=source, confirmed=confirmed, update=update, reactivate=reactivate, reason=reason,
        actor=actor,
    )  # fmt: skip
    outcomes: dict[int, ItemOutcome] = {}
    for row in report.rows:
        index = _index(row.where)
        outcomes[index] = ItemOutcome(index, row.action, email=row.email, subscriber_id=row.subscriber_id)
    for notice in report.refused:
        index = _index(notice.where)
        outcomes[index] = ItemOutcome(index, "refused", reason=notice.reason)
    return report, [outcomes[index] for index in sorted(outcomes)]


def _index(where: str) -> int:
    return int(where.removeprefix("item "))


# --- Subscribers ----------------------------------------------------------------------------------------------


def find_subscriber_by_reference(service: Service, reference: str) -> Subscriber:
    """The subscriber whose id or address is ``reference``; NotFound."""
    found: Subscriber | None = None
    if reference.isdigit() and len(reference) < 19:
        with database.transaction(service.engine) as session:
            found = subscriber_store.subscriber_by_id(session, int(reference))
    elif "@" in reference:
        try:
            found = find_subscriber(service, reference)
        except SyndicationError:
            found = None
    if found is None:
        raise NotFound(f"no subscriber {reference!r}")
    return found


def check_preferences(service: Service, changes: dict[str, Any]) -> None:
    """BadInput naming the first of a subscriber's preferences (``name``, ``themes``, ``cadence``, ``language``,
    ``reads``, ``language_choice``; None: not given) that the preferences page would refuse too."""
    settings = service.settings
    checks: dict[str, Callable[[Any], object]] = {
        "name": clean_name,
        "themes": lambda value: parse_themes(settings, value),
        "cadence": check_cadence,
        "language": lambda value: check_language(settings, value),
        "reads": check_reads,
        "language_choice": check_language_choice,
    }
    for name, check in checks.items():
        if changes.get(name) is None:
            continue
        try:
            check(changes[name])
        except SyndicationError as error:
            raise BadInput(str(error), field=name) from None


def subscriber_records(service: Service) -> list[dict[str, Any]]:
    """Every column held on every subscriber, in id order: what ``subscribers export`` writes (as records, with
    lists and times as they are, not CSV cells); ``POST /subscribers/import`` reads them as they are."""
    with database.transaction(service.engine) as session:
        return list(subscriber_store.subscriber_records(session))


# --- Bounces ----------------------------------------------------------------------------------------------------


def bounce_page(service: Service, *, cursor: str | None, limit: int) -> Page[tuple[BounceRecord, str | None]]:
    """Bounces counted against subscribers, newest first, each with the subscriber's address (None once erased),
    ``limit`` at a time from ``cursor``."""
    limit = _limit(limit)
    before = _time_cursor("bounces", cursor)
    found = recent_bounces(service, limit + 1, before)
    items = found[:limit]
    last = items[-1][0] if items else None
    return Page(items, _encode("bounces", last.at.isoformat(), last.id) if last and len(found) > limit else None)


# --- Editions ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Readers:
    """Whom an edition is previewed or tested as: readers of ``themes`` (None: every theme) in ``language``."""

    themes: tuple[str, ...] | None
    language: str


def readers(service: Service, *, subscriber: str | None, themes: Sequence[str] | None, language: str | None) -> Readers:
    """The readers an edition is shown as, as the editor's preview chooses them: a subscriber's themes and
    language (by id or address), else ``themes`` (none: every theme) in ``language`` (none: the site's default);
    BadInput naming what is not understood."""
    settings = service.settings
    if subscriber:
        try:
            found = find_subscriber_by_reference(service, subscriber)
        except NotFound as error:
            raise BadInput(str(error), field="subscriber") from None
        return Readers(found.themes, found.language)
    try:
        chosen = parse_themes(settings, themes or [])
    except SyndicationError as error:
        raise BadInput(str(error), field="themes") from None
    try:
        tongue = default_language(settings) if not language else check_language(settings, language)
    except SyndicationError as error:
        raise BadInput(str(error), field="language") from None
    return Readers(chosen, tongue)


def preview_edition(service: Service, edition_id: int, who: Readers) -> RenderedEmail | None:
    """The edition as ``who`` get it, with preview links (what the editor's preview shows); None when it holds
    nothing for them. NoSuchEdition."""
    edition = find_edition(service, edition_id)
    if edition is None:
        raise NoSuchEdition(edition_id)
    email = edition_email(service, edition, who.themes, who.language)
    return None if email is None else email.personalised(preview_links(service.settings))


def send_edition_test(
    service: Service, edition_id: int, to: str, who: Readers, *, actor: str
) -> tuple[str, RenderedEmail]:
    """Send the edition as ``who`` get it to ``to`` (``app.editions.send_test``: audited as ``actor``'s); the
    address and what was sent. BadInput for an address that is not one, NothingToSend, NoSuchEdition,
    DeliveryError."""
    try:
        address = normalise_email(to)
    except SyndicationError as error:
        raise BadInput(str(error), field="to") from None
    sent = send_test(service, edition_id, address, who.themes, who.language, actor=actor)
    if sent is None:
        raise NothingToSend("nothing in this edition for these readers: there is nothing to send")
    return address, sent
