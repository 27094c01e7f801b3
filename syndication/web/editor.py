"""The editor's pages, behind a sign-in: the dashboard, and each edition as it will be sent, with its controls.

An editor looks at the edition exactly as subscribers will get it (``edition_email``: the sender's own renderer
and variants) at desktop and phone widths, as one subscriber or a theme set and language; fixes the subject and
intro of a draft or paused edition; sends a test to an address; approves, pauses, resumes or cancels it
(``syndication.core.editions``, the command line's rules); and watches the delivery. An edition the sender paused
(the relay refused our side, or the breaker tripped) shows the reason on its page and on the dashboard. Approving
or resuming starts sending from this process (``[web] send_on_approve``), so a site without the scheduler running
still sends.
Every use case is ``syndication.app``'s; a refusal it raises is answered by the app's one error handler, except
where the edition page is shown again with the refusal beside the form.

Every post needs the CSRF token; every page but the sign-in needs a session, and sends to the sign-in page
without one. Form handlers redirect after success (303), so reloading a page never posts twice.

The pages are worded in the editor's language (``web.languages``: ``?lang=``, which the pages' links, forms and
redirects carry on, else Accept-Language), a refusal of the edition state machine too (``edition_refusal``).
What the mail servers say (a paused edition's reason, bounce diagnostics) is shown as they said it.
"""

from __future__ import annotations

import functools
import logging
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import urlencode

from markupsafe import escape
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from syndication.app.audit import MAX_LIMIT as AUDIT_EXPORT_LIMIT
from syndication.app.audit import audit_events
from syndication.app.bounces import (
    bounce_score,
    edition_bounces,
    list_inbound,
    recent_bounces,
    subscriber_bounces,
)
from syndication.app.dashboard import dashboard
from syndication.app.digests import preview_links
from syndication.app.editions import (
    NoSuchEdition,
    change_edition,
    deliver,
    edition_email,
    edition_report,
    find_edition,
    open_sender,
    set_edition_text,
)
from syndication.app.editions import send_test as send_test_email
from syndication.app.posts import parse_timestamp
from syndication.app.service import Service
from syndication.app.subscribers import (
    SubscriberError,
    check_language,
    default_language,
    find_subscriber,
    normalise_email,
    parse_themes,
)
from syndication.app.team import authenticate, list_people, start_session
from syndication.core.audit import (
    EDITION_RETRIED,
    EDITION_TEST_SENT,
    EDITION_TEXT_CHANGED,
    PERSON_ROLE_CHANGED,
    SUBSCRIBER_REACTIVATED,
    AuditEvent,
)
from syndication.core.editions import NOTHING_NEW, EditionAction, EditionRefused
from syndication.core.models import (
    CADENCES,
    FINAL_DELIVERIES,
    GIVEN_UP_DELIVERIES,
    SUBSCRIBER_STATUSES,
    DeliveryStatus,
    Edition,
    EditionStatus,
)
from syndication.core.team import Access, Role, SignedIn
from syndication.errors import DeliveryError, SenderBusy, SyndicationError
from syndication.web import convertors  # noqa: F401  (registers the row_id path type the routes use)
from syndication.web.access import OPEN, ROLE_NAMES, Gate, signed_in
from syndication.web.errors import PageError, edition_refusal
from syndication.web.forms import FORM_EXPIRED, Form
from syndication.web.languages import N_, PARAMETER, Words
from syndication.web.limits import site_limit
from syndication.web.subscribe import client_address
from syndication.web.templating import Pages, email_headers

log = logging.getLogger(__name__)

HOUR: Final = 3600.0
MAX_SUBJECT: Final = 200
MAX_INTRO: Final = 5000
PREVIEW_WIDTHS: Final = ((N_("Desktop"), 600), (N_("Phone"), 375))
# The reasons an edition's row on the dashboard shows (the commonest); its own page shows every one.
DASHBOARD_REASONS: Final = 2
_CONTROL: Final = re.compile(r"[\x00-\x1f\x7f\u2028\u2029]")
# What the edition page says after a form worked (``?done=``); worded in the page's language where shown.
NOTICES: Final = {
    "approved": N_("Approved: the edition is sending."),
    "paused": N_("Paused: nothing more is sent until you resume."),
    "resumed": N_("Resumed: the edition is sending again."),
    "cancelled": N_("Cancelled: nothing more of this edition will be sent."),
    "saved": N_("Saved the subject and intro."),
    "unchanged": N_("Nothing changed."),
    "tested": N_("The test was sent."),
}
# Events on a page of the audit log.
AUDIT_PAGE: Final = 50
# What each action of the audit log says on its page (``core.audit``: the names are the store's and the export's).
AUDIT_ACTIONS: Final = {
    "edition.approved": N_("Approved the edition"),
    "edition.paused": N_("Paused the edition"),
    "edition.resumed": N_("Resumed the edition"),
    "edition.cancelled": N_("Cancelled the edition"),
    "edition.text_changed": N_("Changed the subject or intro"),
    "edition.test_sent": N_("Sent a test"),
    "edition.retried": N_("Sent again the deliveries given up on"),
    "subscriber.erased": N_("Erased a subscriber"),
    "subscriber.reactivated": N_("Made a subscriber active again"),
    "token.created": N_("Created an API token"),
    "token.revoked": N_("Revoked an API token"),
    "webhook.added": N_("Added a webhook"),
    "webhook.removed": N_("Removed a webhook"),
    "person.added": N_("Added someone to the team"),
    "person.invited": N_("Invited someone to the team"),
    "person.joined": N_("Joined the team"),
    "person.role_changed": N_("Changed someone's role"),
    "person.removed": N_("Removed someone from the team"),
    "person.password_reset": N_("Chose a new password from a reset link"),
    "person.password_set": N_("Set someone's password"),
    "person.sessions_revoked": N_("Ended someone's sessions"),
}


@dataclass
class Preview:
    """Whom an edition is previewed as: a subscriber, or a theme set (None: everything) and a language."""

    subscriber: str = ""
    themes: tuple[str, ...] | None = None
    language: str = ""
    errors: dict[str, str] = field(default_factory=dict)

    def query(self) -> str:
        """The query string that asks for this preview again."""
        pairs = [("subscriber", self.subscriber)] if self.subscriber else []
        pairs += [("themes", slug) for slug in self.themes or ()]
        pairs.append(("language", self.language))
        return urlencode(pairs)


class Deliveries:
    """Background senders started by approving or resuming an edition: one thread per edition at a time."""

    def __init__(self, service: Callable[[], Service]) -> None:
        self.service = service
        self._lock = threading.Lock()
        self._threads: dict[int, threading.Thread] = {}
        self._stops: dict[int, threading.Event] = {}  # each running sender's stop: set, it stops after its batch

    def start(self, edition_id: int) -> None:
        """Start sending ``edition_id`` unless it is being sent from this process already."""
        with self._lock:
            running = self._threads.get(edition_id)
            if running is not None and running.is_alive():
                return
            thread = threading.Thread(target=self._send, args=(edition_id,), name=f"edition-{edition_id}", daemon=True)
            self._threads[edition_id] = thread
            thread.start()

    def _send(self, edition_id: int) -> None:
        service = self.service()
        sender = open_sender(service)
        with self._lock:
            self._stops[edition_id] = sender.stop
        try:
            report = deliver(service, edition_id=edition_id, sender=sender)
            log.info(
                "edition %d: %d sent, %d deferred, %d failed, %d bounced",
                edition_id,
                report.sent,
                report.deferred,
                report.failed,
                report.bounced,
            )
        except SenderBusy as error:  # the scheduler's sender has the store: it sends the edition
            log.info("edition %d: left to the sender already running: %s", edition_id, error)
        except SyndicationError as error:
            log.error("edition %d: sending stopped: %s", edition_id, error)
        finally:
            with self._lock:
                self._stops.pop(edition_id, None)

    def wait(self, timeout: float = 30.0) -> None:
        """Wait for the senders running now to finish (tests, and shutdown after ``stop``)."""
        with self._lock:
            threads = list(self._threads.values())
        for thread in threads:
            thread.join(timeout)

    def close(self) -> None:
        """Ask every sender to stop after the messages in hand, and wait for them (app shutdown)."""
        with self._lock:
            for stop in self._stops.values():
                stop.set()
        self.wait(timeout=15.0)


class EditorPages:
    """The editor's pages of one site."""

    def __init__(
        self, service: Callable[[], Service], pages: Pages, gate: Gate, wake_sender: Callable[[], None] | None = None
    ) -> None:
        self.service = service
        self.gate = gate
        self.wake_sender = wake_sender  # under ``syndication run``: its scheduler sends; wake it, start no other
        self.pages = pages
        self.settings = pages.settings
        self.cookies = pages.cookies
        self.logins = site_limit(self.settings, "login", self.settings.web.logins_per_client_per_hour, HOUR)
        self.deliveries = Deliveries(service)

    def routes(self) -> list[Route]:
        """The routes of these pages."""
        route = self.gate.route
        edition = _edition_path
        return [
            route("/editor", self.to_dashboard, method="GET", needs=OPEN),
            route("/editor/login", self.login_page, method="GET", needs=OPEN),
            route("/editor/login", self.login, method="POST", needs=OPEN),
            route("/editor/logout", self.logout, method="POST", needs=OPEN),
            route("/editor/", self.dashboard, method="GET", needs=Access.READ),
            route("/editor/bounces", self.bounces_page, method="GET", needs=Access.READ),
            route("/editor/audit", self.audit_page, method="GET", needs=Access.READ),
            route("/editor/audit.json", self.audit_json, method="GET", needs=Access.READ),
            route("/editor/editions/{edition_id:row_id}", self.edition_page, method="GET", needs=Access.READ),
            route("/editor/editions/{edition_id:row_id}/preview", self.preview, method="GET", needs=Access.READ),
            route("/editor/editions/{edition_id:row_id}/progress.json", self.progress, method="GET", needs=Access.READ),
            route(
                "/editor/editions/{edition_id:row_id}/text",
                self.save_text,
                method="POST",
                needs=Access.EDIT,
                back=edition,
            ),
            route(
                "/editor/editions/{edition_id:row_id}/test",
                self.send_test,
                method="POST",
                needs=Access.EDIT,
                back=edition,
            ),
            route(
                "/editor/editions/{edition_id:row_id}/{action:str}",
                self.control,
                method="POST",
                needs=Access.EDIT,
                back=edition,
            ),
        ]

    # --- Signing in and out -----------------------------------------------------------------------------------

    async def to_dashboard(self, request: Request) -> Response:
        """``/editor`` is ``/editor/``."""
        return RedirectResponse("/editor/", status_code=303)

    async def login_page(self, request: Request) -> Response:
        """The sign-in form (an editor already signed in goes on to the dashboard)."""
        words = self.pages.words(request)
        if await self.cookies.editor(request):
            return RedirectResponse(words.url(_next_page(request.query_params.get("next", ""))), status_code=303)
        notice = words.gettext("You are signed out.") if request.query_params.get("signed_out") else ""
        return await self._login_page(request, request.query_params.get("next", ""), "", {}, notice=notice)

    async def login(self, request: Request) -> Response:
        """Check the name and password; on success set the session cookie and go where the editor was going."""
        words = self.pages.words(request)
        form = await self.pages.form(request)
        name, password, wanted = form.text("name"), form.get("password", ""), form.get("next", "")
        if not self.cookies.csrf_ok(request, form):
            return await self._login_page(request, wanted, name, {"form": words.gettext(FORM_EXPIRED)}, status=403)
        client = client_address(request)
        if not self.logins.allow(client):
            retry = self.logins.retry_after(client)
            minutes = max(1, (retry + 59) // 60)
            raise PageError(
                429,
                words.gettext("Too many attempts"),
                [
                    words.ngettext(
                        "Too many sign-in attempts from your connection: try again in %(num)s minute.",
                        "Too many sign-in attempts from your connection: try again in %(num)s minutes.",
                        minutes,
                    )
                ],
                headers={"Retry-After": str(retry)},
            )
        person = await run_in_threadpool(authenticate, self.service(), name, password)
        if person is None:
            log.warning("editor sign-in refused for %r from %s", name[:100], client)
            refused = {"password": words.gettext("Wrong name or password.")}
            return await self._login_page(request, wanted, name, refused, status=400)
        agent = request.headers.get("user-agent", "")
        session_id = await run_in_threadpool(lambda: start_session(self.service(), person, address=client, agent=agent))
        response = RedirectResponse(words.url(_next_page(wanted)), status_code=303)
        self.cookies.start_session(response, session_id)
        log.info("editor %s signed in from %s", person.name, client)
        return response

    async def logout(self, request: Request) -> Response:
        """Sign out (a post with the CSRF token, so that no other site can sign an editor out)."""
        words = self.pages.words(request)
        form = await self.pages.form(request)
        self._check_csrf(request, form, "/editor/")
        response = RedirectResponse(words.url("/editor/login?signed_out=1"), status_code=303)
        await self.cookies.end_session(request, response)
        return response

    async def _login_page(
        self, request: Request, wanted: str, name: str, errors: dict[str, str], *, status: int = 200, notice: str = ""
    ) -> Response:
        context = {
            "title": self.pages.words_of(request).gettext("Sign in"),
            "next": wanted,
            "name": name,
            "errors": errors,
            "notice": notice,
            "configured": bool(await run_in_threadpool(lambda: list_people(self.service()))),
        }
        return self.pages.render(request, "editor_login.html", context, status=status)

    # --- The audit log ----------------------------------------------------------------------------------------

    async def audit_page(self, request: Request) -> Response:
        """Who did what, and when: newest first, a page at a time (``?before=`` the last id shown)."""
        words = self.pages.words(request)
        editor = signed_in(request)
        before = _cursor(request.query_params.get("before", ""))
        events = await run_in_threadpool(lambda: audit_events(self.service(), limit=AUDIT_PAGE + 1, before_id=before))
        shown = events[:AUDIT_PAGE]
        context = {
            "title": words.gettext("Audit log"),
            "events": [
                (
                    event,
                    words.actor(event.actor),
                    words.gettext(AUDIT_ACTIONS.get(event.action, event.action)),
                    _audit_details(words, event),
                )
                for event in shown
            ],
            "older": shown[-1].id if len(events) > AUDIT_PAGE else None,
            "first_page": before is None,
        }
        return self.pages.render(request, "editor_audit.html", context, editor=editor)

    async def audit_json(self, request: Request) -> Response:
        """The audit log as JSON, newest first: ``{"events": [...], "next_before": id or null}``; ``since`` (ISO
        8601), ``limit`` (1 to 1000, all of them by default) and ``before`` (the next page's cursor)."""
        headers = {"Cache-Control": "no-store"}
        query = request.query_params
        since = None
        if query.get("since"):
            try:
                since = parse_timestamp(query["since"])
            except ValueError:
                return JSONResponse({"error": "since: not an ISO 8601 date or time"}, status_code=400, headers=headers)
        limit = _cursor(query.get("limit", "")) or AUDIT_EXPORT_LIMIT
        if limit > AUDIT_EXPORT_LIMIT:
            return JSONResponse({"error": f"limit: 1 to {AUDIT_EXPORT_LIMIT}"}, status_code=400, headers=headers)
        before = _cursor(query.get("before", ""))
        events = await run_in_threadpool(
            lambda: audit_events(self.service(), since=since, limit=limit, before_id=before)
        )
        body = {
            "events": [event.as_json() for event in events],
            "next_before": events[-1].id if len(events) == limit else None,
        }
        headers["Content-Disposition"] = 'attachment; filename="audit.json"'
        return JSONResponse(body, headers=headers)

    # --- Dashboard --------------------------------------------------------------------------------------------

    async def bounces_page(self, request: Request) -> Response:
        """What came back to the bounce and unsubscribe addresses, the bounces counted, and one subscriber's."""
        words = self.pages.words(request)
        editor = signed_in(request)
        asked = request.query_params.get("subscriber", "").strip()
        context = await run_in_threadpool(self._bounces, words, asked)
        return self.pages.render(request, "editor_bounces.html", context, editor=editor)

    def _bounces(self, words: Words, asked: str) -> dict[str, Any]:
        service = self.service()
        config = self.settings.bounces
        context: dict[str, Any] = {
            "title": words.gettext("Bounces"),
            "bounce_address": config.address,
            "threshold": config.threshold,
            "hard_score": config.hard_score,
            "soft_score": config.soft_score,
            "stale_after_days": config.stale_after_days,
            "bounces": recent_bounces(service, limit=100),
            "inbound": list_inbound(service, limit=100),
            "asked": asked,
            "person": None,
            "errors": {},
        }
        if asked:
            try:
                person = find_subscriber(service, asked)
            except SubscriberError:
                person = None
            if person is None:
                context["errors"] = {
                    "subscriber": words.gettext("There is no subscriber '%(address)s'.", address=asked)
                }
            else:
                context["person"] = person
                context["person_bounces"] = subscriber_bounces(service, person.id)
                context["score"] = bounce_score(service, person.id)
        return context

    async def dashboard(self, request: Request) -> Response:
        """Posts per theme this period, subscribers per theme and cadence, the next editions, the last ones."""
        words = self.pages.words(request)
        editor = signed_in(request)
        context = await run_in_threadpool(self._dashboard, words)
        return self.pages.render(request, "editor_dashboard.html", context, editor=editor)

    def _dashboard(self, words: Words) -> dict[str, Any]:
        board = dashboard(self.service())
        return {
            "title": words.gettext("Dashboard"),
            "upcoming": board.upcoming,
            "themes": self.settings.theme_list,
            "cadences": CADENCES,
            "statuses": SUBSCRIBER_STATUSES,
            "counts": board.subscribers,
            "following": board.following,
            "editions": [
                (report.edition, report.deliveries, *_brief(report.reasons, DASHBOARD_REASONS))
                for report in board.editions
            ],
            "require_approval": self.settings.digest.require_approval,
            "reason_of": functools.partial(_edition_reason, words),
        }

    # --- One edition ------------------------------------------------------------------------------------------

    async def edition_page(self, request: Request) -> Response:
        """The edition as it will be sent, its text, its controls and its delivery."""
        words = self.pages.words(request)
        editor = signed_in(request)
        edition_id: int = request.path_params["edition_id"]
        done = request.query_params.get("done", "")
        notice = words.gettext(NOTICES[done]) if done in NOTICES else ""
        if done == "tested":
            address = _address_or(request.query_params.get("to", ""), "")
            notice = (
                words.gettext("The test was sent to %(address)s.", address=address)
                if address
                else words.gettext("The test was sent to the address given.")
            )
        return await run_in_threadpool(self._edition_page, request, editor, edition_id, notice, {}, 200, None)

    def _edition_page(
        self,
        request: Request,
        editor: SignedIn,
        edition_id: int,
        notice: str,
        errors: dict[str, str],
        status: int,
        values: dict[str, str] | None,
    ) -> Response:
        service = self.service()
        words = self.pages.words_of(request)
        report = edition_report(service, edition_id, with_problems=True)
        edition = report.edition
        preview = self._preview_of(request)
        email = edition_email(service, edition, preview.themes, preview.language)
        text = email.personalised(preview_links(self.settings)).text if email else ""
        context = {
            "title": words.gettext("Edition %(number)s", number=edition.id),
            "edition": edition,
            "preview": preview,
            "email": email,
            "text_part": text,
            "widths": [(words.gettext(label), width) for label, width in PREVIEW_WIDTHS],
            "preview_src": f"/editor/editions/{edition.id}/preview?{preview.query()}",
            "progress": _progress(words, edition, report.deliveries),
            "reason_of": functools.partial(_edition_reason, words),
            "problems": report.problems,
            "reasons": report.reasons,
            # Bounces reported later (DSNs) of deliveries the relay had accepted: the problems above do not show them.
            "reported": [b for b in edition_bounces(service, edition.id) if b.source != "smtp"],
            # A viewer sees the edition as it is, without the controls its role does not allow.
            "actions": report.actions if editor.may(Access.EDIT) else [],
            "editable": report.editable and editor.may(Access.EDIT),
            "notice": notice,
            "errors": {**preview.errors, **errors},
            "values": values or {"subject": edition.subject, "intro": edition.intro, "address": ""},
            "themes": self.settings.theme_list,
            "languages": self.settings.digest.languages,
        }
        return self.pages.render(
            request, "editor_edition.html", context, status=status, editor=editor, headers={"X-Frame-Options": "DENY"}
        )

    async def preview(self, request: Request) -> Response:
        """The edition's HTML email alone (shown in the edition page's frames), with preview links."""
        self.pages.words(request)
        edition_id: int = request.path_params["edition_id"]
        return await run_in_threadpool(self._preview, request, edition_id)

    def _preview(self, request: Request, edition_id: int) -> Response:
        service = self.service()
        edition = find_edition(service, edition_id)
        if edition is None:
            raise NoSuchEdition(edition_id)
        preview = self._preview_of(request)
        email = edition_email(service, edition, preview.themes, preview.language)
        if email is None:
            words = self.pages.words_of(request)
            nothing = escape(words.gettext("Nothing in this edition for these readers: they get no email."))
            html = f'<!doctype html><html lang="{escape(words.language)}"><p>{nothing}</p></html>'
            return HTMLResponse(html, headers=email_headers(private=True))
        return HTMLResponse(email.personalised(preview_links(self.settings)).html, headers=email_headers(private=True))

    async def progress(self, request: Request) -> Response:
        """The delivery counts as JSON, for the edition page's live progress."""
        # The page's script asks with the page's own address's ``lang``: its sentence is in the page's language.
        words = self.pages.words(request)
        headers = (
            {"Cache-Control": "no-store", "Vary": "Accept-Language"}
            if words.negotiated
            else {"Cache-Control": "no-store"}
        )
        edition_id: int = request.path_params["edition_id"]
        try:
            report = await run_in_threadpool(lambda: edition_report(self.service(), edition_id))
        except NoSuchEdition:  # asked for by the page's script: answered in JSON, as every answer here is
            return JSONResponse({"error": f"no edition {edition_id}"}, status_code=404)
        return JSONResponse(_progress(words, report.edition, report.deliveries), headers=headers)

    async def save_text(self, request: Request) -> Response:
        """Save the subject and intro of a draft or paused edition."""
        editor, edition_id, form = await self._checked_post(request)
        words = self.pages.words_of(request)
        subject = " ".join(form.get("subject", "").split())
        intro = form.get("intro", "").replace("\r\n", "\n").strip()
        errors = {}
        if len(subject) > MAX_SUBJECT or _CONTROL.search(subject):
            errors["subject"] = words.gettext("Subject: one line of at most %(most)s characters.", most=MAX_SUBJECT)
        if len(intro) > MAX_INTRO or _CONTROL.search(intro.replace("\n", "")):
            errors["intro"] = words.gettext("Intro: at most %(most)s characters of text.", most=MAX_INTRO)
        if errors:
            values = {"subject": subject, "intro": intro, "address": ""}
            return await run_in_threadpool(self._edition_page, request, editor, edition_id, "", errors, 400, values)

        try:
            changed = await run_in_threadpool(
                lambda: set_edition_text(self.service(), edition_id, subject=subject, intro=intro, actor=editor.actor)
            )
        except EditionRefused as error:  # shown beside the form, the text as the editor wrote it
            values = {"subject": subject, "intro": intro, "address": ""}
            refusal = {"form": edition_refusal(error, words)}
            return await run_in_threadpool(self._edition_page, request, editor, edition_id, "", refusal, 409, values)
        if changed:
            log.info("editor %s changed the text of edition %d", editor.name, edition_id)
        return self._back(edition_id, "saved" if changed else "unchanged", request)

    async def send_test(self, request: Request) -> Response:
        """Send the edition, as previewed, to one address."""
        editor, edition_id, form = await self._checked_post(request)
        words = self.pages.words_of(request)
        typed = form.text("address")
        values = {"address": typed}
        try:
            address = normalise_email(typed)
        except SubscriberError:
            error = {
                "address": words.gettext("Test address: '%(address)s' is not an email address.", address=typed)
                if typed
                else words.gettext("Test address: enter the address to send the test to.")
            }
            return await run_in_threadpool(
                self._edition_page, request, editor, edition_id, "", error, 400, self._values(edition_id, values)
            )

        def send() -> str | None:
            """The test sent; None, or why it was not sent (shown beside the form)."""
            preview = self._preview_of(request)
            try:
                sent = send_test_email(
                    self.service(), edition_id, address, preview.themes, preview.language, actor=editor.actor
                )
            except DeliveryError as error:  # the server's reason as it gave it
                return words.gettext("The test was not sent to %(address)s: %(reason)s", address=address, reason=error)
            if sent is None:
                return words.gettext("Nothing in this edition for these readers: there is nothing to send.")
            log.info("editor %s sent a test of edition %d to %s", editor.name, edition_id, address)
            return None

        refused = await run_in_threadpool(send)
        if refused:
            return await run_in_threadpool(
                self._edition_page,
                request,
                editor,
                edition_id,
                "",
                {"form": refused},
                502,
                self._values(edition_id, values),
            )
        return self._back(edition_id, "tested", request, to=address)

    async def control(self, request: Request) -> Response:
        """Approve, pause, resume or cancel the edition."""
        named = request.path_params["action"]
        words = self.pages.words(request)
        try:
            action = EditionAction(named)
        except ValueError:
            raise PageError(
                404,
                words.gettext("No such action"),
                [words.gettext("Editions cannot be '%(action)s'-ed.", action=named)],
            ) from None
        editor, edition_id, _form = await self._checked_post(request)
        try:
            edition, after = await run_in_threadpool(
                lambda: change_edition(self.service(), edition_id, action, actor=editor.actor)
            )
        except EditionRefused as error:  # the edition page again, saying why, with what can be done instead
            refusal = {"form": edition_refusal(error, words)}
            return await run_in_threadpool(self._edition_page, request, editor, edition_id, "", refusal, 409, None)
        log.info("editor %s: edition %d %s -> %s", editor.name, edition_id, edition.status, after)
        if after == EditionStatus.SENDING and self.wake_sender is not None:
            self.wake_sender()
        elif after == EditionStatus.SENDING and self.settings.web.send_on_approve:
            self.deliveries.start(edition_id)
        return self._back(edition_id, action.done, request)

    # --- Shared -----------------------------------------------------------------------------------------------

    def _preview_of(self, request: Request) -> Preview:
        """Whom the page previews the edition as, from its query string; errors name what was not understood."""
        query = request.query_params
        words = self.pages.words_of(request)
        preview = Preview(language=default_language(self.settings))
        chosen = query.get("subscriber", "").strip()
        if chosen:
            preview.subscriber = chosen
            try:
                found = find_subscriber(self.service(), chosen)
            except SubscriberError:  # not an address at all: no subscriber either
                found = None
            if found is None:
                preview.errors["subscriber"] = words.gettext(
                    "Preview as: there is no subscriber '%(address)s'.", address=chosen
                )
            else:
                preview.themes, preview.language = found.themes, found.language
                return preview
        try:
            preview.themes = parse_themes(self.settings, query.getlist("themes"))
        except SubscriberError:
            unknown = next((term for term in query.getlist("themes") if not self._known_theme(term)), "")
            preview.errors["themes"] = words.gettext(
                "Themes: unknown theme '%(theme)s'; choose among those listed.", theme=unknown.strip()
            )
        if query.get("language"):
            try:
                preview.language = check_language(self.settings, query["language"])
            except SubscriberError:
                preview.errors["language"] = words.gettext(
                    "Language: unknown language '%(language)s'; choose one of those listed.", language=query["language"]
                )
        return preview

    def _known_theme(self, term: str) -> bool:
        try:
            parse_themes(self.settings, [term])
        except SubscriberError:
            return False
        return True

    def _values(self, edition_id: int, extra: dict[str, str]) -> dict[str, str]:
        edition = find_edition(self.service(), edition_id)
        return {"subject": edition.subject if edition else "", "intro": edition.intro if edition else "", **extra}

    async def _checked_post(self, request: Request) -> tuple[SignedIn, int, Form]:
        """The editor, edition id and form of a post to an edition (refused without the CSRF token)."""
        form = await self.pages.form(request)
        self._check_csrf(request, form, f"/editor/editions/{request.path_params['edition_id']}")
        return signed_in(request), request.path_params["edition_id"], form

    def _back(self, edition_id: int, done: str, request: Request, **extra: str) -> Response:
        # Back to the page as it was previewed (the forms carry the preview's query string).
        query = request.query_params
        kept = ("subscriber", "themes", "language", PARAMETER)
        pairs = [(key, value) for key, value in query.multi_items() if key in kept]
        pairs += [("done", done), *extra.items()]
        return RedirectResponse(f"/editor/editions/{edition_id}?{urlencode(pairs)}", status_code=303)

    def _check_csrf(self, request: Request, form: Form, back: str) -> None:
        words = self.pages.words_of(request)
        self.pages.check_csrf(request, form, (words.url(back), words.gettext("Back to the page")))


def _progress(words: Words, edition: Edition, counts: dict[str, int]) -> dict[str, Any]:
    """The edition's delivery in numbers: per status, how many are done (sent or given up on), and a sentence
    in ``words``' language; with its status (and its name in that language) and the reason the sender paused it
    for, if it did."""
    total = sum(counts.values())
    done = sum(counts.get(status, 0) for status in FINAL_DELIVERIES)
    sent = counts.get(DeliveryStatus.SENT, 0)
    given_up = [status for status in FINAL_DELIVERIES if status != DeliveryStatus.SENT]
    others = ", ".join(
        words.gettext("%(count)s %(status)s", count=counts[s], status=words.delivery_status(s))
        for s in (*given_up, DeliveryStatus.DEFERRED)
        if counts.get(s)
    )
    summary = words.ngettext("%(sent)s of %(num)s sent", "%(sent)s of %(num)s sent", total, sent=sent)
    if others:
        summary = words.gettext("%(summary)s (%(others)s)", summary=summary, others=others)
    return {
        "status": edition.status, "status_label": words.edition_status(edition.status), "reason": edition.reason,
        "counts": counts, "total": total, "done": done, "summary": summary,
    }  # fmt: skip


def _edition_reason(words: Words, edition: Edition) -> str:
    """An edition's reason as the editor's pages show it: what the service itself wrote (an empty edition's
    "nothing new", a sent one's "2 failed, 1 unknown") in ``words``' language; what a mail server said (a paused
    edition's reason) as it said it."""
    reason = edition.reason
    if edition.status == EditionStatus.EMPTY and reason == NOTHING_NEW:
        return words.gettext("nothing new")
    if edition.status == EditionStatus.SENT and reason:
        given_up = [part.split(" ", 1) for part in reason.split(", ")]
        if all(len(part) == 2 and part[0].isdigit() and part[1] in GIVEN_UP_DELIVERIES for part in given_up):
            return ", ".join(
                words.gettext("%(count)s %(status)s", count=int(count), status=words.delivery_status(status))
                for count, status in given_up
            )
    return reason


def _brief(reasons: dict[str, dict[str, int]], shown: int) -> tuple[list[tuple[int, str, str]], int]:
    """An edition's grouped reasons (``EditionReport.reasons``) as (count, status, reason), the commonest
    ``shown`` of them, and how many more reasons there are."""
    every = [(count, status, reason) for status, grouped in reasons.items() for reason, count in grouped.items()]
    every.sort(key=lambda line: -line[0])  # stable: equal counts keep the report's order
    return every[:shown], max(0, len(every) - shown)


def _cursor(value: str) -> int | None:
    """A positive id (or count) from a query parameter; None when it is missing or not one."""
    value = value.strip()
    if not value.isascii() or not value.isdigit() or not 0 < int(value) < 2**63:
        return None
    return int(value)


def _audit_details(words: Words, event: AuditEvent) -> str:
    """What the audit page says of an event besides its action (the JSON export has all of it)."""
    details = event.details
    said: list[str] = []
    if event.action == EDITION_TEXT_CHANGED:
        old, new = details.get("old") or {}, details.get("new") or {}
        if old.get("subject") != new.get("subject"):
            said.append(
                words.gettext(
                    "Subject: “%(old)s” became “%(new)s”.",
                    old=old.get("subject", ""),
                    new=new.get("subject", ""),
                )
            )
        if old.get("intro") != new.get("intro"):
            said.append(words.gettext("The intro changed."))
    elif event.action == EDITION_TEST_SENT:
        said.append(words.gettext("To %(address)s", address=details.get("to", "")))
    elif event.action == EDITION_RETRIED:
        total = sum(int(count) for count in (details.get("requeued") or {}).values())
        said.append(words.ngettext("%(num)s delivery re-queued", "%(num)s deliveries re-queued", total))
    elif event.action == SUBSCRIBER_REACTIVATED:
        said.append(words.gettext("Reason: %(reason)s", reason=details.get("reason", "")))
    elif event.action == PERSON_ROLE_CHANGED:
        said.append(
            words.gettext(
                "%(name)s: %(old)s became %(new)s.",
                name=details.get("name", ""),
                old=_role_name(words, details.get("old", "")),
                new=_role_name(words, details.get("new", "")),
            )
        )
    elif event.action.startswith("person.") and details.get("name"):
        role = details.get("role")
        said.append(
            words.gettext("%(name)s (%(role)s)", name=details["name"], role=_role_name(words, role))
            if role
            else str(details["name"])
        )
    if details.get("reason") and event.action.startswith("edition."):
        said.append(words.gettext("The sender had paused it: %(reason)s", reason=details["reason"]))
    return " ".join(said)


def _role_name(words: Words, role: object) -> str:
    """A role's name in the page's language (as recorded, when it is not a role any more)."""
    try:
        return words.gettext(ROLE_NAMES[Role(str(role))])
    except ValueError:
        return str(role)


def _edition_path(request: Request) -> str:
    """The page of the edition a post was made to (where to come back after signing in)."""
    return f"/editor/editions/{request.path_params['edition_id']}"


def _next_page(wanted: str) -> str:
    """Where to go after signing in: an editor page of this site, never elsewhere (no open redirect)."""
    if (
        wanted.startswith("/editor/")
        and not wanted.startswith("//")
        and "\\" not in wanted
        and not _CONTROL.search(wanted)
    ):
        return wanted
    return "/editor/"


def _address_or(value: str, fallback: str) -> str:
    """``value`` if it is an email address (the notice repeats it from the URL: nothing else gets shown)."""
    try:
        return normalise_email(value)
    except SubscriberError:
        return fallback
