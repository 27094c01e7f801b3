"""The team's pages: an owner's page of people, roles and sessions, and the pages anyone reaches from an email to
set a password (an invitation, a reset) or asks for a reset on.

Every change is ``app.team``'s (recorded in the audit log as the owner's). An invitation whose email could not
be sent shows its link to the owner, who can pass it on another way. A password set from a link signs its
person in at once. Asking for a reset says the same thing whether or not the name or address is known, and the
email is sent after the answer, so neither the words nor the time tell who is in the team.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Final

from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from syndication.app.service import Service
from syndication.app.team import (
    INVITE,
    RESET,
    Invitation,
    LinkRefused,
    TeamError,
    change_role,
    invite,
    link_person,
    list_people,
    live_sessions,
    remove_person,
    request_reset,
    revoke_session,
    revoke_sessions,
    send_reset,
    set_password_from_link,
    start_session,
)
from syndication.core.passwords import MAX_PASSWORD_LENGTH, MIN_PASSWORD_LENGTH
from syndication.core.team import ROLES, Access, Person, check_name, check_role
from syndication.web.access import OPEN, ROLE_NAMES, Gate, signed_in
from syndication.web.errors import PageError
from syndication.web.forms import Form
from syndication.web.languages import N_, Words
from syndication.web.limits import site_limit
from syndication.web.subscribe import client_address
from syndication.web.templating import Pages, page_headers

log = logging.getLogger(__name__)

HOUR: Final = 3600.0
# What the people page says after a form worked (``?done=``).
NOTICES: Final = {
    "invited": N_("The invitation was sent."),
    "role": N_("The role was changed."),
    "reset": N_("A password reset link was sent."),
    "revoked": N_("The sessions were ended."),
    "removed": N_("They were removed from the team."),
}
PERSON: Final = "/editor/people/{person_id:row_id}"
# An owner's change refused (``TeamError.reason``), and a link that does not work (``LinkRefused.reason``).
REFUSALS: Final = {
    "last_owner": N_("The team needs at least one owner: make someone else an owner first."),
    "no_session": N_("This session has ended already."),
    "no_person": N_("This person is no longer in the team."),
    "joined": N_("They have joined already: send them a password reset instead."),
    "no_email": N_("They have no email address to send it to."),
    "exists": N_("Someone in the team has this name already."),
    "bad_address": N_("This is not an email address."),
}
LINK_REFUSALS: Final = {
    "invalid": N_("This link is not valid: it may have been cut or altered."),
    "expired": N_("This link has expired."),
    "used": N_("This link was used already, or a newer one was sent since."),
    "gone": N_("This link is for someone who is no longer in the team."),
}


class TeamPages:
    """The people page and the password pages of one site."""

    def __init__(self, service: Callable[[], Service], pages: Pages, gate: Gate) -> None:
        self.service = service
        self.pages = pages
        self.gate = gate
        self.settings = pages.settings
        self.cookies = pages.cookies
        self.resets = site_limit(self.settings, "reset", self.settings.web.logins_per_client_per_hour, HOUR)

    def routes(self) -> list[Route]:
        """The routes of these pages."""
        route = self.gate.route
        return [
            route("/editor/people", self.people_page, method="GET", needs=Access.MANAGE),
            route("/editor/people", self.invite, method="POST", needs=Access.MANAGE),
            route(f"{PERSON}/role", self.role, method="POST", needs=Access.MANAGE),
            route(f"{PERSON}/invite", self.reinvite, method="POST", needs=Access.MANAGE),
            route(f"{PERSON}/reset", self.reset_for, method="POST", needs=Access.MANAGE),
            route(f"{PERSON}/sessions/revoke", self.end_sessions, method="POST", needs=Access.MANAGE),
            route(f"{PERSON}/remove", self.remove, method="POST", needs=Access.MANAGE),
            route("/editor/sessions/{session_id:str}/revoke", self.end_session, method="POST", needs=Access.MANAGE),
            route("/editor/forgot", self.forgot_page, method="GET", needs=OPEN),
            route("/editor/forgot", self.forgot, method="POST", needs=OPEN),
            route("/editor/welcome/{token:str}", self.welcome_page, method="GET", needs=OPEN),
            route("/editor/welcome/{token:str}", self.welcome, method="POST", needs=OPEN),
            route("/editor/reset/{token:str}", self.reset_page, method="GET", needs=OPEN),
            route("/editor/reset/{token:str}", self.reset, method="POST", needs=OPEN),
        ]

    # --- The people page (owners) -----------------------------------------------------------------------------

    async def people_page(self, request: Request) -> Response:
        """Everyone in the team with their role and sessions, and the invitation form."""
        words = self.pages.words(request)
        done = request.query_params.get("done", "")
        notice = words.gettext(NOTICES[done]) if done in NOTICES else ""
        return await self._people_page(request, notice=notice)

    async def _people_page(
        self,
        request: Request,
        *,
        notice: str = "",
        errors: dict[str, str] | None = None,
        values: dict[str, str] | None = None,
        invitation: Invitation | None = None,
        status: int = 200,
    ) -> Response:
        words = self.pages.words_of(request)
        people, sessions = await run_in_threadpool(lambda: (list_people(self.service()), live_sessions(self.service())))
        context = {
            "title": words.gettext("People"),
            "people": people,
            "sessions": sessions,
            "session_counts": {p.id: sum(1 for s in sessions if s.person_id == p.id) for p in people},
            "roles": [(str(role), words.gettext(ROLE_NAMES[role])) for role in ROLES],
            "role_name": lambda role: words.gettext(ROLE_NAMES[role]),
            "notice": notice,
            "errors": errors or {},
            "values": values or {"name": "", "email": "", "role": "editor"},
            "invitation": invitation,
            "me": signed_in(request),
        }
        return self.pages.render(request, "editor_people.html", context, status=status, editor=signed_in(request))

    async def invite(self, request: Request) -> Response:
        """Invite someone: added without a password, with an email to choose one."""
        words = self.pages.words(request)
        form = await self._form(request)
        values = {"name": form.text("name"), "email": form.text("email"), "role": form.text("role")}
        errors: dict[str, str] = {}
        try:
            check_name(values["name"])
        except ValueError:
            errors["name"] = words.gettext("A name is 1 to 100 letters, digits and the signs . _ @ + - (no spaces).")
        if not values["email"]:
            errors["email"] = words.gettext("Enter the email address the invitation goes to.")
        try:
            role = check_role(values["role"])
        except ValueError:
            errors["role"] = words.gettext("Choose a role.")
        if errors:
            return await self._people_page(request, errors=errors, values=values, status=400)
        owner = signed_in(request)
        try:
            made = await run_in_threadpool(
                lambda: invite(
                    self.service(), values["name"], values["email"], role, actor=owner.actor, language=words.language
                )
            )
        except TeamError as error:
            field = "email" if error.reason == "bad_address" else "name"
            return await self._people_page(request, errors={field: _refusal(words, error)}, values=values, status=400)
        log.info("%s invited %s as %s", owner.name, made.person.name, made.person.role)
        if not made.sent:
            return await self._people_page(request, invitation=made)
        return self._back(words, "invited")

    async def role(self, request: Request) -> Response:
        """Give someone another role."""
        words = self.pages.words(request)
        form = await self._form(request)
        try:
            role = check_role(form.text("role"))
        except ValueError:
            return await self._people_page(request, errors={"role": words.gettext("Choose a role.")}, status=400)
        owner = signed_in(request)
        reference = _person(request)
        await self._change(request, lambda: change_role(self.service(), reference, role, actor=owner.actor))
        return self._back(words, "role")

    async def reinvite(self, request: Request) -> Response:
        """Send a new invitation to someone who has not joined yet."""
        return await self._send_link(request, "invited")

    async def reset_for(self, request: Request) -> Response:
        """Send someone a password reset link."""
        return await self._send_link(request, "reset")

    async def end_sessions(self, request: Request) -> Response:
        """End every session of someone."""
        words = self.pages.words(request)
        await self._form(request)
        owner = signed_in(request)
        reference = _person(request)
        await self._change(request, lambda: revoke_sessions(self.service(), reference, actor=owner.actor))
        return self._back(words, "revoked")

    async def end_session(self, request: Request) -> Response:
        """End one session."""
        words = self.pages.words(request)
        await self._form(request)
        owner = signed_in(request)
        session_id: str = request.path_params["session_id"]
        await self._change(request, lambda: revoke_session(self.service(), session_id, actor=owner.actor))
        return self._back(words, "revoked")

    async def remove(self, request: Request) -> Response:
        """Remove someone from the team."""
        words = self.pages.words(request)
        await self._form(request)
        owner = signed_in(request)
        reference = _person(request)
        await self._change(request, lambda: remove_person(self.service(), reference, actor=owner.actor))
        return self._back(words, "removed")

    async def _send_link(self, request: Request, done: str) -> Response:
        words = self.pages.words(request)
        await self._form(request)
        owner = signed_in(request)
        reference = _person(request)
        made = await self._change(
            request,
            lambda: send_reset(self.service(), reference, actor=owner.actor, language=words.language),
        )
        if isinstance(made, Invitation) and not made.sent:
            return await self._people_page(request, invitation=made)
        return self._back(words, done)

    async def _change(self, request: Request, change: Callable[[], object]) -> object:
        """Run an owner's change; a refusal (the last owner, nobody of that name) answers 409 with why."""
        try:
            return await run_in_threadpool(change)
        except TeamError as error:
            words = self.pages.words_of(request)
            raise PageError(
                409,
                words.gettext("Not changed"),
                [_refusal(words, error)],
                links=[(words.url("/editor/people"), words.gettext("Back to the page"))],
            ) from None

    async def _form(self, request: Request) -> Form:
        form = await self.pages.form(request)
        words = self.pages.words_of(request)
        self.pages.check_csrf(request, form, (words.url("/editor/people"), words.gettext("Back to the page")))
        return form

    def _back(self, words: Words, done: str) -> Response:
        return RedirectResponse(words.url(f"/editor/people?done={done}"), status_code=303)

    # --- Choosing a password from a link (anyone with the link) ----------------------------------------------

    async def welcome_page(self, request: Request) -> Response:
        """The invitation's form: choose a password."""
        return await self._password_page(request, INVITE)

    async def reset_page(self, request: Request) -> Response:
        """The reset link's form: choose a new password."""
        return await self._password_page(request, RESET)

    async def welcome(self, request: Request) -> Response:
        """Set the invited person's password and sign them in."""
        return await self._set_password(request, INVITE)

    async def reset(self, request: Request) -> Response:
        """Set the new password and sign them in."""
        return await self._set_password(request, RESET)

    async def _password_page(
        self, request: Request, purpose: str, *, errors: dict[str, str] | None = None, status: int = 200
    ) -> Response:
        words = self.pages.words(request)
        token: str = request.path_params["token"]
        person = await self._link_person(request, purpose, token)
        context = {
            "title": words.gettext("Welcome") if purpose == INVITE else words.gettext("Choose a new password"),
            "person": person,
            "role_name": words.gettext(ROLE_NAMES[person.role]),
            "invited": purpose == INVITE,
            "action": f"/editor/{'welcome' if purpose == INVITE else 'reset'}/{token}",
            "minimum": MIN_PASSWORD_LENGTH,
            "errors": errors or {},
        }
        headers = page_headers(referrer="no-referrer")
        return self.pages.render(request, "editor_password.html", context, status=status, headers=headers)

    async def _set_password(self, request: Request, purpose: str) -> Response:
        words = self.pages.words(request)
        token: str = request.path_params["token"]
        form = await self.pages.form(request)
        here = f"/editor/{'welcome' if purpose == INVITE else 'reset'}/{token}"
        self.pages.check_csrf(request, form, (words.url(here), words.gettext("Back to the page")))
        password, again = form.get("password", ""), form.get("again", "")
        errors = {}
        if len(password) < MIN_PASSWORD_LENGTH:
            errors["password"] = words.ngettext(
                "Use at least %(num)s character.", "Use at least %(num)s characters.", MIN_PASSWORD_LENGTH
            )
        elif len(password) > MAX_PASSWORD_LENGTH:
            errors["password"] = words.gettext("This password is too long.")
        elif password != again:
            errors["again"] = words.gettext("The two passwords differ.")
        if errors:
            return await self._password_page(request, purpose, errors=errors, status=400)
        try:
            person = await run_in_threadpool(set_password_from_link, self.service(), purpose, token, password)
        except LinkRefused as error:
            raise self._link_refused(words, error) from None
        agent = request.headers.get("user-agent", "")
        client = client_address(request)
        session_id = await run_in_threadpool(lambda: start_session(self.service(), person, address=client, agent=agent))
        log.info("%s set a password from a %s link and signed in from %s", person.name, purpose, client)
        response = RedirectResponse(words.url("/editor/"), status_code=303)
        self.cookies.start_session(response, session_id)
        return response

    async def _link_person(self, request: Request, purpose: str, token: str) -> Person:
        words = self.pages.words_of(request)
        try:
            return await run_in_threadpool(link_person, self.service(), purpose, token)
        except LinkRefused as error:
            raise self._link_refused(words, error) from None

    def _link_refused(self, words: Words, error: LinkRefused) -> PageError:
        return PageError(
            400,
            words.gettext("This link does not work"),
            [
                words.gettext(LINK_REFUSALS.get(error.reason, LINK_REFUSALS["invalid"])),
                words.gettext("Ask for a new one: an owner of the team can send it, or you can reset your password."),
            ],
            links=[(words.url("/editor/forgot"), words.gettext("Reset my password"))],
            headers={"Referrer-Policy": "no-referrer"},
        )

    # --- Asking for a reset (anyone) -------------------------------------------------------------------------

    async def forgot_page(self, request: Request) -> Response:
        """The form asking for a password reset link."""
        words = self.pages.words(request)
        context = {"title": words.gettext("Reset your password"), "sent": False, "errors": {}, "reference": ""}
        return self.pages.render(request, "editor_forgot.html", context)

    async def forgot(self, request: Request) -> Response:
        """Send a reset link to the person of that name or address, if there is one (the answer does not say)."""
        words = self.pages.words(request)
        form = await self.pages.form(request)
        self.pages.check_csrf(request, form, (words.url("/editor/forgot"), words.gettext("Back to the page")))
        reference = form.text("reference")
        if not reference:
            context = {
                "title": words.gettext("Reset your password"),
                "sent": False,
                "errors": {"reference": words.gettext("Enter your name or email address.")},
                "reference": "",
            }
            return self.pages.render(request, "editor_forgot.html", context, status=400)
        client = client_address(request)
        if not self.resets.allow(client):
            retry = self.resets.retry_after(client)
            raise PageError(
                429,
                words.gettext("Too many attempts"),
                [words.gettext("Too many requests from your connection: try again later.")],
                headers={"Retry-After": str(retry)},
            )
        language = words.language
        service = self.service

        def send() -> None:
            try:
                made = request_reset(service(), reference, language=language)
            except Exception:  # the answer went already: nobody else to tell
                log.exception("the password reset asked for from %s could not be sent", client)
                return
            if made is not None and not made.sent:
                log.warning("the password reset link for %s could not be sent: %s", made.person.name, made.problem)

        context = {"title": words.gettext("Reset your password"), "sent": True, "errors": {}, "reference": reference}
        response = self.pages.render(request, "editor_forgot.html", context)
        response.background = BackgroundTask(run_in_threadpool, send)
        return response


def _person(request: Request) -> str:
    return f"#{request.path_params['person_id']}"


def _refusal(words: Words, error: TeamError) -> str:
    """An owner's change refused, in the page's words (what the use case said, for a reason they do not know)."""
    worded = REFUSALS.get(error.reason)
    return words.gettext(worded) if worded else str(error)
