"""The outgoing queue of notices: a confirmation, a rejoin link, a change of preferences, queued where they are
asked for and sent by a drain, so that a web request returns once what it changed is stored.

``queue_notice`` stores a notice (inside the caller's transaction when given a session: the subscribe form
stores the subscriber and its confirmation together). ``drain_notices`` claims the due ones (leases, as the
deliveries' are: several drains at once on PostgreSQL, one notice to one of them), renders each at send time
from the subscriber as they are then (their language, name, address and links) and what was stored with it
(``context``), and sends it through the service's Mailer over one connection. Each outcome is recorded in a
transaction of its own:

- sent;
- queued again after a temporary refusal (4xx, a dropped connection, or a refusal of our side or our settings,
  which would refuse the next ones too: the drain stops there), with the deliveries' backoff
  (``[delivery] retry_initial_seconds`` doubling up to ``retry_max_seconds``), until ``retry_deadline_hours``
  after it was queued: then failed, saying so;
- failed on a permanent refusal (5xx), with the reply;
- failed without sending, "skipped: ...", when the subscriber's status is no longer the one it was queued for
  (a confirmation to someone who confirmed or left since, a rejoin link to someone who came back). A notice of a
  subscriber erased since is gone with them (the store cascades).

Confirmations and rejoin links are the same message for every recipient but their link: each language's is
rendered once per ``NoticeRenderer`` (premailer is slow) and personalised by substitution, as digests are. A
change of preferences says what the subscriber receives from then on in one sentence of their language
(``preferences_summary``: the cadence in its words, the language by its own name, the themes by their names in
it), written as it is sent from the subscriber as they are then; the English ``summary`` older notices were
queued with is not read.
``NoticeWorker`` is the drain of a web process: one thread, woken when something is queued, polling too.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final

from sqlalchemy.orm import Session

from syndication.app.digests import personalised_message
from syndication.app.service import Service
from syndication.app.subscribers import confirm_url, home_url, preferences_url, rejoin_url, unsubscribe_url
from syndication.config import Settings
from syndication.core.models import Subscriber, Theme
from syndication.delivery.transport import Transport
from syndication.errors import (
    ConfigError,
    DeliveryError,
    PermanentDeliveryError,
    SendingSideError,
    SyndicationError,
)
from syndication.mailing.render import PLACEHOLDERS, Links, MailRenderer, RenderedEmail
from syndication.store import database, form_emails
from syndication.store import notices as store
from syndication.store import subscribers as subscriber_store

log = logging.getLogger(__name__)

#: The kinds of notice a drain sends, each to a subscriber: its template and the status it is sent in.
KINDS: Final = ("confirm", "rejoin", "preferences")
#: Sent and failed notices are kept this long, then pruned by a drain.
KEPT_DAYS: Final = 30
AUTO_SUBMITTED: Final = (("Auto-Submitted", "auto-generated"),)


@dataclass
class NoticeReport:
    """What a drain did: notices sent, queued again for later, failed (refused or out of time), skipped (their
    subscriber's status changed since), and claims lost to another drain (a lease that ran out)."""

    sent: int = 0
    deferred: int = 0
    failed: int = 0
    skipped: int = 0
    lost_leases: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def handled(self) -> int:
        """Notices this drain dealt with."""
        return self.sent + self.deferred + self.failed + self.skipped

    @property
    def summary(self) -> str:
        """One line for a log."""
        return f"{self.sent} sent, {self.deferred} deferred, {self.failed} failed, {self.skipped} skipped"


def queue_notice(
    target: Session | Service,
    kind: str,
    subscriber_id: int,
    address: str,
    context: Mapping[str, Any] | None = None,
    *,
    now: datetime | None = None,
) -> int:
    """Queue a notice of ``kind`` (one of KINDS) to the subscriber ``subscriber_id`` at ``address``; returns its
    id. ``context`` is stored with it: ``status`` (the subscriber's status it is meant for; it is not sent once
    that changed) and ``cap`` (the subscribe form's daily cap of emails to one address). In a transaction of its
    own when ``target`` is the service; inside the caller's when it is a session (then ``now``, the service's
    clock, is needed)."""
    if kind not in KINDS:
        raise ValueError(f"unknown kind of notice {kind!r} (one of {', '.join(KINDS)})")
    if isinstance(target, Service):
        with store.write_turn(target.engine), database.transaction(target.engine) as session:
            return store.queue(
                session, kind, address, context or {}, now or target.clock(), subscriber_id=subscriber_id
            )
    if now is None:
        raise ValueError("queue_notice in a caller's session needs now (the service's clock)")
    return store.queue(target, kind, address, context or {}, now, subscriber_id=subscriber_id)


def notice_counts(service: Service) -> dict[str, int]:
    """Notices per status (queued, claimed, sent, failed)."""
    with database.transaction(service.engine) as session:
        return store.counts(session)


class NoticeRenderer:
    """Renders notices for one site; confirmations and rejoin links once per language, then by substitution."""

    def __init__(self, service: Service) -> None:
        self.settings = service.settings
        self._renderer = MailRenderer(service.settings)
        self._variants: dict[str, RenderedEmail] = {}
        self._lock = threading.Lock()

    def link_notice(self, language: str, url: str) -> tuple[RenderedEmail, Links]:
        """The confirmation (or rejoin) email in ``language`` with its placeholders, and the links that replace
        them for a recipient whose link is ``url``: the shared layout's other links lead to the site's home page,
        in ``language``."""
        with self._lock:
            variant = self._variants.get(language)
            if variant is None:
                variant = self._renderer.render_notice(
                    "confirm", language, {"confirm_url": PLACEHOLDERS.unsubscribe}, PLACEHOLDERS
                )
                self._variants[language] = variant
        home = home_url(self.settings, language)
        return variant, Links(unsubscribe=url, preferences=home, view_online=home)

    def render(self, name: str, language: str, context: Mapping[str, Any], links: Links) -> RenderedEmail:
        """Any notice, rendered for one recipient."""
        with self._lock:
            return self._renderer.render_notice(name, language, context, links)

    def summary(self, subscriber: Subscriber) -> str:
        """What ``subscriber`` receives now, in their language: ``preferences_summary``."""
        with self._lock:
            return preferences_summary(self.settings, subscriber, self._renderer)


def preferences_summary(settings: Settings, subscriber: Subscriber, renderer: MailRenderer | None = None) -> str:
    """What ``subscriber`` receives, in one sentence of their language ("Un resumen semanal en español: Acción
    climática y Resiliencia."): their cadence in its words, their language by its own name, the themes they follow
    by their names in it (a theme no longer configured by its slug). RenderError for a language the emails are not
    written in (not in ``[digest] languages``)."""
    by_slug = {theme.slug: theme for theme in settings.theme_list}
    themes = (
        None
        if subscriber.themes is None
        else tuple(by_slug.get(slug) or Theme(slug, slug) for slug in subscriber.themes)
    )
    return (renderer or MailRenderer(settings)).subscription_summary(subscriber.language, subscriber.cadence, themes)


def drain_notices(
    service: Service,
    *,
    limit: int | None = None,
    owner: str | None = None,
    stop: threading.Event | None = None,
    renderer: NoticeRenderer | None = None,
) -> NoticeReport:
    """Send the due notices (at most ``limit``; None: until none is due), one outcome per transaction; returns
    what was done. ``stop`` set: claims not yet sent go back to the queue and the drain returns."""
    return _Drain(service, owner, stop, renderer).run(limit)


class _Drain:
    def __init__(
        self, service: Service, owner: str | None, stop: threading.Event | None, renderer: NoticeRenderer | None
    ) -> None:
        self.service = service
        self.config = service.settings.delivery
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident()}:notices"
        self.stop = stop or threading.Event()
        self.renderer = renderer
        self.report = NoticeReport()
        self.connection: Transport | None = None

    def run(self, limit: int | None) -> NoticeReport:
        left = limit
        halted = False
        try:
            while not halted and not self.stop.is_set() and (left is None or left > 0):
                batch = self.config.batch_size if left is None else min(left, self.config.batch_size)
                with self._writing() as session:
                    claims = store.claim(
                        session, self.owner, self.service.clock(),
                        lease=timedelta(seconds=self.config.lease_seconds), limit=batch,
                    )  # fmt: skip
                if not claims:
                    break
                if left is not None:
                    left -= len(claims)
                for number, notice in enumerate(claims):
                    if halted or self.stop.is_set():
                        self._give_back([claim.notice_id for claim in claims[number:]])
                        break
                    halted = self._one(notice)
        finally:
            if self.connection is not None:
                try:
                    self.connection.close()
                except Exception:  # closing politely; a dead connection has nothing to close
                    log.debug("closing the notices' connection failed", exc_info=True)
        if self.report.handled:
            with self._writing() as session:
                store.prune(session, self.service.clock() - timedelta(days=KEPT_DAYS))
        return self.report

    def _one(self, notice: store.ClaimedNotice) -> bool:
        """Send one notice and record its outcome; True when the drain should stop (our side was refused)."""
        cap = notice.context.get("cap")
        counted = isinstance(cap, int) and notice.attempts == 0  # counted once, before its first attempt
        with self._writing() if counted else database.transaction(self.service.engine) as session:
            subscriber = (
                subscriber_store.subscriber_by_id(session, notice.subscriber_id)
                if notice.subscriber_id is not None
                else None
            )
            left_at = (
                subscriber_store.status_since(session, subscriber.id)
                if subscriber is not None and notice.kind == "rejoin"
                else None
            )
            expected = notice.context.get("status")
            due = subscriber is not None and (expected is None or subscriber.status == expected)
            within_cap = (
                form_emails.reserve(session, subscriber.email, self.service.clock().date(), cap)
                if counted and due and subscriber is not None and isinstance(cap, int)
                else True
            )
        if subscriber is None:
            self._record(notice, store.FAILED, "skipped: the subscriber was erased", counter="skipped")
            return False
        if not due:
            self._record(
                notice, store.FAILED, f"skipped: the subscriber is {subscriber.status} now, not {expected}",
                counter="skipped",
            )  # fmt: skip
            return False
        if not within_cap:
            detail = f"skipped: the address had its {cap} emails from the subscribe form today"
            self._record(notice, store.FAILED, detail, counter="skipped")
            return False
        try:
            message = self._message(notice, subscriber, left_at)
            if self.connection is None:
                self.connection = self.service.mailer.connect()
            self.service.mailer.send(subscriber.email, message, connection=self.connection)
        except (SendingSideError, ConfigError) as error:
            # Our side or our settings: every notice would meet it. Later, and none more in this drain.
            self._later(notice, error)
            return True
        except PermanentDeliveryError as error:
            self._record(notice, store.FAILED, f"refused: {error}", counter="failed")
        except DeliveryError as error:
            self._later(notice, error)
        except SyndicationError as error:  # a template that cannot be rendered, a link that cannot be made
            self._record(notice, store.FAILED, f"not sent: {error}", counter="failed")
        else:
            self._record(notice, store.SENT, "", counter="sent")
        return False

    def _message(self, notice: store.ClaimedNotice, subscriber: Subscriber, left_at: datetime | None) -> bytes:
        service = self.service
        renderer = self.renderer or NoticeRenderer(service)
        self.renderer = renderer
        if notice.kind in ("confirm", "rejoin"):
            if notice.kind == "confirm":
                url = confirm_url(service, subscriber)
            else:
                if left_at is None:
                    raise SyndicationError("the subscriber's departure is not recorded: no rejoin link")
                url = rejoin_url(service, subscriber, left_at)
            variant, links = renderer.link_notice(subscriber.language, url)
        elif notice.kind == "preferences":
            links = Links(
                unsubscribe=unsubscribe_url(service, subscriber),
                preferences=preferences_url(service, subscriber),
                view_online=home_url(service.settings, subscriber.language),
            )
            # Written now, in their language, from what they receive now (not the English line queued with it).
            summary = renderer.summary(subscriber)
            variant = renderer.render("preferences", subscriber.language, {"summary": summary}, links)
        else:
            raise SyndicationError(f"unknown kind of notice {notice.kind!r}")
        return personalised_message(
            service.mailer, variant, to_address=subscriber.email, to_name=subscriber.name, links=links,
            date=service.clock(), message_key=f"{notice.kind}.{subscriber.id}.n{notice.notice_id}",
            extra=AUTO_SUBMITTED,
        )  # fmt: skip

    def _later(self, notice: store.ClaimedNotice, error: SyndicationError) -> None:
        now = self.service.clock()
        wait = min(self.config.retry_initial_seconds * 2**notice.attempts, self.config.retry_max_seconds)
        deadline = notice.created_at + timedelta(hours=self.config.retry_deadline_hours)
        if now + timedelta(seconds=wait) > deadline:
            self._record(notice, store.FAILED, f"gave up after the deadline: {error}", counter="failed")
            return
        self._record(
            notice,
            store.QUEUED,
            f"temporary: {error}",
            counter="deferred",
            next_attempt_at=now + timedelta(seconds=wait),
        )

    def _record(
        self,
        notice: store.ClaimedNotice,
        status: str,
        detail: str,
        *,
        counter: str,
        next_attempt_at: datetime | None = None,
    ) -> None:
        with self._writing() as session:
            kept = store.record(
                session, notice.notice_id, self.owner, self.service.clock(), status, detail=detail,
                next_attempt_at=next_attempt_at,
            )  # fmt: skip
        if not kept:
            self.report.lost_leases += 1
            return
        setattr(self.report, counter, getattr(self.report, counter) + 1)
        if counter in ("failed", "deferred") or detail.startswith("skipped"):
            line = f"notice {notice.notice_id} ({notice.kind}): {detail}"
            self.report.problems.append(line)
            log.log(logging.WARNING if counter == "failed" else logging.INFO, "%s", line)

    def _give_back(self, notice_ids: list[int]) -> None:
        with self._writing() as session:
            store.release(session, notice_ids, self.owner)

    @contextlib.contextmanager
    def _writing(self) -> Iterator[Session]:
        engine = self.service.engine
        with store.write_turn(engine), database.transaction(engine) as session:
            yield session


class NoticeWorker:
    """The notices' drain of a web process: one thread, woken by ``wake`` (something was queued) and every
    ``poll_seconds`` (retries come due; another process queued). ``service`` opens the store; ``is_open`` says
    whether it is open already: polls drain only an open store (a web app that serves feeds alone opens none),
    unless ``eager`` (``syndication serve``: notices left queued by an earlier run are sent from the start)."""

    def __init__(
        self,
        service: Callable[[], Service],
        is_open: Callable[[], bool],
        *,
        poll_seconds: float = 5.0,
        eager: bool = False,
    ) -> None:
        self._service = service
        self._is_open = is_open
        self._poll = poll_seconds
        self._eager = eager
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._renderer: NoticeRenderer | None = None
        self._lock = threading.Lock()

    def start(self) -> None:
        """Start the thread (once)."""
        with self._lock:
            if self._thread is None:
                self._stop.clear()
                self._thread = threading.Thread(target=self._run, name="notices", daemon=True)
                self._thread.start()

    def wake(self) -> None:
        """Something was queued: drain now."""
        self._wake.set()

    def stop(self, timeout: float = 10.0) -> None:
        """Finish the notice in hand, give the other claims back and stop."""
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is None:
            return
        self._stop.set()
        self._wake.set()
        thread.join(timeout)

    def _run(self) -> None:
        woken = self._eager
        failures = 0
        while not self._stop.is_set():
            if woken or self._is_open():
                try:
                    service = self._service()
                    if self._renderer is None:
                        self._renderer = NoticeRenderer(service)
                    report = drain_notices(service, stop=self._stop, renderer=self._renderer)
                    failures = 0
                    if report.handled:
                        log.info("notices: %s", report.summary)
                except Exception:  # the store or the templates: said, and tried again later
                    failures += 1
                    log.exception("notices: the drain failed")
            wait = self._poll * min(2**failures, 12)
            woken = self._wake.wait(wait)
            self._wake.clear()
