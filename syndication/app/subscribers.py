"""Subscriber use cases: add and import with consent and double opt-in, confirm, unsubscribe, bounce, remove, export.

Every address is checked and normalised here before the store sees it. Rules the use cases keep:

- Only ``active`` subscribers get digests. Someone added without confirmed consent is ``pending`` and is sent a
  confirmation email with a signed link that expires after 7 days.
- An address that is unsubscribed, bounced or complained is never made active again by an operator's add or
  import, confirmed or not, unless they say so explicitly (``reactivate`` with a ``reason``), which is recorded
  with who did it in the consent source. The person themselves comes back through the subscribe form and
  confirms by email.
- ``remove`` erases the row and keeps the SHA-256 of the address as a suppression, so neither an import nor an
  add brings the person back unless they asked again (``confirmed`` and ``resubscribe``).

Transactions are opened here (one per use case, or one per import); emails are sent after they commit, so a
slow or failing SMTP server never holds a transaction open or undoes a stored subscriber.
"""

from __future__ import annotations

import contextlib
import csv
import getpass
import itertools
import unicodedata
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TextIO

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from syndication.app.service import Service
from syndication.app.webhooks import announce_subscriber, announce_subscribers
from syndication.config import Settings, signing_keys
from syndication.core.audit import SUBSCRIBER_ERASED, SUBSCRIBER_REACTIVATED, cli_actor
from syndication.core.languages import (
    LANGUAGE_CHOICES,
    Reading,
    canonical_tag,
    is_language_tag,
    reading,
    with_language,
)
from syndication.core.models import CADENCES, SUBSCRIBER_STATUSES, Consent, Notice, Subscriber
from syndication.core.progress import Progress, running
from syndication.core.tokens import make_token, read_token
from syndication.delivery.transport import Transport
from syndication.errors import ConfigError, DeliveryError, SyndicationError, TokenError
from syndication.sources.cleaning import BIDI_CONTROLS
from syndication.store import audit as audit_store
from syndication.store import database, form_emails
from syndication.store import notices as notice_store
from syndication.store import posts as post_store
from syndication.store import subscribers as store

MAX_NAME_LENGTH = 200
DEFAULT_CADENCE = "weekly"
# What an import reads: the preferences, then what an export adds that a round trip keeps (the languages read, the
# status, the consent). The export's other columns (id, dates of the store's own) are taken and ignored, so an
# export imports as it is.
PREFERENCE_COLUMNS = ("email", "name", "themes", "cadence", "language", "reads", "language_choice")
IMPORT_COLUMNS = (*PREFERENCE_COLUMNS, "status", "consent_at", "consent_method", "consent_source")
MAX_CONSENT_METHOD_LENGTH = 32

# Statuses that end a subscription: only the person's renewed, confirmed consent makes them active again.
ENDED_STATUSES = ("unsubscribed", "bounced", "complained")
# Who may come back through the subscribe form, confirming by email: not those who reported the digest as spam.
REJOINABLE_STATUSES = ("unsubscribed", "bounced")

# Bidirectional overrides and isolates can make a name display as something else in lists and headers.
# A spreadsheet runs a cell that starts with one of these as a formula (CSV injection, CWE-1236): an export
# writes such a cell after an apostrophe, which spreadsheets read as "text" and hide, and an import takes it off.
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
_TEXT_MARK = "'"


class SubscriberError(SyndicationError):
    """A subscriber or a change to one was refused; the message names the address and the reason."""


# --- Checking what people give us -----------------------------------------------------------------------------


def normalise_email(address: str) -> str:
    """``address`` checked (syntax only, no DNS) and normalised, or SubscriberError naming it.

    The result is ASCII (an internationalised domain in its ``xn--`` form) and lower case throughout, so that one
    mailbox is one subscriber and one suppression hash whatever case or script it was typed in. Lower-casing the
    part before the @ is a choice: RFC 5321 lets a server tell ``Ana@`` from ``ana@``, but no mailbox provider
    does, and two rows for one person would mean two digests. Addresses with non-ASCII before the @ are refused:
    delivering to them needs SMTPUTF8, which the messages we build do not use.
    """
    from email_validator import EmailNotValidError, validate_email

    candidate = address.strip()
    try:
        checked = validate_email(candidate, check_deliverability=False, allow_smtputf8=False)
    except EmailNotValidError as error:
        raise SubscriberError(f"{address!r} is not a valid email address: {error}") from None
    ascii_email = checked.ascii_email or checked.normalized
    local, _, domain = ascii_email.rpartition("@")
    return f"{local.lower()}@{domain.lower()}"


def clean_name(name: str) -> str:
    """A display name on one line: line breaks, tabs and other control characters become spaces or go.

    Refused (SubscriberError) when longer than MAX_NAME_LENGTH characters once cleaned.
    """
    normal = BIDI_CONTROLS.sub("", unicodedata.normalize("NFC", name))
    # Cc: C0/C1 controls (CR, LF, TAB, NUL...); Zl/Zp: Unicode line and paragraph separators.
    kept = [" " if unicodedata.category(char) in ("Cc", "Zl", "Zp") else char for char in normal]
    cleaned = " ".join("".join(kept).split())
    if len(cleaned) > MAX_NAME_LENGTH:
        raise SubscriberError(
            f"name is {len(cleaned)} characters long (at most {MAX_NAME_LENGTH}): {cleaned[:40]!r}..."
        )
    return cleaned


def parse_themes(settings: Settings, value: str | Iterable[str]) -> tuple[str, ...] | None:
    """Theme slugs from ``"a,b"``, ``"a;b"`` or a list, checked against the configured themes, in digest order.

    Nothing given (empty) means every theme and gives None. A theme's aliases stand for it, as they do in posts;
    an unknown term is refused, naming it.
    """
    parts = value.replace(";", ",").split(",") if isinstance(value, str) else list(value)
    terms = {part.strip().casefold() for part in parts if part.strip()}
    if not terms:
        return None
    known = [theme.slug for theme in settings.themes]
    slug_of = {term.casefold(): t.slug for t in settings.themes for term in (t.slug, *t.aliases)}
    unknown = sorted(term for term in terms if term not in slug_of)
    if unknown:
        raise SubscriberError(f"unknown theme {unknown[0]!r} (known: {', '.join(known) or 'none configured'})")
    chosen = {slug_of[term] for term in terms}
    return tuple(slug for slug in known if slug in chosen)


def check_cadence(value: str) -> str:
    """``value`` as one of CADENCES, or SubscriberError."""
    cadence = value.strip().lower()
    if cadence not in CADENCES:
        raise SubscriberError(f"unknown cadence {value!r} (one of {', '.join(CADENCES)})")
    return cadence


def check_language(settings: Settings, value: str) -> str:
    """``value`` as one of ``[digest] languages`` (as configured, whatever its case), or SubscriberError."""
    for language in settings.digest.languages:
        if language.lower() == value.strip().lower().replace("_", "-"):
            return language
    raise SubscriberError(f"unknown language {value!r} (digests are written in {', '.join(settings.digest.languages)})")


def default_language(settings: Settings) -> str:
    """The site's language when digests are written in it, else the first digest language."""
    languages = settings.digest.languages
    return settings.site.language if settings.site.language in languages else languages[0]


# At most this many languages a subscriber reads (a form or a file cannot make the list grow without end).
MAX_READS = 20


def check_reads(values: Iterable[str]) -> tuple[str, ...]:
    """The languages of ``values`` (tags, or ``"a,b"`` strings) as canonical tags, repeats left out, or
    SubscriberError naming one that is not a language tag."""
    tags: list[str] = []
    for value in values:
        for part in value.replace(";", ",").split(","):
            if not part.strip():
                continue
            if not is_language_tag(part):
                raise SubscriberError(f"{part.strip()!r} is not a language tag (such as es, pt-BR)")
            tags.append(canonical_tag(part))
    chosen = tuple(dict.fromkeys(tags))
    if len(chosen) > MAX_READS:
        raise SubscriberError(f"{len(chosen)} languages read (at most {MAX_READS})")
    return chosen


def check_language_choice(value: str) -> str:
    """``value`` as one of LANGUAGE_CHOICES or ``default`` (the site's), or SubscriberError."""
    choice = value.strip().lower()
    if choice not in (*LANGUAGE_CHOICES, "default"):
        raise SubscriberError(f"unknown language choice {value!r} (one of {', '.join(LANGUAGE_CHOICES)}, default)")
    return choice


def reading_languages(service: Service) -> list[str]:
    """The languages a subscriber may say they read: those digests are written in, then those of published
    posts (canonical tags, each once)."""
    with database.transaction(service.engine) as session:
        published = post_store.languages_with_posts(session, service.clock())
    return list(dict.fromkeys(canonical_tag(tag) for tag in (*service.settings.digest.languages, *published)))


def reading_of(settings: Settings, subscriber: Subscriber) -> Reading | None:
    """How ``subscriber``'s digests choose posts by language: the language of their emails and those they read,
    with their choice, else the site's (``[digest] language_choice``); None when they get every post."""
    choice = subscriber.language_choice or settings.digest.language_choice
    return reading((subscriber.language, *subscriber.reads), choice)


def check_status(value: str) -> str:
    """``value`` as one of SUBSCRIBER_STATUSES, or SubscriberError."""
    if value not in SUBSCRIBER_STATUSES:
        raise SubscriberError(f"unknown status {value!r} (one of {', '.join(SUBSCRIBER_STATUSES)})")
    return value


@dataclass(frozen=True, slots=True)
class _Request:
    """What was asked for one address; None fields were not given (defaults for a new subscriber, kept on update).

    ``themes`` is None when not given, ``()`` for every theme.
    """

    email: str
    name: str | None
    themes: tuple[str, ...] | None
    cadence: str | None
    language: str | None
    # An import's other columns (None: not given): the languages read, the choice for the others, the status the
    # row names (the most it may be: a row that left is never made active) and the consent it records.
    reads: tuple[str, ...] | None = None
    language_choice: str | None = None
    status: str | None = None
    consent: Consent | None = None


def _request(
    settings: Settings,
    email: str,
    name: str | None,
    themes: str | Sequence[str] | None,
    cadence: str | None,
    language: str | None,
) -> _Request:
    normal = normalise_email(email)
    try:
        chosen = None if themes is None else (parse_themes(settings, themes) or ())
        return _Request(
            email=normal,
            name=None if name is None else clean_name(name),
            themes=chosen,
            cadence=None if cadence is None else check_cadence(cadence),
            language=None if language is None else check_language(settings, language),
        )
    except SubscriberError as error:
        raise SubscriberError(f"{normal}: {error}") from None


# --- Adding and importing -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AddOutcome:
    """What adding one address did.

    ``action``: ``added``; ``resubscribed`` (a suppressed address, on renewed consent); ``confirmed`` (pending made
    active); ``reactivated`` (unsubscribed, bounced or complained made active); ``updated`` / ``unchanged`` (an
    existing subscriber with ``update``); ``exists`` (an existing subscriber, nothing changed).
    """

    subscriber: Subscriber
    action: str
    confirmation_sent: bool = False
    confirmation_error: str | None = None
    confirmation_queued: bool = False


def add_subscriber(
    service: Service,
    email: str,
    *,
    name: str | None = None,
    themes: str | Sequence[str] | None = None,
    cadence: str | None = None,
    language: str | None = None,
    confirmed: bool = False,
    update: bool = False,
    resubscribe: bool = False,
    reactivate: bool = False,
    reason: str | None = None,
    consent_method: str = "cli",
    consent_source: str = "command line",
    actor: str | None = None,
    queue_confirmation: bool = False,
) -> AddOutcome:
    """Add one subscriber, or act on the existing one, then send the confirmation email if they are pending (with
    ``queue_confirmation``: queue it with the subscriber, in their transaction, for ``app.notices`` to send, as the
    subscribe form does).

    ``themes`` None is "not given", empty is "every theme". ``confirmed`` records that the person's consent is
    confirmed (they become active without the email). An existing address changes only with ``update`` (the
    preferences given) or ``confirmed`` (pending or ended becomes active); a pending one is sent its confirmation
    email again. A suppressed (removed) address is refused unless ``confirmed`` and ``resubscribe``. An
    unsubscribed, bounced or complained one is refused unless ``confirmed``, ``reactivate`` and a ``reason``:
    the consent then records who (the operating system's user) and why, and the audit log records ``actor``'s
    reactivation (None: ``cli:<the operating system's user>``).
    """
    settings = service.settings
    if resubscribe and not confirmed:
        raise SubscriberError("re-subscribing a removed address needs their confirmed consent (--confirmed)")
    request = _request(settings, email, name, themes, cadence, language)
    keys = None if confirmed else signing_keys(settings)  # before storing anything: a pending add must send
    now = service.clock()
    source = consent_source + (", consent confirmed by the operator" if confirmed else ", double opt-in")
    consent = Consent(at=now, method=consent_method, source=source)
    reactivation = _reactivation(now, consent_method, consent_source, confirmed, reactivate, reason)
    queued = False
    for attempt in (1, 2):
        try:
            turn = notice_store.write_turn(service.engine) if queue_confirmation else contextlib.nullcontext()
            with turn, database.transaction(service.engine) as session:
                subscriber, action = _apply(
                    session,
                    settings,
                    request,
                    now,
                    consent,
                    confirmed=confirmed,
                    update=update,
                    resubscribe=resubscribe,
                    reactivation=reactivation,
                )
                if action == "reactivated":
                    _record_reactivation(session, now, actor, subscriber, reason)
                if queue_confirmation and subscriber.status == "pending" and keys is not None:
                    notice_store.queue(
                        session, "confirm", subscriber.email, {"status": "pending"}, now, subscriber_id=subscriber.id
                    )
                    queued = True
            break
        except IntegrityError:
            # The same new address added at the same moment elsewhere (the form posted twice): the store refused the
            # second insert, and trying again finds the first one. A second refusal is a real error.
            if attempt == 2:
                raise
    if queued:
        return AddOutcome(subscriber, action, confirmation_queued=True)
    if subscriber.status != "pending" or keys is None:
        return AddOutcome(subscriber, action)
    try:
        send_confirmation(service, subscriber)
    except (DeliveryError, ConfigError) as error:  # stored all the same: adding them again sends it again
        return AddOutcome(subscriber, action, confirmation_error=str(error))
    return AddOutcome(subscriber, action, confirmation_sent=True)


def _apply(
    session: Session,
    settings: Settings,
    request: _Request,
    now: datetime,
    consent: Consent,
    *,
    confirmed: bool,
    update: bool,
    resubscribe: bool,
    reactivation: Consent | None = None,
) -> tuple[Subscriber, str]:
    """Add or change one subscriber inside the caller's transaction; SubscriberError when refused.

    ``reactivation``: the consent recorded when an ended subscription is made active again; None refuses to.
    """
    existing = store.subscriber_by_email(session, request.email)
    if existing is not None:
        return _change(
            session, request, existing, now, consent, confirmed=confirmed, update=update, reactivation=reactivation
        )
    suppressed = store.suppression_reason(session, request.email)
    new, action = _new_subscriber(
        settings, request, consent, suppressed, confirmed=confirmed, resubscribe=resubscribe,
        hint=" (add it with --confirmed --resubscribe if they asked to subscribe again)",
    )  # fmt: skip
    if action == "resubscribed":
        store.lift_suppression(session, request.email)
    (subscriber,) = store.insert_subscribers(session, [new], now)
    if subscriber.status == "active":
        announce_subscribers(session, now, [subscriber], "active")
    return subscriber, action


def _new_subscriber(
    settings: Settings,
    request: _Request,
    consent: Consent,
    suppressed: tuple[str, datetime] | None,
    *,
    confirmed: bool,
    resubscribe: bool,
    hint: str,
) -> tuple[store.NewSubscriber, str]:
    """What adding a new address stores, and the action (``added``, or ``resubscribed`` when its suppression is to
    be lifted); SubscriberError when refused (``suppressed``: why and since when it is; ``hint`` says how it could
    be added)."""
    action = "added"
    if suppressed is not None:
        if not (confirmed and resubscribe):
            reason, since = suppressed
            raise SubscriberError(
                f"{request.email} was {reason} on {since.date().isoformat()} and is suppressed: not added again" + hint
            )
        action = "resubscribed"
    status = "active" if confirmed else "pending"
    if request.status in (*ENDED_STATUSES, "pending"):  # the row's status is the most it may be
        status = request.status
    # The row's own consent is kept when the operator vouches for it, and for a subscription that ended (its
    # record of how it began); one who must confirm afresh by email gets this request's consent.
    kept = request.consent is not None and (confirmed or status in ENDED_STATUSES)
    new = store.NewSubscriber(
        email=request.email,
        name=request.name or "",
        language=request.language or default_language(settings),
        themes=request.themes or None,
        cadence=request.cadence or DEFAULT_CADENCE,
        status=status,
        consent=request.consent if kept and request.consent is not None else consent,
        reads=request.reads or (),
        language_choice=request.language_choice,
    )
    return new, action


def _change(
    session: Session,
    request: _Request,
    existing: Subscriber,
    now: datetime,
    consent: Consent,
    *,
    confirmed: bool,
    update: bool,
    reactivation: Consent | None,
) -> tuple[Subscriber, str]:
    """Act on an existing subscriber as ``request`` asks, inside the caller's transaction; SubscriberError when
    refused. The action: ``exists``, ``updated``, ``unchanged``, ``confirmed`` or ``reactivated``."""
    # Refused: making an ended subscription active without a reactivation (a row saying it ended asks for none).
    wants_active = request.status in (None, "active")
    if existing.status in ENDED_STATUSES and wants_active and (not confirmed or reactivation is None):
        raise SubscriberError(
            f"{request.email} is {existing.status} (since {_since(session, existing)}): not made active again;"
            " they can subscribe again through the subscribe form, or, with their renewed consent, an operator"
            " adds --confirmed --reactivate --reason TEXT (who and why are recorded)"
        )
    action = "exists"
    subscriber = existing
    if update:
        themes = None if request.themes is None else (request.themes or None)  # () is every theme: stored None
        choice = request.language_choice
        changed = (
            (request.name is not None and request.name != existing.name)
            or (request.language is not None and request.language != existing.language)
            or (request.cadence is not None and request.cadence != existing.cadence)
            or (request.themes is not None and themes != existing.themes)
            or (request.reads is not None and request.reads != existing.reads)
            or (choice is not None and (choice if choice != "default" else None) != existing.language_choice)
        )
        if changed:
            updated = store.update_preferences(
                session,
                existing.id,
                name=request.name,
                language=request.language,
                cadence=request.cadence,
                themes=themes,
                everything=request.themes == (),
                reads=request.reads,
                language_choice=choice,
            )
            assert updated is not None
            subscriber = updated
        action = "updated" if changed else "unchanged"
    # A row that names another status than active (it left, or never confirmed) never makes anyone active.
    if confirmed and existing.status != "active" and wants_active:
        action = "confirmed" if existing.status == "pending" else "reactivated"
        renewed = reactivation if existing.status in ENDED_STATUSES and reactivation is not None else consent
        store.record_consent(session, existing.id, renewed)
        activated = store.set_status(session, existing.id, "active", now)
        assert activated is not None
        subscriber = activated
        announce_subscribers(session, now, [subscriber], "active")
    return subscriber, action


def _record_reactivation(
    session: Session, now: datetime, actor: str | None, subscriber: Subscriber, reason: str | None
) -> None:
    # In the transaction that made them active again: the consent says why, the audit log who and when.
    audit_store.record(
        session, at=now, actor=actor or cli_actor(operator_name()), action=SUBSCRIBER_REACTIVATED,
        subject_kind="subscriber", subject_id=subscriber.id, details={"reason": " ".join((reason or "").split())},
    )  # fmt: skip


def _reactivation(
    now: datetime, method: str, source: str, confirmed: bool, reactivate: bool, reason: str | None
) -> Consent | None:
    """The consent recorded when an operator makes an ended subscription active again, or None when not asked."""
    if not reactivate:
        return None
    if not confirmed:
        raise SubscriberError("--reactivate needs --confirmed: only the person's renewed consent brings them back")
    why = " ".join((reason or "").split())
    if not why:
        raise SubscriberError("--reactivate needs --reason TEXT: why their renewed consent is known")
    return Consent(at=now, method=method, source=f"{source}, reactivated by {operator_name()}: {why}")


def operator_name() -> str:
    """Who runs this process (the operating system's user), recorded with what only an operator may do."""
    try:
        return getpass.getuser()
    except (OSError, KeyError):  # no USER variable and no password entry (a container's uid)
        return "an unknown user"


def _since(session: Session, subscriber: Subscriber) -> str:
    moment = store.status_since(session, subscriber.id) or subscriber.created_at
    return moment.date().isoformat()


@dataclass(frozen=True)
class ImportedRow:
    """What an import did with one good row: where the row was (``line 3``, ``item 0``), the subscriber's id and
    address, and the action: ``added``, ``confirmed`` or ``reactivated`` (made active), ``updated`` or
    ``unchanged``."""

    where: str
    subscriber_id: int
    email: str
    action: str


@dataclass
class ImportReport:
    """What one import did; ``refused`` and ``send_failures`` name the line (or item) of each problem, ``rows``
    what was done with each good row."""

    source: str
    read: int = 0
    added: int = 0
    activated: int = 0
    updated: int = 0
    unchanged: int = 0
    confirmations_sent: int = 0
    confirmations_queued: int = 0
    refused: list[Notice] = field(default_factory=list)
    send_failures: list[Notice] = field(default_factory=list)
    rows: list[ImportedRow] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when no row was refused and every confirmation email went out."""
        return not self.refused and not self.send_failures


def import_subscribers(
    service: Service,
    path: Path,
    *,
    confirmed: bool = False,
    update: bool = False,
    reactivate: bool = False,
    reason: str | None = None,
    progress: Progress | None = None,
    actor: str | None = None,
) -> ImportReport:
    """Add the subscribers of a CSV file (header naming columns among IMPORT_COLUMNS, in any order; only email is
    required); the columns ``export_subscribers`` writes besides them are read and ignored, so an export imports
    as it is.

    A ``status`` cell is the most a row may become: ``unsubscribed``, ``bounced`` or ``complained`` rows are added
    with that status (never active, and never sent anything) and never make an existing subscriber active;
    ``pending`` rows are added pending and sent a confirmation email, even with ``confirmed``. The ``consent_*``
    cells are the consent recorded for a new subscriber when ``confirmed`` (as it was exported) and for one whose
    subscription ended; a new subscriber asked to confirm by email gets this import's.

    Each row is checked on its own: a bad one is reported with its line number and the good ones are kept.
    Rows for existing subscribers change nothing unless ``update`` (the row's columns replace theirs; empty
    cadence or language cells keep theirs) or ``confirmed`` (pending becomes active). Unsubscribed, bounced and
    complained subscribers are refused unless ``confirmed``, ``reactivate`` and a ``reason`` (recorded with who
    did it in their consent, and ``actor``'s reactivation in the audit log; None: ``cli:<the operating system's
    user>``). Suppressed addresses are always refused. New subscribers are pending and sent a confirmation email,
    or active when ``confirmed``. The rows are written in one transaction; emails go out after it commits.
    ``progress`` is told of each good row written, then of each confirmation email.
    """
    report = ImportReport(source=str(path))
    _check_import(service, confirmed, reactivate, reason)  # refuses a wrong request before reading
    with _CsvFile(path) as csv_file:
        rows = ((f"line {line}", request) for line, request in _csv_rows(service.settings, csv_file, report))
        _import_rows(
            service, report, rows, total=csv_file.rows_estimate, keep_rows=False, label=f"import of {path.name}",
            title=f"import {path.name}", method="import", confirmed=confirmed, update=update, reactivate=reactivate,
            reason=reason, actor=actor, progress=progress, queue=False,
        )  # fmt: skip
    return report


def import_subscriber_records(
    service: Service,
    records: Sequence[object],
    *,
    source: str,
    confirmed: bool = False,
    update: bool = False,
    reactivate: bool = False,
    reason: str | None = None,
    actor: str | None = None,
) -> ImportReport:
    """Add the subscribers of ``records`` (each a mapping of the CSV's columns to text; ``themes`` and ``reads``
    may be lists; None or a missing key: not given) by the rules of ``import_subscribers``, each record checked on
    its own and named ``item <index>`` (from 0); the confirmation emails are queued with the rows, in their
    transaction, for ``app.notices`` to send. ``source`` says where they came from in each new consent."""
    report = ImportReport(source=source)
    _check_import(service, confirmed, reactivate, reason)
    rows = list(_records(service.settings, records, report))
    _import_rows(
        service, report, rows, total=len(rows), keep_rows=True, label=source, title=source, method="api",
        confirmed=confirmed, update=update, reactivate=reactivate, reason=reason, actor=actor, progress=None,
        queue=True,
    )  # fmt: skip
    return report


def _check_import(service: Service, confirmed: bool, reactivate: bool, reason: str | None) -> None:
    _reactivation(service.clock(), "import", "", confirmed, reactivate, reason)
    if not confirmed:
        signing_keys(service.settings)  # the confirmation emails need it: refuse before storing anything


def _import_rows(
    service: Service,
    report: ImportReport,
    rows: Iterable[tuple[str, _Request]],
    *,
    total: int | None,
    keep_rows: bool,
    label: str,
    title: str,
    method: str,
    confirmed: bool,
    update: bool,
    reactivate: bool,
    reason: str | None,
    actor: str | None,
    progress: Progress | None,
    queue: bool,
) -> None:
    """Apply the good rows in one transaction, then send their confirmations (``queue``: queue them in it).

    The rows are read as they come, a chunk at a time: each chunk's addresses and suppressions are looked up by one
    query each and its new subscribers inserted by one statement, so a million rows cost a few thousand round
    trips and hold one chunk in memory (``report.rows`` only when ``keep_rows``)."""
    settings = service.settings
    now = service.clock()
    hint = " (only 'subscribers add --confirmed --resubscribe' can add it again)"
    to_confirm: list[tuple[str, Subscriber]] = []
    turn = notice_store.write_turn(service.engine) if queue else contextlib.nullcontext()
    with (
        running(progress, title, total) as shows,
        turn,
        database.transaction(service.engine) as session,
    ):

        def done(place: str, subscriber: Subscriber, action: str) -> None:
            if action == "added":
                report.added += 1
            elif action in ("confirmed", "reactivated"):
                report.activated += 1
                if action == "reactivated":
                    _record_reactivation(session, now, actor, subscriber, reason)
            elif action == "updated":
                report.updated += 1
            else:
                report.unchanged += 1
            if keep_rows:
                report.rows.append(ImportedRow(place, subscriber.id, subscriber.email, _DONE.get(action, action)))
            # Only new addresses are written to: running the same import again must not mail everyone pending.
            # A pending row of a confirmed import is asked too (sending then needs the signing key, as without).
            if subscriber.status == "pending" and action == "added":
                if queue:
                    notice_store.queue(
                        session, "confirm", subscriber.email, {"status": "pending"}, now, subscriber_id=subscriber.id
                    )
                    report.confirmations_queued += 1
                else:
                    to_confirm.append((place, subscriber))

        pending = iter(rows)
        while chunk := list(itertools.islice(pending, _IMPORT_CHUNK)):
            emails = [request.email for _, request in chunk]
            existing = store.subscribers_by_emails(session, emails)
            suppressed = store.suppression_reasons(session, [email for email in emails if email not in existing])
            new: list[tuple[str, store.NewSubscriber]] = []
            for place, request in chunk:
                shows.advance()
                where = f"{label}, {place}"
                source = where + (", consent confirmed by the operator" if confirmed else ", double opt-in")
                consent = Consent(at=now, method=method, source=source)
                try:
                    found = existing.get(request.email)
                    if found is None:
                        adding = _new_subscriber(
                            settings, request, consent, suppressed.get(request.email), confirmed=confirmed,
                            resubscribe=False, hint=hint,
                        )  # fmt: skip
                        new.append((place, adding[0]))
                        continue
                    subscriber, action = _change(
                        session, request, found, now, consent, confirmed=confirmed, update=update,
                        reactivation=_reactivation(now, method, where, confirmed, reactivate, reason),
                    )  # fmt: skip
                except SubscriberError as error:
                    report.refused.append(Notice(report.source, place, str(error)))
                    continue
                done(place, subscriber, action)
            added = store.insert_subscribers(session, [subscriber for _, subscriber in new], now)
            announce_subscribers(session, now, [one for one in added if one.status == "active"], "active")
            for (place, _), subscriber in zip(new, added, strict=True):
                done(place, subscriber, "added")
    _send_confirmations(service, report, to_confirm, progress)
    report.refused.sort(key=lambda notice: int(notice.where.rpartition(" ")[2]))


# Rows of an import looked up and inserted together: a round trip per thousand rows instead of four per row.
_IMPORT_CHUNK = 1000
# How an import names what it did with a row whose subscriber was there already and is left as it was.
_DONE = {"exists": "unchanged"}


def _send_confirmations(
    service: Service, report: ImportReport, to_confirm: Sequence[tuple[str, Subscriber]], progress: Progress | None
) -> None:
    if not to_confirm:
        return
    stopped: ConfigError | None = None
    connection = service.mailer.connect()  # one connection for every confirmation (opened on the first send)
    try:
        with running(progress, "confirmation emails", len(to_confirm)) as shows:
            for place, subscriber in to_confirm:
                shows.advance()
                try:
                    if stopped is not None:  # a relay that refuses our settings refuses every message: do not retry
                        raise stopped
                    send_confirmation(service, subscriber, connection=connection)
                except ConfigError as error:
                    stopped = error
                    report.send_failures.append(Notice(report.source, place, f"{subscriber.email}: {error}"))
                except DeliveryError as error:
                    report.send_failures.append(Notice(report.source, place, f"{subscriber.email}: {error}"))
                else:
                    report.confirmations_sent += 1
    finally:
        connection.close()


def _records(settings: Settings, records: Sequence[object], report: ImportReport) -> Iterable[tuple[str, _Request]]:
    """The good records with their places (``item <index>``); bad ones go to ``report.refused``."""
    known = (*IMPORT_COLUMNS, *sorted(_EXPORT_ONLY))
    seen: dict[str, str] = {}
    for index, record in enumerate(records):
        place = f"item {index}"
        report.read += 1
        try:
            if not isinstance(record, Mapping):
                raise SubscriberError("not an object with the fields of a subscriber")
            values: dict[str, str] = {}
            for key, value in record.items():
                column = str(key).strip().lower()
                if column not in known:
                    raise SubscriberError(f"unknown field {key!r} (fields: {', '.join(IMPORT_COLUMNS)})")
                if value is None or column in _EXPORT_ONLY:  # not given, or the store's own (an export's): ignored
                    continue
                if isinstance(value, list | tuple) and all(isinstance(item, str) for item in value):
                    value = ";".join(value)
                if not isinstance(value, str):
                    raise SubscriberError(f"{column}: not text")
                values[column] = value
            if "email" not in values:
                raise SubscriberError("no email")
            request = _row_request(settings, values, list(values))
        except SubscriberError as error:
            report.refused.append(Notice(report.source, place, str(error)))
            continue
        if request.email in seen:
            reason = f"{request.email}: the same address as {seen[request.email]}"
            report.refused.append(Notice(report.source, place, reason))
            continue
        seen[request.email] = place
        yield place, request


def _row_request(settings: Settings, values: dict[str, str], header: Sequence[str]) -> _Request:
    """What one row asks for: ``values``, its cells by column, of the columns ``header`` names (a column not named
    is not given; one named without a cell is empty); SubscriberError naming the cell that is refused."""
    request = _request(
        settings,
        values.get("email", ""),
        name=values.get("name"),
        themes=values.get("themes", "") if "themes" in header else None,
        cadence=values.get("cadence", "").strip() or None,
        language=values.get("language", "").strip() or None,
    )
    return _with_exported(request, values, list(header))


class _CsvFile:
    """A subscribers CSV file opened for reading as it goes (a million rows are never all in memory): its header
    row checked on opening (SubscriberError naming the file and what is wrong), then its records."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            with path.open("rb") as counting:  # the progress's total: lines, less the header (a guess with quotes)
                self.rows_estimate = max(
                    sum(chunk.count(b"\n") for chunk in iter(lambda: counting.read(1 << 20), b"")) - 1, 0
                )
            # A byte order mark is what spreadsheets write; newline="" cuts at CR, LF or CRLF, as the csv module
            # does, and keeps the line ends, so that quoted fields keep their line breaks.
            self._file = path.open(encoding="utf-8-sig", newline="")
        except FileNotFoundError:
            raise SubscriberError(f"{path}: no such file") from None
        except OSError as error:
            raise SubscriberError(f"{path}: cannot be read: {error.strerror}") from None
        self.records = _csv_records(self._lines())
        try:
            self.header = self._header()
        except BaseException:
            self._file.close()
            raise

    def __enter__(self) -> _CsvFile:
        return self

    def __exit__(self, *_: object) -> None:
        self._file.close()

    def _lines(self) -> Iterator[str]:
        try:
            yield from self._file
        except UnicodeDecodeError:
            # Where, in the whole file (the decoder's own position counts from its last chunk): read again to say.
            try:
                self.path.read_bytes().decode("utf-8-sig")
            except UnicodeDecodeError as error:
                raise SubscriberError(f"{self.path}: not UTF-8 text ({error.reason} at byte {error.start})") from None
            raise

    def _header(self) -> list[str]:
        path = self.path
        try:
            _, first = next(self.records)
        except StopIteration:
            raise SubscriberError(f"{path}: empty file (expected a header row: {','.join(IMPORT_COLUMNS)})") from None
        if isinstance(first, str):
            raise SubscriberError(f"{path}: line 1: {first}")
        header = [column.strip().lower() for column in first]
        unknown = [column for column in header if column not in IMPORT_COLUMNS and column not in _EXPORT_ONLY]
        if "email" not in header or unknown or len(set(header)) != len(header):
            problem = f"unknown column {unknown[0]!r}" if unknown else "no 'email' column"
            if not unknown and "email" in header:
                problem = "a column is named twice"
            raise SubscriberError(
                f"{path}: line 1: {problem}; the header row names columns among {','.join(IMPORT_COLUMNS)}"
            )
        return header


def _csv_rows(settings: Settings, csv_file: _CsvFile, report: ImportReport) -> Iterator[tuple[int, _Request]]:
    """The good rows of the file with their line numbers, as they are read; bad rows go to ``report.refused``."""
    header = csv_file.header
    seen: dict[str, int] = {}
    for start, cells in csv_file.records:
        if isinstance(cells, str):
            report.read += 1
            report.refused.append(Notice(report.source, f"line {start}", cells))
            continue
        if not any(cell.strip() for cell in cells):
            continue
        report.read += 1
        if len(cells) > len(header):
            report.refused.append(
                Notice(report.source, f"line {start}", f"{len(cells)} fields, the header has {len(header)}")
            )
            continue
        values = {column: spreadsheet_value(cell) for column, cell in zip(header, cells, strict=False)}
        try:
            request = _row_request(settings, values, header)
        except SubscriberError as error:
            report.refused.append(Notice(report.source, f"line {start}", str(error)))
            continue
        if request.email in seen:
            reason = f"{request.email}: the same address as line {seen[request.email]}"
            report.refused.append(Notice(report.source, f"line {start}", reason))
            continue
        seen[request.email] = start
        yield start, request


# The columns an export writes that an import does not read: the store's own id and dates.
_EXPORT_ONLY = frozenset(column for column in store.record_columns() if column not in IMPORT_COLUMNS)


def _with_exported(request: _Request, values: dict[str, str], header: list[str]) -> _Request:
    """``request`` with the row's languages read, language choice, status and consent; SubscriberError naming the
    cell that is refused."""
    try:
        reads = check_reads([values.get("reads", "")]) if "reads" in header else None
        choice = values.get("language_choice", "").strip()
        status = values.get("status", "").strip().lower()
        return replace(
            request,
            reads=reads,
            language_choice=check_language_choice(choice) if choice else None,
            status=check_status(status) if status else None,
            consent=_consent(values),
        )
    except SubscriberError as error:
        raise SubscriberError(f"{request.email}: {error}") from None


def _consent(values: dict[str, str]) -> Consent | None:
    """The consent a row records (``consent_at`` and ``consent_method`` given), or None when it records none."""
    at, method = values.get("consent_at", "").strip(), " ".join(values.get("consent_method", "").split())
    if not at and not method:
        return None
    if not at or not method:
        raise SubscriberError("consent_at and consent_method go together (when and how they agreed)")
    try:
        moment = datetime.fromisoformat(at.replace("Z", "+00:00"))
    except ValueError:
        raise SubscriberError(f"consent_at {at!r} is not an ISO 8601 time") from None
    if len(method) > MAX_CONSENT_METHOD_LENGTH:
        raise SubscriberError(f"consent_method is longer than {MAX_CONSENT_METHOD_LENGTH} characters")
    moment = moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)  # no offset: UTC, as posts
    source = " ".join(values.get("consent_source", "").split())
    return Consent(at=moment.astimezone(UTC), method=method, source=source)


class _RanOver(Exception):
    """Stops a csv reader whose record runs, inside a quoted field, onto lines a refused record already ran over."""


def _csv_records(lines: Iterable[str]) -> Iterator[tuple[int, list[str] | str]]:
    """The CSV records of ``lines`` (each with its line end), each with the line it starts on and its cells, or why
    it cannot be read.

    A record that cannot be read (a quote never closed, a field over the csv module's limit) is given at the line
    where it starts, and reading resumes on the next line: a stray quote costs its own row, not the rows after it.
    Only the lines of the record being read are kept (those a refused record ran over, to be read again).
    """
    source = iter(lines)
    kept: list[str] = []  # the lines from index `base` on that were read and may be read again
    base = 0
    start = 0  # index of the line the record being read starts on
    fed = 0  # index of the next line for the reader
    ran_over = 0  # a refused record read lines up to this index inside a quoted field...
    ran_over_reason = ""  # ...and was refused for this
    at_end = False

    def line(index: int) -> str | None:
        while index - base >= len(kept):
            following = next(source, None)
            if following is None:
                return None
            kept.append(following)
        return kept[index - base]

    def feed() -> Iterator[str]:
        nonlocal fed, at_end
        while (text := line(fed)) is not None:
            # Only a quoted field goes on past a line end, and from there the reader reads alike whichever row
            # opened it: this record would fail as the refused one did. Stopping it keeps the work linear.
            if start < fed <= ran_over:
                raise _RanOver
            fed += 1
            yield text
        at_end = True

    def forget_before(index: int) -> None:
        nonlocal base
        del kept[: index - base]
        base = index

    reader = csv.reader(feed(), strict=True)
    while True:
        try:
            cells = next(reader)
        except StopIteration:
            return
        except _RanOver:
            reason = ran_over_reason
        except csv.Error as error:
            reason = _csv_problem(error, ran_on=fed - 1 > start, at_end=at_end)
            if fed - 1 > ran_over:
                ran_over, ran_over_reason = fed - 1, reason
        else:
            yield start + 1, cells
            start = fed
            forget_before(start)
            continue
        yield start + 1, reason
        start = fed = start + 1
        forget_before(start)
        at_end = False
        reader = csv.reader(feed(), strict=True)


def _csv_problem(error: csv.Error, *, ran_on: bool, at_end: bool) -> str:
    """Why the csv module could not read a record, in our words; ``ran_on``: it ran past the line it starts on."""
    limit = csv.field_size_limit()
    if at_end:
        return "a quoted field is never closed (the quote opened on this line)"
    if str(error).startswith("field larger than field limit"):
        # A quote never closed also makes one huge field, of the rows after it.
        hint = " (is a quote opened on this line never closed?)" if ran_on else ""
        return f"a field is longer than {limit:,} characters{hint}"
    if ran_on:  # a quote in a later row was taken for the closing one
        return "a quoted field is never closed (the quote opened on this line)"
    if "expected after" in str(error):
        return "a closing quote must be followed by a comma or the end of the line"
    return f"not valid CSV: {error}"


# --- Signed links ---------------------------------------------------------------------------------------------


def token_subject(subscriber: Subscriber) -> str:
    """What a subscriber's links carry: their id and a check of their address.

    The check keeps an old link from acting on someone else: SQLite may give a new subscriber the id of one
    erased before, but not their address. Tokens are signed, not encrypted; neither part is a secret.
    """
    return f"{subscriber.id}:{store.email_hash(subscriber.email)[:12]}"


def subscriber_token(service: Service, purpose: str, subscriber: Subscriber, keys: Sequence[str] | None = None) -> str:
    """A signed token for one of ``subscriber``'s links (``confirm``, ``unsubscribe``, ``preferences``);
    ``keys``: the signing keys when the caller has them (a sender signs thousands of links), else read."""
    keys = signing_keys(service.settings) if keys is None else keys
    return make_token(keys, purpose, token_subject(subscriber), now=service.clock())


# A subscriber's own links (confirm, rejoin, unsubscribe, preferences) carry no ``lang``: the page one opens is in
# the language the subscriber has chosen when it is opened (``web.languages``), so an email written before they
# changed it still leads to pages in the new one. An email's other links to the site say the email's language
# (``home_url``; ``mailing.render`` for the links its templates write).


def confirm_url(service: Service, subscriber: Subscriber) -> str:
    """The link that confirms ``subscriber``'s subscription (valid for 7 days); no ``lang`` (see above)."""
    return f"{service.settings.site.base_url}/subscribe/confirm/{subscriber_token(service, 'confirm', subscriber)}"


def unsubscribe_url(service: Service, subscriber: Subscriber, keys: Sequence[str] | None = None) -> str:
    """The link that unsubscribes ``subscriber`` (it does not expire); no ``lang`` (see ``confirm_url``)."""
    token = subscriber_token(service, "unsubscribe", subscriber, keys)
    return f"{service.settings.site.base_url}/unsubscribe/{token}"


def preferences_url(service: Service, subscriber: Subscriber, keys: Sequence[str] | None = None) -> str:
    """The link to ``subscriber``'s preferences page (it does not expire); no ``lang`` (see ``confirm_url``)."""
    token = subscriber_token(service, "preferences", subscriber, keys)
    return f"{service.settings.site.base_url}/preferences/{token}"


def home_url(settings: Settings, language: str) -> str:
    """The site's home page in ``language``: where the layout of an email with no online copy of its own (a
    confirmation, a notice) leads its "view online" and site links."""
    return with_language(f"{settings.site.base_url}/", language)


def subscriber_from_token(session: Session, service: Service, purpose: str, token: str) -> Subscriber | None:
    """The subscriber a token of ``purpose`` was made for; None if they were erased since.

    The subject is ``token_subject``'s "id:check"; a bare id is read too (links made that way cannot tell a
    reused id apart). Raises TokenError for a forged, expired or other-purpose token.
    """
    subject = read_token(signing_keys(service.settings), purpose, token, now=service.clock())
    if purpose == "rejoin":
        subject = subject.rpartition("@")[0]  # "id:check@moment they left" (see rejoin_url)
    return _subscriber_of(session, purpose, subject)


def _subscriber_of(session: Session, purpose: str, subject: str) -> Subscriber | None:
    identifier, _, check = subject.partition(":")
    if not identifier.isdigit():
        raise TokenError(f"this {purpose} link is not valid")
    subscriber = store.subscriber_by_id(session, int(identifier))
    if subscriber is None or (check and store.email_hash(subscriber.email)[:12] != check):
        return None
    return subscriber


def reader_of_view_link(service: Service, edition_id: int, token: str) -> Subscriber | None:
    """The subscriber a "view in browser" link of edition ``edition_id`` was made for (its subject is
    ``"<edition id>/<token_subject>"``); None if they were erased since. TokenError for a link that is forged,
    made for something else, or made for another edition."""
    subject = read_token(signing_keys(service.settings), "view", token, now=service.clock())
    edition, _, reader = subject.partition("/")
    if edition != str(edition_id):
        raise TokenError("this view link is for another edition")
    with database.transaction(service.engine) as session:
        return _subscriber_of(session, "view", reader)


# --- Confirmation email ---------------------------------------------------------------------------------------


def send_confirmation(
    service: Service, subscriber: Subscriber, *, connection: Transport | None = None, url: str | None = None
) -> None:
    """Email ``subscriber`` the link that confirms their subscription (``url``, by default ``confirm_url``), in
    their language, through the service's Mailer (DKIM-signed when configured).

    Sent over ``connection`` (from ``service.mailer.connect()``) when given (an import sends many), else over a
    connection of its own.
    Raises DeliveryError when the SMTP server does not take the message (the subscriber stays pending), and
    ConfigError when the relay or the signing key is not configured right.
    """
    from syndication.app.digests import send_notice  # with mailing.render: templates, premailer (slow to import)
    from syndication.mailing.render import Links, MailRenderer

    settings = service.settings
    url = url or confirm_url(service, subscriber)
    home = home_url(settings, subscriber.language)
    # The confirmation has no unsubscribe or online copy; the shared layout's links lead to the site instead.
    links = Links(unsubscribe=url, preferences=home, view_online=home)
    email = MailRenderer(settings).render_notice("confirm", subscriber.language, {"confirm_url": url}, links)
    send_notice(service, email, subscriber.email, subscriber.name, f"confirm.{subscriber.id}", connection=connection)


def subscribe_by_form(
    service: Service,
    email: str,
    *,
    name: str | None,
    themes: Sequence[str],
    cadence: str,
    language: str,
    source: str,
    cap: int,
) -> str:
    """What the subscribe form does with an address, in one transaction, sending nothing itself: store the
    subscriber and queue their email (``app.notices`` sends it). Returns what was done, for the log only: the form
    answers the same whatever it was.

    ``queued confirm``: a new or pending subscriber, or one already active (their link leads to a page with their
    preferences link); ``queued rejoin``: someone who left or bounced, asked to confirm that they come back;
    ``not sent: ...``: an address that is complained or suppressed (removed), to which nothing goes. The queued
    email carries ``cap``: the drain counts it against the address's emails from the form that day (at most
    ``cap``, the count ``reserve_form_email`` keeps) as it sends it, and sends nothing past the cap.
    """
    settings = service.settings
    request = _request(settings, email, name, themes, cadence, language)
    signing_keys(settings)  # the confirmation needs a signed link: refuse before storing anything
    now = service.clock()
    consent = Consent(at=now, method="form", source=f"{source}, double opt-in")
    for attempt in (1, 2):
        try:
            with notice_store.write_turn(service.engine), database.transaction(service.engine) as session:
                try:
                    subscriber, _ = _apply(
                        session, settings, request, now, consent, confirmed=False, update=False, resubscribe=False
                    )
                except SubscriberError as error:  # ended or suppressed: nothing is stored
                    existing = store.subscriber_by_email(session, request.email)
                    if existing is None or existing.status not in REJOINABLE_STATUSES:
                        return f"not sent: {error}"
                    notice_store.queue(
                        session, "rejoin", existing.email, {"status": existing.status, "cap": cap}, now,
                        subscriber_id=existing.id,
                    )  # fmt: skip
                    return "queued rejoin"
                notice_store.queue(
                    session, "confirm", subscriber.email, {"status": subscriber.status, "cap": cap}, now,
                    subscriber_id=subscriber.id,
                )  # fmt: skip
                return "queued confirm"
        except IntegrityError:
            # The same new address posted twice at once: the store refused the second insert, and trying again
            # finds the first one. A second refusal is a real error.
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


def queue_preferences_notice(service: Service, subscriber: Subscriber, summary: str) -> None:
    """Queue the email telling ``subscriber`` that their preferences changed (``summary``: what they receive now);
    ``app.notices`` renders it in their language when it sends it (``send_preferences_notice`` sends at once)."""
    with notice_store.write_turn(service.engine), database.transaction(service.engine) as session:
        notice_store.queue(
            session, "preferences", subscriber.email, {"status": subscriber.status, "summary": summary},
            service.clock(), subscriber_id=subscriber.id,
        )  # fmt: skip


# --- Status changes -------------------------------------------------------------------------------------------


def confirm(service: Service, token: str) -> Subscriber:
    """Activate the pending subscriber a confirmation link was made for; confirming twice changes nothing.

    Raises TokenError for a forged, expired or other-purpose link, and SubscriberError when the subscription
    was removed or has ended since (an old link does not undo an unsubscribe).
    """
    with database.transaction(service.engine) as session:
        subscriber = subscriber_from_token(session, service, "confirm", token)
        if subscriber is None:
            raise SubscriberError("this subscription no longer exists: subscribe again")
        if subscriber.status in ENDED_STATUSES:
            raise SubscriberError(f"{subscriber.email} is {subscriber.status}: subscribe again to receive digests")
        if subscriber.status == "active":
            return subscriber
        now = service.clock()
        activated = store.set_status(session, subscriber.id, "active", now)
        assert activated is not None
        announce_subscriber(session, now, subscriber.id, "active")
        return activated


def rejoin_url(service: Service, subscriber: Subscriber, left_at: datetime) -> str:
    """The link with which ``subscriber``, who left (or bounced) at ``left_at``, confirms they subscribe again.

    It names the moment they left: once their status changes again (they rejoin, or leave once more), it no
    longer works, so an old email cannot undo a later unsubscribe. Valid for 7 days, like a confirmation; no
    ``lang`` (see ``confirm_url``).
    """
    subject = f"{token_subject(subscriber)}@{_microseconds(left_at)}"
    token = make_token(signing_keys(service.settings), "rejoin", subject, now=service.clock())
    return f"{service.settings.site.base_url}/subscribe/rejoin/{token}"


def ask_to_rejoin(service: Service, address: str) -> bool:
    """Email a confirmation link to ``address`` if it belongs to someone who left or bounced (double opt-in
    again); True when one was sent. A complaint is final: nobody who reported the digest as spam is asked."""
    with database.transaction(service.engine) as session:
        subscriber = store.subscriber_by_email(session, normalise_email(address))
        left_at = store.status_since(session, subscriber.id) if subscriber else None
    if subscriber is None or left_at is None or subscriber.status not in REJOINABLE_STATUSES:
        return False
    send_confirmation(service, subscriber, url=rejoin_url(service, subscriber, left_at))
    return True


def _microseconds(moment: datetime) -> int:
    # Exact, unlike a float timestamp: leaving, rejoining and leaving again can happen within one second.
    return (moment - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)


def _rejoin_subject(service: Service, token: str) -> tuple[str, str]:
    subject = read_token(signing_keys(service.settings), "rejoin", token, now=service.clock())
    reader, _, left_at = subject.rpartition("@")
    return reader, left_at


def rejoin(service: Service, token: str, *, source: str = "subscribe page") -> Subscriber:
    """Make the subscriber a rejoin link was made for active again, with their earlier choices and a renewed
    consent; rejoining twice changes nothing.

    Raises TokenError for a forged, expired or other-purpose link, and SubscriberError when the subscriber was
    erased, or their status changed since the link was made (a link from before a later unsubscribe).
    """
    reader, left_at = _rejoin_subject(service, token)
    with database.transaction(service.engine) as session:
        subscriber = _subscriber_of(session, "rejoin", reader)
        if subscriber is None:
            raise SubscriberError("this subscription no longer exists: subscribe again")
        if subscriber.status == "active":
            return subscriber
        since = store.status_since(session, subscriber.id)
        if subscriber.status not in REJOINABLE_STATUSES or since is None or str(_microseconds(since)) != left_at:
            raise SubscriberError(f"{subscriber.email} changed since this link was made: subscribe again")
        now = service.clock()
        store.record_consent(session, subscriber.id, Consent(at=now, method="form", source=f"{source}, double opt-in"))
        activated = store.set_status(session, subscriber.id, "active", now)
        assert activated is not None
        announce_subscriber(session, now, subscriber.id, "active")
        return activated


def unsubscribe(service: Service, token_or_id: str | int) -> Subscriber | None:
    """Unsubscribe by an unsubscribe link's token or by id; None when there is no such subscriber (any more).

    Idempotent. A bounced or complained subscriber keeps that status: they get nothing either way, and it says
    more about the address.
    """
    with database.transaction(service.engine) as session:
        if isinstance(token_or_id, int):
            subscriber = store.subscriber_by_id(session, token_or_id)
        else:
            subscriber = subscriber_from_token(session, service, "unsubscribe", token_or_id)
        if subscriber is None or subscriber.status not in ("pending", "active"):
            return subscriber
        now = service.clock()
        left = store.set_status(session, subscriber.id, "unsubscribed", now)
        announce_subscriber(session, now, subscriber.id, "unsubscribed")
        return left


def subscriber_for_link(service: Service, purpose: str, token: str) -> Subscriber | None:
    """The subscriber a link of ``purpose`` was made for (None if erased since); TokenError if it is not valid."""
    with database.transaction(service.engine) as session:
        return subscriber_from_token(session, service, purpose, token)


def change_preferences(
    service: Service,
    token: str,
    *,
    themes: str | Sequence[str],
    cadence: str,
    language: str,
    name: str | None = None,
    reads: Iterable[str] | None = None,
    language_choice: str | None = None,
) -> tuple[Subscriber, bool]:
    """Set the preferences of the subscriber a preferences link was made for; returns them and whether anything
    changed. ``themes`` empty means every theme; ``reads`` (the languages of posts they read besides their emails')
    and ``language_choice`` (``check_language_choice``) are kept when None.

    Raises TokenError for a link that is not valid, and SubscriberError for a value that is refused (naming it)
    or a subscription that was removed or has ended (an old link does not bring it back).
    """
    with database.transaction(service.engine) as session:
        subscriber = subscriber_from_token(session, service, "preferences", token)
        if subscriber is None:
            raise SubscriberError("this subscription no longer exists: subscribe again")
        return _set_preferences(
            session, service.settings, subscriber, themes=themes, cadence=cadence, language=language, name=name,
            reads=reads, language_choice=language_choice,
        )  # fmt: skip


def update_preferences(
    service: Service,
    subscriber_id: int,
    *,
    themes: str | Sequence[str] | None = None,
    cadence: str | None = None,
    language: str | None = None,
    name: str | None = None,
    reads: Iterable[str] | None = None,
    language_choice: str | None = None,
) -> tuple[Subscriber, bool] | None:
    """Change the preferences given (None: kept) of the subscriber ``subscriber_id``, checked as the preferences
    page checks them (``change_preferences``); returns them and whether anything changed, or None when there is no
    such subscriber. Raises SubscriberError for a refused value (naming it) or a subscription that has ended."""
    with database.transaction(service.engine) as session:
        subscriber = store.subscriber_by_id(session, subscriber_id)
        if subscriber is None:
            return None
        return _set_preferences(
            session, service.settings, subscriber,
            themes=(subscriber.themes or ()) if themes is None else themes,
            cadence=cadence or subscriber.cadence, language=language or subscriber.language, name=name,
            reads=reads, language_choice=language_choice,
        )  # fmt: skip


def _set_preferences(
    session: Session,
    settings: Settings,
    subscriber: Subscriber,
    *,
    themes: str | Sequence[str],
    cadence: str,
    language: str,
    name: str | None,
    reads: Iterable[str] | None,
    language_choice: str | None,
) -> tuple[Subscriber, bool]:
    request = _request(settings, subscriber.email, name, themes, cadence, language)
    try:
        read = None if reads is None else check_reads(reads)
        choice = None if language_choice is None else check_language_choice(language_choice)
    except SubscriberError as error:
        raise SubscriberError(f"{subscriber.email}: {error}") from None
    if subscriber.status in ENDED_STATUSES:
        raise SubscriberError(f"{subscriber.email} is {subscriber.status}: subscribe again to receive digests")
    chosen = request.themes or None  # () is every theme: stored None
    changed = (
        chosen != subscriber.themes
        or request.cadence != subscriber.cadence
        or request.language != subscriber.language
        or (request.name is not None and request.name != subscriber.name)
        or (read is not None and read != subscriber.reads)
        or (choice is not None and (choice if choice != "default" else None) != subscriber.language_choice)
    )
    if not changed:
        return subscriber, False
    updated = store.update_preferences(
        session, subscriber.id, name=request.name, language=request.language, cadence=request.cadence,
        themes=chosen, everything=chosen is None, reads=read, language_choice=choice,
    )  # fmt: skip
    assert updated is not None
    return updated, True


def send_preferences_notice(service: Service, subscriber: Subscriber, summary: str) -> None:
    """Email ``subscriber`` that their preferences changed (``summary``: what they receive now), in their
    language, with their links to change them again or leave, through the service's Mailer (DKIM-signed when
    configured). Raises DeliveryError or ConfigError."""
    from syndication.app.digests import send_notice
    from syndication.mailing.render import Links, MailRenderer

    settings = service.settings
    links = Links(
        unsubscribe=unsubscribe_url(service, subscriber),
        preferences=preferences_url(service, subscriber),
        view_online=home_url(settings, subscriber.language),
    )
    email = MailRenderer(settings).render_notice("preferences", subscriber.language, {"summary": summary}, links)
    send_notice(service, email, subscriber.email, subscriber.name, f"preferences.{subscriber.id}")


def remove_subscriber(service: Service, email: str, *, actor: str) -> str:
    """Erase everything we hold on an address and suppress it as ``actor``; returns what was done.

    ``removed``: the subscriber was erased (their deliveries stay, with no subscriber). ``suppressed``: there was
    no subscriber, and the address is now suppressed all the same (the person asked not to be on the list).
    ``already removed``: it was suppressed before. Only the SHA-256 of the address is kept, in the suppression
    list and in the audit log's record of the erasure (none when it was already removed: nothing changed).
    """
    normal = normalise_email(email)
    now = service.clock()
    with database.transaction(service.engine) as session:
        subscriber = store.subscriber_by_email(session, normal)
        already = store.suppression_reason(session, normal) is not None
        if subscriber is not None:
            store.delete_subscriber(session, subscriber.id)
        store.suppress(session, normal, "removed", now)
        if subscriber is not None or not already:
            audit_store.record(
                session, at=now, actor=actor, action=SUBSCRIBER_ERASED, subject_kind="subscriber",
                subject_id=None if subscriber is None else subscriber.id,
                details={"address_sha256": store.email_hash(normal),
                         "outcome": "removed" if subscriber is not None else "suppressed"},
            )  # fmt: skip
    if subscriber is not None:
        return "removed"
    return "already removed" if already else "suppressed"


# --- Reading --------------------------------------------------------------------------------------------------


def list_subscribers(service: Service, *, status: str | None = None, cadence: str | None = None) -> list[Subscriber]:
    """Subscribers in id order, optionally of one status and one cadence."""
    status = None if status is None else check_status(status)
    cadence = None if cadence is None else check_cadence(cadence)
    with database.transaction(service.engine) as session:
        return list(store.subscribers(session, status=status, cadence=cadence))


def export_subscribers(service: Service, out: TextIO) -> int:
    """Write every subscriber as CSV, every column we hold (consent included); returns how many.

    Times are ISO 8601 UTC; ``themes`` are joined with ``;`` and empty for every theme, as import reads them.
    """
    columns = store.record_columns()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    count = 0
    with database.transaction(service.engine) as session:
        for record in store.subscriber_records(session):
            writer.writerow([_cell(record[column]) for column in columns])
            count += 1
    return count


def subscriber_counts(service: Service) -> dict[tuple[str, str], int]:
    """How many subscribers there are per (cadence, status)."""
    with database.transaction(service.engine) as session:
        return store.status_counts(session)


def _cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, list | tuple):
        return spreadsheet_cell(";".join(str(item) for item in value))
    return spreadsheet_cell(str(value))


def spreadsheet_cell(text: str) -> str:
    """``text`` as a CSV cell no spreadsheet runs as a formula; ``spreadsheet_value`` gives ``text`` back.

    A cell that already starts with the apostrophe gets a second one, so that the round trip is exact.
    """
    return _TEXT_MARK + text if text.startswith((*_FORMULA_STARTS, _TEXT_MARK)) else text


def spreadsheet_value(cell: str) -> str:
    """The text of a CSV cell that ``spreadsheet_cell`` (or a spreadsheet's own text mark) protected."""
    if len(cell) > 1 and cell[0] == _TEXT_MARK and cell[1] in (*_FORMULA_STARTS, _TEXT_MARK):
        return cell[1:]
    return cell


def find_subscriber(service: Service, email: str) -> Subscriber | None:
    """The subscriber with this address (checked and normalised first); None when there is none.

    Raises SubscriberError when ``email`` is not an address at all.
    """
    with database.transaction(service.engine) as session:
        return store.subscriber_by_email(session, normalise_email(email))


def following_counts(service: Service) -> dict[str | None, int]:
    """How many active subscribers follow each theme slug; the None key counts those who follow everything."""
    with database.transaction(service.engine) as session:
        return store.theme_counts(session)


def reserve_form_email(service: Service, address: str, cap: int) -> bool:
    """Count one more email the subscribe form sends to ``address`` today; False when it had ``cap`` already."""
    with database.transaction(service.engine) as session:
        return form_emails.reserve(session, address, service.clock().date(), cap)
