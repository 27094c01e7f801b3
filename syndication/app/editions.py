"""Sending digests: an edition per cadence and window, one delivery per subscriber with something new, drained
through the service's Mailer. Running it again for the same window creates nothing and sends nothing twice.

The one place that wires the ledger, the subscribers, the renderer and the sender together for sending; the
command line, the scheduler and the editor pages call these functions (``open_sender`` for a driver that keeps
a sender, so that it can stop it).

A refusal about a recipient reaches the subscribers in one place (``_count_bounce``). A refusal of the sending
side marks nobody: the sender pauses the edition with the reason (``DrainReport.paused_editions``), ``deliver``
logs it and emails ``[digest] approval_emails``; an editor resumes it once the relay is mended, and everything
held back is sent then. Deliveries given up on (failed, unknown, poisoned) go back to the queue only when an
operator says so (``retry_deliveries``), once, with the same Message-ID.
"""

from __future__ import annotations

import hashlib
import logging
import re
import secrets
from collections.abc import Callable, Collection
from dataclasses import dataclass, field, fields, replace
from datetime import datetime
from urllib.parse import quote

from sqlalchemy.orm import Session

from syndication.app.audit import record as audit
from syndication.app.bounces import record_bounce, verp_address
from syndication.app.digests import (
    compose_posts,
    digest_headers,
    edition_posts,
    held_posts,
    personalised_message,
    preview_links,
    send_notice,
)
from syndication.app.service import Service
from syndication.app.subscribers import (
    default_language,
    preferences_url,
    reader_of_view_link,
    reading_of,
    token_subject,
    unsubscribe_url,
)
from syndication.app.webhooks import announce_approval
from syndication.config import Settings, signing_keys
from syndication.core.audit import EDITION_APPROVED, EDITION_RETRIED, EDITION_TEST_SENT, EDITION_TEXT_CHANGED, SYSTEM
from syndication.core.digest import Digest
from syndication.core.editions import (
    EDITABLE,
    NOTHING_NEW,
    TRANSITIONS,
    EditionAction,
    check_editable,
    next_status,
    on_rerun,
    reopen_for_retry,
)
from syndication.core.languages import LANGUAGE_PARAMETER, Reading, reading
from syndication.core.models import (
    CADENCES,
    RETRYABLE_DELIVERIES,
    DeliveryStatus,
    Edition,
    EditionStatus,
    Post,
    Subscriber,
)
from syndication.core.progress import Progress, running
from syndication.core.tokens import make_token
from syndication.delivery.mailer import Mailer
from syndication.delivery.sender import Bounce, DrainReport, Outgoing, Sender
from syndication.errors import SyndicationError
from syndication.mailing.message import HeaderInjection
from syndication.mailing.render import Links, MailRenderer, RenderedEmail, RenderError
from syndication.scheduling.cadences import latest_fire, parse_crontab, window_ending
from syndication.store import database, ledger
from syndication.store import subscribers as subscriber_store
from syndication.store.ledger import DeliveryProblem

log = logging.getLogger(__name__)
# One rendered variant of an edition: its id, the themes followed (None: all), the language, the reading.
_VariantKey = tuple[int, tuple[str, ...] | None, str, Reading | None]


@dataclass
class SendPlan:
    """What creating (or finding) an edition and queueing its deliveries did, or would do with ``dry_run``."""

    cadence: str
    since: datetime
    until: datetime
    edition: Edition | None
    created: bool
    recipients: int = 0
    queued: int = 0
    nothing_new: int = 0
    variants: set[tuple[tuple[str, ...] | None, str, Reading | None]] = field(default_factory=set)
    posts: int = 0
    approved: bool = False  # this run approved the edition (``digest send --approve``): the operator's approval

    @property
    def empty(self) -> bool:
        """True when the window had nothing new: its edition is kept only to mark where the next one starts."""
        return self.edition is not None and self.edition.status == EditionStatus.EMPTY

    @property
    def draft(self) -> bool:
        """True when the edition waits for an editor's approval."""
        return self.edition is not None and self.edition.status == EditionStatus.DRAFT


def default_window(service: Service, cadence: str) -> tuple[datetime, datetime]:
    """The window of ``cadence``'s latest scheduled edition: from its fire time before the last to the last one
    (``[schedule.cadences]``, in ``site.timezone``), the same window the scheduler gives that edition."""
    crontab = service.settings.schedule.cadences.get(cadence, "off")
    if crontab == "off":
        raise SyndicationError(f"the {cadence} cadence is off in [schedule.cadences]: give --since and --until")
    trigger = parse_crontab(crontab, service.settings.site.timezone)
    until = latest_fire(trigger, service.clock())
    if until is None:
        raise SyndicationError(f"the {cadence} schedule {crontab!r} has not fired yet")
    return window_ending(trigger, until)


def plan_edition(
    service: Service,
    cadence: str,
    since: datetime,
    until: datetime,
    *,
    dry_run: bool = False,
    draft: bool = False,
    approve: bool = False,
    actor: str = SYSTEM,
) -> SendPlan:
    """Create the edition of this window (once) and queue one delivery per active subscriber of the cadence
    who has something new; with ``dry_run`` nothing is written and the plan says what would be sent.

    The edition records the posts it holds as it is made (``digests.edition_posts``): those published by the
    window's end that no edition of the cadence holds yet, late ones included; its messages, re-runs, retries,
    previews and public copy show those, whatever is gathered later.

    A ``draft`` edition is queued but not sent until an editor approves it; ``approve`` (the operator's approval,
    ``digest send --approve``) creates it approved, or approves the window's draft. A window in which nothing was
    published makes an ``empty`` edition: no deliveries, never public nor a draft nor emailed about, kept so that
    the next window starts where it ended. Running it again for the window resumes what is left (``on_rerun``):
    nothing is queued to an edition that is over, and deliveries stranded under a sent one are sent. An approval
    is recorded in the audit log as ``actor``'s.
    """
    if cadence not in CADENCES:
        raise SyndicationError(f"unknown cadence {cadence!r} (expected one of {', '.join(CADENCES)})")
    if since >= until:
        raise SyndicationError(
            f"the window is empty: since {since.isoformat()} is not before until {until.isoformat()}"
        )
    plan = SendPlan(cadence, since, until, None, created=False)
    digests: dict[tuple[tuple[str, ...] | None, Reading | None], Digest | None] = {}
    left_out: list[str] = []  # groups of readers with nothing new (subscribers.group_key)
    with database.transaction(service.engine) as session:
        now = service.clock()
        made, post_ids, posts = edition_posts(session, cadence, since, until, now)
        if made is None and not dry_run:
            everything = compose_posts(service.settings, posts, since, min(until, now), None)
            if everything is None:
                status, reason = EditionStatus.EMPTY, NOTHING_NEW
            else:
                status, reason = (EditionStatus.DRAFT if draft and not approve else EditionStatus.SENDING), ""
            made, plan.created = ledger.create_edition(
                session, cadence, since, until, now, status, reason=reason,
                approved_at=now if approve and status == EditionStatus.SENDING else None,
            )  # fmt: skip
            if plan.created:
                ledger.hold_posts(session, made, post_ids)  # in the same transaction: made and filled at once
                plan.approved = approve and status == EditionStatus.SENDING
                if plan.approved:
                    audit(session, now, actor, EDITION_APPROVED, ("edition", made.id), to=str(made.status))
                    announce_approval(session, now, made)
            else:  # a rival run made it after this one looked: what that one holds is what counts
                made, _, posts = edition_posts(session, cadence, since, until, now)
        # Whom it goes to, from what it holds (what it would hold, for a dry run of a window not made yet).
        shown_until = until if made else min(until, now)
        plan.edition = made
        # Readers who get the same digest, counted by the database (a few hundred groups, whatever the list's
        # size): each group's digest is composed once, and no subscriber row is loaded.
        for group in subscriber_store.reader_groups(session, cadence):
            plan.recipients += group.count
            themes = group.themes
            choice = group.language_choice or service.settings.digest.language_choice
            reads = reading((group.language, *group.reads), choice)  # as reading_of reads a subscriber
            if (themes, reads) not in digests:
                digests[themes, reads] = compose_posts(
                    service.settings, posts, since, shown_until, themes, reading=reads
                )
            if digests[themes, reads] is None:
                plan.nothing_new += group.count
                left_out.append(group.key)
                continue
            plan.variants.add((themes, group.language, reads))
        plan.posts = max((d.post_count for d in digests.values() if d is not None), default=0)
        if dry_run or plan.edition is None:
            return plan
        edition_id = plan.edition.id
        if not plan.created:
            existing = plan.edition
            may_queue, after = on_rerun(existing, ledger.open_deliveries(session, edition_id))
            if approve and existing.status == EditionStatus.DRAFT:
                after = next_status(existing, EditionAction.APPROVE)
                plan.approved = True
                audit(session, now, actor, EDITION_APPROVED, ("edition", edition_id),
                      **{"from": str(existing.status), "to": str(after)})  # fmt: skip
            if after != existing.status:
                ledger.set_edition_status(session, edition_id, after, now, only_from=existing.status)
                plan.edition = ledger.edition(session, edition_id)
            if plan.approved and plan.edition is not None:
                announce_approval(session, now, plan.edition)
            if not may_queue:
                return plan
        elif plan.empty:
            return plan
        # One INSERT … SELECT in the database: every active reader of the cadence but the groups with nothing new.
        # Each delivery's Message-ID ("edition-<e>.<s>.<random>") is kept and reused on every retry, so a receiver
        # can drop a copy of an ambiguous send. A reader who changes their themes after this (or between the
        # groups being counted and this statement) is refused by the builder if nothing is new for them now.
        plan.queued = ledger.queue_readers(session, edition_id, cadence, service.clock(), leave_out=left_out)
    return plan


def open_sender(service: Service, owner: str | None = None) -> Sender:
    """A sender of the service's queue through its Mailer, for a driver that keeps one (to ``stop`` it, or to
    drain again later); ``owner`` names it in the claims it holds (default: host, process and thread)."""
    return Sender(service.settings, service.engine, service.clock, service.mailer, owner=owner)


# An address in a reply ("<bo@example.org>", "for 'bo@example.org'"): left out, so that one reason groups many.
_ADDRESS = re.compile(r"(?:\s+for)?\s*['\"<]?[^\s'\"<>@]+@[^\s'\"<>@]+['\">]?")


def normalised_reason(detail: str) -> str:
    """A delivery's error as a reason many deliveries share: one line, its recipient's address left out."""
    line = " ".join(_ADDRESS.sub("", detail).split())
    return line.strip(" :;,") or "no reason given"


def group_reasons(rows: Collection[tuple[str, str, int]]) -> dict[str, dict[str, int]]:
    """(status, detail, count) rows as status → normalised reason → count, statuses by name and the commonest
    reason first (the same order from every database)."""
    grouped: dict[str, dict[str, int]] = {}
    for status, detail, count in sorted(rows, key=lambda row: str(row[0])):
        reasons = grouped.setdefault(str(status), {})
        reason = normalised_reason(detail)
        reasons[reason] = reasons.get(reason, 0) + count
    return {status: dict(sorted(r.items(), key=lambda item: (-item[1], item[0]))) for status, r in grouped.items()}


# The outcomes a drain reports the reasons of.
_REASONED = (DeliveryStatus.DEFERRED, DeliveryStatus.FAILED, DeliveryStatus.BOUNCED, DeliveryStatus.UNKNOWN,
             DeliveryStatus.POISONED)  # fmt: skip


@dataclass
class DeliveryReport(DrainReport):
    """What ``deliver`` did: the sender's report, with the reasons of its deferrals and failures (``reasons``:
    outcome → normalised reason → how many, e.g. {"deferred": {"Connection refused (127.0.0.1:25)": 9}})."""

    reasons: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def nothing_delivered(self) -> bool:
        """True when something was due and nothing of it could be delivered."""
        due = self.handled or self.poisoned or self.paused_editions or self.held_back
        return self.sent == 0 and bool(due)


def deliver(
    service: Service,
    *,
    edition_id: int | None = None,
    on_progress: Callable[[DrainReport], None] | None = None,
    sender: Sender | None = None,
    progress: Progress | None = None,
) -> DeliveryReport:
    """Send every due delivery (retries included) of sending editions, or of one edition, through the service's
    Mailer; with ``sender`` (from ``open_sender``) through that one. Raises SenderBusy when another sender drains
    this SQLite store, ConfigError when sending is not configured right.

    An edition the relay refused to send (our sender, content, relaying, credentials, the relay's own trouble, or
    the breaker) is paused, named in the report's ``paused_editions`` with the reason, logged as an error, and
    the editors are emailed (a failure to email them is logged, never raised). ``progress`` is told the
    deliveries due as the run starts and each one dealt with."""
    sender = sender or open_sender(service)
    builder = MessageBuilder(service)
    with database.transaction(service.engine) as session:
        before = ledger.last_attempt_id(session)
        due = ledger.due_count(session, service.clock(), edition_id)
    with running(progress, "sending", due) as shows:
        shown = 0

        def progressed(report: DrainReport) -> None:
            nonlocal shown
            shows.advance(report.handled - shown)
            shown = report.handled
            if on_progress is not None:
                on_progress(report)

        drained = sender.drain(
            builder.build, edition_id=edition_id, on_progress=progressed,
            on_bounce=lambda bounce: _count_bounce(service, bounce),
        )  # fmt: skip
    with database.transaction(service.engine) as session:
        rows = [row for row in ledger.outcomes_after(session, before, edition_id) if row[0] in _REASONED]
    report = DeliveryReport(
        **{f.name: getattr(drained, f.name) for f in fields(DrainReport)}, reasons=group_reasons(rows)
    )
    for paused, reason in report.paused_editions.items():
        log.error("edition %d paused: %s", paused, reason, extra={"event": "edition-paused", "edition": paused})
        for problem in notify_paused(service, paused, reason):
            log.error("could not email an editor that edition %d is paused: %s", paused, problem)
    return report


def _count_bounce(service: Service, bounce: Bounce) -> None:
    """The one place a refusal about a recipient, met while sending, reaches the subscriber: ``bounce`` says whose
    delivery of which edition, its fault (``address``: hard; ``mailbox``: soft), enhanced status and diagnostic.
    It counts through the one bounce rule (``app.bounces.record_bounce``), as a later DSN for it would: with the
    default scores a hard bounce stops sending to the address at once, soft ones add up."""
    record_bounce(
        service, subscriber_id=bounce.subscriber_id, fault=bounce.fault, status=bounce.status or "",
        diagnostic=bounce.diagnostic, source="smtp", delivery_id=bounce.delivery_id, edition_id=bounce.edition_id,
    )  # fmt: skip


class MessageBuilder:
    """Builds each claimed delivery's message: the variant once, then the recipient's parts by substitution.

    The messages are not signed here: the Mailer seals each as it leaves.
    """

    def __init__(self, service: Service) -> None:
        self.service = service
        self.settings = service.settings
        self.mailer = service.mailer
        self.renderer = MailRenderer(service.settings)
        self.keys = signing_keys(service.settings)
        self._editions: dict[int, Edition | None] = {}
        self._posts: dict[int, list[Post]] = {}  # what each edition holds, read once
        self._variants: dict[_VariantKey, RenderedEmail | None] = {}
        self._failures: dict[_VariantKey, str] = {}  # variants that cannot be rendered
        self._sources: dict[int, str] = {}  # each edition's posts and rendering settings, hashed (``_stored_key``)

    def build(self, claims: list[ledger.Claim]) -> list[Outgoing | str]:
        """The message of each claim, or the reason none can be sent; the batch's subscribers in one query."""
        with database.transaction(self.service.engine) as session:
            for edition_id in {claim.edition_id for claim in claims} - set(self._editions):
                self._editions[edition_id] = ledger.edition(session, edition_id)
            wanted = [claim.subscriber_id for claim in claims if claim.subscriber_id is not None]
            found = subscriber_store.subscribers_by_ids(session, wanted)
        return [
            self._build_one(claim, found.get(claim.subscriber_id) if claim.subscriber_id else None) for claim in claims
        ]

    def _build_one(self, claim: ledger.Claim, subscriber: Subscriber | None) -> Outgoing | str:
        edition = self._editions[claim.edition_id]
        if edition is None:
            return "the edition no longer exists"
        if subscriber is None:
            return "the subscriber was removed before sending"
        if subscriber.status != "active":
            return f"the subscriber is {subscriber.status}: not sent"
        try:
            variant = self._variant(edition, subscriber)
        except RenderError as error:
            # Their variant (themes, language) cannot be rendered: their delivery fails alone, with the reason;
            # the others of the batch go on. The failure is kept per variant, so it is not rendered again.
            return f"the digest cannot be rendered for this subscriber: {error}"
        if variant is None:
            return "nothing new for this subscriber's themes"
        links = self.links(edition, subscriber)
        extra = digest_headers(self.settings, links, edition.id, edition.cadence)
        try:
            # No date: the Mailer writes the Date as it hands the message over (never the window's end).
            message = personalised_message(
                self.mailer, variant, to_address=subscriber.email, to_name=subscriber.name, links=links,
                message_key=claim.message_id, extra=extra,
            )  # fmt: skip
        except HeaderInjection as error:  # their name or address cannot go in a header: theirs alone fails
            return f"the message cannot be made for this subscriber: {error}"
        # With [bounces] address, each delivery has an envelope sender of its own: a bounce names its delivery.
        verp = verp_address(self.service, claim.delivery_id) if self.settings.bounces.address else None
        return Outgoing(claim, subscriber.email, message, verp)

    def links(self, edition: Edition, subscriber: Subscriber) -> Links:
        """The subscriber's signed links for this edition. "View online" says the email's language (``lang``): the
        copy it opens is the email itself, in that language, and so is the page that says the link no longer
        works; the preferences and unsubscribe pages follow the subscriber's language as it is when they are
        opened, so their links carry none (see ``mailing.render``)."""
        view = make_token(self.keys, "view", f"{edition.id}/{token_subject(subscriber)}")
        # The query ``with_language`` would make of it (the token, then ``lang``), written at once: parsing the
        # link again for each of a million readers was a twelfth of a sender's CPU.
        query = f"t={quote(view, safe='')}&{LANGUAGE_PARAMETER}={quote(subscriber.language, safe='')}"
        return Links(
            unsubscribe=unsubscribe_url(self.service, subscriber, self.keys),
            preferences=preferences_url(self.service, subscriber, self.keys),
            view_online=f"{self.settings.site.base_url}/editions/{edition.id}?{query}",
        )

    def _variant(self, edition: Edition, subscriber: Subscriber) -> RenderedEmail | None:
        return self.shared_email(edition, subscriber.themes, subscriber.language, reading_of(self.settings, subscriber))

    def shared_email(
        self, edition: Edition, themes: tuple[str, ...] | None, language: str, reading: Reading | None = None
    ) -> RenderedEmail | None:
        """``edition_email`` rendered once for every sender: read from the store when a sender (this one or
        another process) rendered it already from the same inputs, else rendered here and stored. A sender's start
        costs a read per variant instead of rendering every one of them again.

        The stored copy is keyed by what it follows from (``_stored_key``): an edition whose subject, intro or
        posts changed, or a sender whose rendering settings differ, renders and stores its own. A variant that
        cannot be rendered is never stored: RenderError, as from ``edition_email``."""
        key = (edition.id, themes, language, reading)
        if key in self._variants or key in self._failures:
            return self.edition_email(edition, themes, language, reading)
        stored_key = self._stored_key(edition, themes, language, reading)
        with database.transaction(self.service.engine) as session:
            found = ledger.stored_variant(session, edition.id, stored_key)
        if found is not None:
            unsubscribe, preferences, view_online = found.links
            self._variants[key] = None if found.empty else RenderedEmail(
                found.subject, found.preheader, found.html, found.text, found.language,
                Links(unsubscribe, preferences, view_online), found.problems,
            )  # fmt: skip
            return self._variants[key]
        email = self.edition_email(edition, themes, language, reading)
        if email is None:
            kept = ledger.StoredVariant(True, "", "", "", "", language, ("", "", ""), ())
        else:
            links = (email.links.unsubscribe, email.links.preferences, email.links.view_online)
            kept = ledger.StoredVariant(False, email.subject, email.preheader, email.html, email.text,
                                        email.language, links, email.problems)  # fmt: skip
        with database.transaction(self.service.engine) as session:
            ledger.store_variant(session, edition.id, stored_key, kept, self.service.clock())
        return email

    def _stored_key(
        self, edition: Edition, themes: tuple[str, ...] | None, language: str, reading: Reading | None
    ) -> str:
        """What a stored variant follows from, as a SHA-256: the readers' themes, language and reading, the
        edition's subject and intro, its posts as they read now and the settings the renderer reads."""
        if edition.id not in self._sources:
            if edition.id not in self._posts:
                self._posts[edition.id] = held_posts(self.service, edition)
            settings = self.settings
            source = repr((self._posts[edition.id], settings.site, settings.digest, settings.mail,
                           settings.theme_list))  # fmt: skip
            self._sources[edition.id] = hashlib.sha256(source.encode("utf-8")).hexdigest()
        shown = repr((themes, language, reading, edition.subject, edition.intro, self._sources[edition.id]))
        return hashlib.sha256(shown.encode("utf-8")).hexdigest()

    def edition_email(
        self, edition: Edition, themes: tuple[str, ...] | None, language: str, reading: Reading | None = None
    ) -> RenderedEmail | None:
        """The edition's email as it is sent to readers of ``themes`` (None: everything) in ``language`` who
        choose posts by language with ``reading`` (None: every post), with placeholder links
        (``.personalised(links)`` puts a reader's in); None when it holds nothing for them. Rendered once per
        variant, from the posts the edition recorded when it was made (late ones included):
        the editor's preview, "view in browser" and the public copy show exactly this, whatever came later.

        Raises RenderError when the variant cannot be rendered (a language the renderer refuses, a template that
        fails): once per variant, the same reason again after that without rendering it anew."""
        key = (edition.id, themes, language, reading)
        if key in self._failures:
            raise RenderError(self._failures[key])
        if key not in self._variants:
            if edition.id not in self._posts:
                self._posts[edition.id] = held_posts(self.service, edition)
            digest = compose_posts(
                self.settings, self._posts[edition.id], edition.since, edition.until, themes, reading=reading
            )
            if digest is None:
                self._variants[key] = None
            else:
                try:
                    rendered = self.renderer.render_digest(digest, language, intro=edition.intro or None)
                except Exception as error:  # any: one variant's failure must not fail the batch it is in
                    known = isinstance(error, RenderError)
                    reason = str(error) if known else f"rendering failed ({type(error).__name__}: {error})"
                    self._failures[key] = reason
                    followed = "everything" if themes is None else ", ".join(themes) or "nothing"
                    log.error(
                        "edition %d: the variant for %s in %r cannot be rendered: %s",
                        edition.id, followed, language, reason, exc_info=not known,
                        extra={"event": "variant-unrenderable", "edition": edition.id},
                    )  # fmt: skip
                    raise RenderError(reason) from error
                if edition.subject:
                    rendered = RenderedEmail(edition.subject, rendered.preheader, rendered.html, rendered.text,
                                             rendered.language, rendered.links, rendered.problems)  # fmt: skip
                self._variants[key] = rendered
        return self._variants[key]


def check_sending(settings: Settings) -> None:
    """Refuse (ConfigError) what would fail every message: no signing key for the links in every digest, or a
    DKIM key that cannot be read. Checked before an edition is made or a service starts sending."""
    signing_keys(settings)
    Mailer(settings).check()


def notify_editors(service: Service, plan: SendPlan) -> list[str]:
    """Email ``[digest] approval_emails`` that the plan's draft edition waits for approval, with a preview link.

    Returns one line per editor who could not be reached (the draft stays a draft; it is reported, not sent).
    """
    settings = service.settings
    edition = plan.edition
    assert edition is not None
    if edition.status != EditionStatus.DRAFT or not plan.queued:  # an empty window makes no draft to approve
        return []
    base = settings.site.base_url
    preview_url = f"{base}/editor/editions/{edition.id}"
    context = {
        "cadence": edition.cadence,
        "since": f"{edition.since:%Y-%m-%d %H:%M} UTC",
        "until": f"{edition.until:%Y-%m-%d %H:%M} UTC",
        "recipients": plan.queued,
        "preview_url": preview_url,
        "approve_command": f"syndication editions approve {edition.id}",
    }
    links = Links(unsubscribe=f"{base}/", preferences=f"{base}/", view_online=preview_url)
    email = MailRenderer(settings).render_notice("approval", settings.site.language, context, links)
    problems = []
    for address in settings.digest.approval_emails:
        try:
            send_notice(service, email, address, "", f"approval.{edition.id}")
        except SyndicationError as error:
            problems.append(f"{address}: {error}")
    return problems


def notify_paused(service: Service, edition_id: int, reason: str) -> list[str]:
    """Email ``[digest] approval_emails`` that the sender paused edition ``edition_id`` because of ``reason``, with
    a link to it and the command that resumes it. Returns one line per editor who could not be reached (the relay
    that refused the edition may well refuse this too); nothing is raised for that."""
    settings = service.settings
    if not settings.digest.approval_emails:
        return []
    edition = find_edition(service, edition_id)
    if edition is None:
        return []
    base = settings.site.base_url
    edition_url = f"{base}/editor/editions/{edition.id}"
    context = {
        "cadence": edition.cadence,
        "since": f"{edition.since:%Y-%m-%d %H:%M} UTC",
        "until": f"{edition.until:%Y-%m-%d %H:%M} UTC",
        "reason": reason,
        "edition_url": edition_url,
        "resume_command": f"syndication editions resume {edition.id}",
    }
    links = Links(unsubscribe=f"{base}/", preferences=f"{base}/", view_online=edition_url)
    try:
        email = MailRenderer(settings).render_notice("paused", settings.site.language, context, links)
    except SyndicationError as error:
        return [f"the notice could not be made: {error}"]
    problems = []
    for address in settings.digest.approval_emails:
        try:
            send_notice(service, email, address, "", f"paused.{edition.id}")
        except SyndicationError as error:
            problems.append(f"{address}: {error}")
    return problems


# --- Editions as editors see and control them --------------------------------------------------------------------


class NoSuchEdition(SyndicationError):
    """No edition has this id."""

    def __init__(self, edition_id: int) -> None:
        super().__init__(f"no edition {edition_id}")
        self.edition_id = edition_id


@dataclass(frozen=True)
class EditionReport:
    """An edition with its deliveries per status, why those that did not go (yet) did not (``reasons``: status →
    normalised reason → how many, by ``group_reasons``: {"bounced": {"550 RCPT TO refused by …: 5.1.1 …": 2}})
    and, when asked for, each of those deliveries."""

    edition: Edition
    deliveries: dict[str, int]
    problems: list[DeliveryProblem] = field(default_factory=list)
    reasons: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def actions(self) -> list[EditionAction]:
        """What may be done to the edition now."""
        return [action for action, (before, _) in TRANSITIONS.items() if self.edition.status in before]

    @property
    def editable(self) -> bool:
        """True when its subject and intro may still change."""
        return self.edition.status in EDITABLE


def find_edition(service: Service, edition_id: int) -> Edition | None:
    """The edition with this id, if there is one."""
    with database.transaction(service.engine) as session:
        return ledger.edition(session, edition_id)


def edition_report(service: Service, edition_id: int, *, with_problems: bool = False) -> EditionReport:
    """The edition, its deliveries per status, the grouped reasons of those that did not go and
    (``with_problems``) each of them; NoSuchEdition."""
    with database.transaction(service.engine) as session:
        edition = ledger.edition(session, edition_id)
        if edition is None:
            raise NoSuchEdition(edition_id)
        return _report(session, edition, with_problems=with_problems)


def list_editions(service: Service, limit: int = 50) -> list[EditionReport]:
    """The newest editions first, each with its deliveries per status and the grouped reasons of its problems."""
    with database.transaction(service.engine) as session:
        return [_report(session, edition) for edition in ledger.editions(session, limit=limit)]


def _report(session: Session, edition: Edition, *, with_problems: bool = False) -> EditionReport:
    # One way to report an edition for the list, its page and its progress, so that they never disagree.
    # Sorted first so that the statuses come in the same order on every database (the grouping keeps it).
    reasons = group_reasons(sorted(ledger.problem_details(session, edition.id)))
    problems = ledger.problems(session, edition.id) if with_problems else []
    return EditionReport(edition, ledger.progress(session, edition.id), problems, reasons)


def sent_editions(service: Service, limit: int) -> list[Edition]:
    """The sent editions among the newest ``limit``, newest first (the public archive)."""
    with database.transaction(service.engine) as session:
        return ledger.editions(session, limit=limit, statuses=(EditionStatus.SENT,))


def change_edition(
    service: Service, edition_id: int, action: EditionAction, *, actor: str
) -> tuple[Edition, EditionStatus]:
    """Approve, pause, resume or cancel an edition as ``actor`` (recorded in the audit log with the change);
    returns it as it was and its new status.

    An editor's action clears the reason the sender paused it for; resuming sends what was held back then.
    Cancelling an edition of which no message may have reached anyone lets the next edition of its cadence take
    its posts, so they still reach every reader once. Raises NoSuchEdition, or EditionRefused when its status
    does not allow ``action``.
    """
    with database.transaction(service.engine) as session:
        edition = ledger.edition(session, edition_id)
        if edition is None:
            raise NoSuchEdition(edition_id)
        after = next_status(edition, action)
        now = service.clock()
        ledger.set_edition_status(session, edition_id, after, now)
        details = {"from": str(edition.status), "to": str(after)}
        if edition.reason:
            details["reason"] = edition.reason  # why the sender had paused it, cleared by this action
        audit(session, now, actor, f"edition.{action.done}", ("edition", edition_id), **details)
        if action is EditionAction.APPROVE:
            announce_approval(session, now, replace(edition, status=after, reason=""))
        if action is EditionAction.CANCEL:
            progress = ledger.progress(session, edition_id)
            if not any(progress.get(status) for status in _MAY_HAVE_ARRIVED):
                ledger.release_posts(session, edition_id)
    return edition, after


# Deliveries whose message may be in a reader's mailbox: handed over, in flight, with no answer, or cut off.
_MAY_HAVE_ARRIVED = frozenset(
    {DeliveryStatus.SENT, DeliveryStatus.CLAIMED, DeliveryStatus.UNKNOWN, DeliveryStatus.POISONED}
)


@dataclass(frozen=True)
class RetryReport:
    """What ``retry_deliveries`` did: the edition as it was, how many deliveries of each status went back to the
    queue, and the edition's status now (a sent edition is sending again)."""

    edition: Edition
    requeued: dict[str, int]
    status: EditionStatus

    @property
    def total(self) -> int:
        """Deliveries re-queued."""
        return sum(self.requeued.values())


def retry_deliveries(
    service: Service, edition_id: int, statuses: Collection[DeliveryStatus], *, actor: str
) -> RetryReport:
    """Put the edition's deliveries in ``statuses`` (of poisoned, failed, unknown) back in the queue once an
    operator has mended what stopped them: due now, attempts and crashes reset, the same Message-ID (a receiver
    that has a copy can drop this one); a sent edition goes back to sending. Running it again re-queues nothing
    more. A retry that re-queued something is recorded in the audit log as ``actor``'s. Raises NoSuchEdition,
    EditionRefused for a draft or cancelled edition, SyndicationError for a status that cannot be retried."""
    wrong = [str(status) for status in statuses if status not in RETRYABLE_DELIVERIES]
    if wrong or not statuses:
        raise SyndicationError(
            f"cannot retry deliveries that are {', '.join(wrong) or 'nothing'}"
            f" (one or more of: {', '.join(RETRYABLE_DELIVERIES)})"
        )
    now = service.clock()
    with database.transaction(service.engine) as session:
        edition = ledger.edition(session, edition_id)
        if edition is None:
            raise NoSuchEdition(edition_id)
        after = reopen_for_retry(edition)
        requeued = ledger.requeue(session, edition_id, sorted(statuses), now)
        if requeued and after != edition.status:
            ledger.set_edition_status(session, edition_id, after, now, only_from=edition.status)
        if requeued:
            audit(session, now, actor, EDITION_RETRIED, ("edition", edition_id), requeued=dict(requeued),
                  **{"from": str(edition.status), "to": str(after)})  # fmt: skip
    return RetryReport(edition, requeued, after if requeued else edition.status)


def set_edition_text(service: Service, edition_id: int, *, subject: str, intro: str, actor: str) -> bool:
    """Set the subject and intro of a draft or paused edition as ``actor`` (the audit log keeps both texts,
    before and after); False when they were already these.

    Raises NoSuchEdition, or EditionRefused when the edition is being sent or is over.
    """
    with database.transaction(service.engine) as session:
        edition = ledger.edition(session, edition_id)
        if edition is None:
            raise NoSuchEdition(edition_id)
        check_editable(edition)
        if (edition.subject, edition.intro) == (subject, intro):
            return False
        ledger.set_edition_text(session, edition_id, subject=subject, intro=intro)
        audit(
            session, service.clock(), actor, EDITION_TEXT_CHANGED, ("edition", edition_id),
            old={"subject": edition.subject, "intro": edition.intro}, new={"subject": subject, "intro": intro},
        )  # fmt: skip
    return True


# --- Reading an edition as its readers get it --------------------------------------------------------------------


def edition_email(
    service: Service, edition: Edition, themes: tuple[str, ...] | None, language: str
) -> RenderedEmail | None:
    """The edition's email for readers of ``themes`` (None: everything) in ``language``, with placeholder links;
    None when it holds nothing for them. Exactly what the sender sends (its renderer and variants)."""
    return MessageBuilder(service).edition_email(edition, themes, language)


def reader_copy(service: Service, edition: Edition, token: str) -> RenderedEmail | None:
    """The copy a "view in browser" link shows its reader, with their own links; None when the reader was erased
    or the edition holds nothing for them. Raises TokenError for a link that is not valid for this edition."""
    reader = reader_of_view_link(service, edition.id, token)
    if reader is None:
        return None
    builder = MessageBuilder(service)
    email = builder.edition_email(edition, reader.themes, reader.language, reading_of(service.settings, reader))
    return email.personalised(builder.links(edition, reader)) if email is not None else None


def public_copy(service: Service, edition: Edition) -> RenderedEmail | None:
    """The public copy of a sent edition (everything, in the site's language), its links leading to the site."""
    if edition.status != EditionStatus.SENT:
        return None
    email = MessageBuilder(service).edition_email(edition, None, default_language(service.settings))
    if email is None:
        return None
    base = service.settings.site.base_url
    links = Links(
        unsubscribe=f"{base}/subscribe", preferences=f"{base}/subscribe", view_online=f"{base}/editions/{edition.id}"
    )
    return email.personalised(links)


def send_test(
    service: Service,
    edition_id: int,
    address: str,
    themes: tuple[str, ...] | None,
    language: str,
    *,
    actor: str,
) -> RenderedEmail | None:
    """Send the edition, as readers of ``themes`` in ``language`` get it, to ``address``, with preview links,
    through the service's Mailer (DKIM-signed when configured).

    Returns what was sent, or None when the edition holds nothing for those readers (nothing is sent). Raises
    NoSuchEdition, DeliveryError when the relay refuses it, ConfigError when sending is not configured.

    Once the relay took it, the audit log records ``actor``'s test with the address as given: an editor's test
    goes to the team's own mailboxes, and where a copy of an unsent edition went is what an auditor asks.
    """
    edition = find_edition(service, edition_id)
    if edition is None:
        raise NoSuchEdition(edition_id)
    email = edition_email(service, edition, themes, language)
    if email is None:
        return None
    key = f"test.{edition_id}.{secrets.token_hex(6)}"
    message = personalised_message(
        service.mailer, email, to_address=address, to_name="", links=preview_links(service.settings),
        date=service.clock(), message_key=key, extra=(("X-Syndication-Test", f"edition {edition_id}"),),
    )  # fmt: skip
    service.mailer.send(address, message)
    with database.transaction(service.engine) as session:  # mail leaves no transaction: recorded once it left
        audit(
            session, service.clock(), actor, EDITION_TEST_SENT, ("edition", edition_id), to=address,
            themes=None if themes is None else list(themes), language=language,
        )  # fmt: skip
    return email
