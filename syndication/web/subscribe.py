"""The subscriber's pages: the subscribe form (double opt-in), the confirmation page its email links to, and the
preference centre reached from the signed link in every digest (themes, cadence, language, or leave).

Every change goes through ``syndication.app.subscribers``; these handlers read forms, check their CSRF token and
limits, and say what happened. The subscribe form answers the same page whatever the address (new, pending,
subscribed, unsubscribed or removed), once the subscriber and their confirmation are stored (one transaction of
about the same work whatever the address); the email itself goes through the outgoing queue of notices
(``app.notices``), sent by the app's own drain thread, which ``wake_notices`` wakes. The emails the form sends
are capped per address per day in the store.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from syndication.app.service import Service
from syndication.app.subscribers import (
    DEFAULT_CADENCE,
    REJOINABLE_STATUSES,
    SubscriberError,
    change_preferences,
    confirm,
    default_language,
    normalise_email,
    preferences_url,
    queue_preferences_notice,
    rejoin,
    subscribe_by_form,
    subscriber_for_link,
    unsubscribe,
)
from syndication.core.languages import language_name
from syndication.core.models import CADENCES, Subscriber
from syndication.web.errors import PageError, sentence
from syndication.web.forms import FORM_EXPIRED, Choices, Form, read_choices
from syndication.web.limits import RateLimit
from syndication.web.templating import Pages, page_headers

log = logging.getLogger(__name__)

HOUR = 3600.0
# Pages reached through a signed link: the token in their URL must not leak to the sites they link to.
LINK_PAGE = page_headers(referrer="no-referrer")


def client_address(request: Request) -> str:
    """The client's address (uvicorn puts a trusted proxy's X-Forwarded-For in its place)."""
    return request.client.host if request.client else "unknown"


class SubscriberPages:
    """The subscribe, confirm and preferences pages of one site."""

    def __init__(
        self, service: Callable[[], Service], pages: Pages, wake_notices: Callable[[], None] = lambda: None
    ) -> None:
        self.service = service
        self.pages = pages
        self.wake_notices = wake_notices
        self.settings = pages.settings
        web = self.settings.web
        self.per_client = RateLimit(web.subscribe_per_client_per_hour, HOUR)
        self.per_address = RateLimit(web.subscribe_per_address_per_hour, HOUR)
        self.languages = [(code, language_name(code)) for code in self.settings.digest.languages]

    def routes(self) -> list[Route]:
        """The routes of these pages."""
        return [
            Route("/subscribe", self.subscribe_form, methods=["GET"]),
            Route("/subscribe", self.subscribe, methods=["POST"]),
            Route("/subscribe/confirm/{token}", self.confirm_page, methods=["GET"]),
            Route("/subscribe/confirm/{token}", self.confirm, methods=["POST"]),
            Route("/subscribe/rejoin/{token}", self.rejoin_page, methods=["GET"]),
            Route("/subscribe/rejoin/{token}", self.rejoin, methods=["POST"]),
            Route("/preferences/{token}", self.preferences_page, methods=["GET"]),
            Route("/preferences/{token}", self.save_preferences, methods=["POST"]),
            Route("/preferences/{token}/unsubscribe", self.leave, methods=["POST"]),
        ]

    # --- Subscribe --------------------------------------------------------------------------------------------

    async def subscribe_form(self, request: Request) -> Response:
        """The empty form; ``?themes=a&themes=b`` (the theme pages' links) ticks those themes."""
        known = {theme.slug for theme in self.settings.themes}
        query = request.query_params
        cadence = query.get("cadence", "")
        chosen = Choices(
            themes=[slug for slug in query.getlist("themes") if slug in known],
            cadence=cadence if cadence in CADENCES else DEFAULT_CADENCE,
            language=default_language(self.settings),
        )
        return self._subscribe_page(request, chosen, "", {})

    async def subscribe(self, request: Request) -> Response:
        """Check the form and the limits, store the subscriber and queue their email, answer "check your inbox"."""
        form = await self.pages.form(request)
        choices = read_choices(self.settings, form)
        email = form.text("email")
        errors: dict[str, str] = {}
        if not self.pages.cookies.csrf_ok(request, form):
            errors["form"] = FORM_EXPIRED
        address = ""
        try:
            address = normalise_email(email)
        except SubscriberError:
            errors["email"] = (
                f"Email address: {email!r} is not an email address we can write to."
                if email
                else "Email address: please enter your email address."
            )
        for key in ("name", "themes", "cadence", "language"):
            if key in choices.errors:
                errors[key] = choices.errors[key]
        if errors:
            return self._subscribe_page(request, choices, email, errors, status=403 if "form" in errors else 400)
        client = client_address(request)
        if not self.per_client.allow(client):
            raise _too_many(self.per_client.retry_after(client), "from your connection")
        if not self.per_address.allow(address):
            raise _too_many(self.per_address.retry_after(address), "for this address")
        outcome = await run_in_threadpool(self._act_on_subscription, address, choices, client)
        if outcome.startswith("queued"):
            self.wake_notices()
        return self.pages.message(
            request,
            "Check your inbox",
            [
                f"If {address} can receive email from us, a message is on its way to it with a link to confirm"
                " your subscription. The link works for 7 days.",
                "Nothing arrived? Look in your spam folder, or send the form again later.",
            ],
        )

    def _act_on_subscription(self, address: str, choices: Choices, client: str) -> str:
        """Store the subscriber and queue their email; what was done goes to the log only (the page is the same)."""
        cap = self.settings.web.confirmations_per_address_per_day
        try:
            outcome = subscribe_by_form(
                self.service(),
                address,
                name=choices.name or None,
                themes=choices.themes,
                cadence=choices.cadence,
                language=choices.language,
                source=f"subscribe page, from {client}",
                cap=cap,
            )
        except SubscriberError as error:  # the form's checks passed: not expected, and not the visitor's to see
            log.error("subscribe form: %s", error)
            return "refused"
        if outcome == "capped":
            log.info("subscribe form: an address had its %d emails today already; nothing sent", cap)
        elif outcome.startswith("not sent"):
            log.info("subscribe form: %s", outcome)
        return outcome

    def _subscribe_page(
        self, request: Request, chosen: Choices, email: str, errors: dict[str, str], *, status: int = 200
    ) -> Response:
        context = {"title": "Subscribe", "email": email, "errors": errors, **self._choice_context(chosen)}
        return self.pages.render(request, "subscribe.html", context, status=status)

    # --- Confirm ----------------------------------------------------------------------------------------------

    async def confirm_page(self, request: Request) -> Response:
        """The page the confirmation email links to: a button, so that a link scanner confirms nobody."""
        return await self._button_page(request, "confirm", ("pending",), "Confirm your subscription")

    async def confirm(self, request: Request) -> Response:
        """Confirm: the pending subscriber becomes active."""
        return await self._press_button(request, "confirm", confirm, "This subscription cannot be confirmed")

    # --- Rejoin: someone who left subscribes again ---------------------------------------------------------------

    async def rejoin_page(self, request: Request) -> Response:
        """The page a rejoin email links to: a button, as for a confirmation."""
        return await self._button_page(request, "rejoin", REJOINABLE_STATUSES, "Subscribe again")

    async def rejoin(self, request: Request) -> Response:
        """Rejoin: the subscriber is active again, with their earlier choices (the next page links to them)."""
        return await self._press_button(request, "rejoin", rejoin, "This link no longer works")

    async def _button_page(self, request: Request, purpose: str, waiting: tuple[str, ...], title: str) -> Response:
        token = request.path_params["token"]
        found = await self._subscriber(purpose, token)
        if found.status == "active":
            return self._subscribed(request, found)
        if found.status not in waiting:
            raise _ended(found)
        context = {"title": title, "subscriber": found, "action": f"/subscribe/{purpose}/{token}"}
        return self.pages.render(request, "confirm.html", context, headers=LINK_PAGE)

    async def _press_button(
        self, request: Request, purpose: str, act: Callable[[Service, str], Subscriber], refusal: str
    ) -> Response:
        token = request.path_params["token"]
        form = await self.pages.form(request)
        self._check_csrf(request, form, f"/subscribe/{purpose}/{token}")
        try:
            subscriber = await run_in_threadpool(lambda: act(self.service(), token))
        except SubscriberError as error:
            raise PageError(
                409, refusal, [sentence(error)], links=[("/subscribe", "Subscribe again")], headers=LINK_PAGE
            ) from error
        return self._subscribed(request, subscriber)

    def _subscribed(self, request: Request, subscriber: Subscriber) -> Response:
        url = preferences_url(self.service(), subscriber)
        return self.pages.message(
            request,
            "You are subscribed",
            [
                f"{subscriber.email} receives {self.settings.site.title} {subscriber.cadence}, starting with the next"
                " edition.",
                "Every email has links to change your choices or to leave.",
            ],
            links=[(url, "Choose your themes, how often and the language")],
            headers=LINK_PAGE,
        )

    # --- Preferences ------------------------------------------------------------------------------------------

    async def preferences_page(self, request: Request) -> Response:
        """The preference centre of the subscriber the link was made for."""
        token = request.path_params["token"]
        found = await self._subscriber("preferences", token)
        if found.status not in ("pending", "active"):
            raise _ended(found)
        return self._preferences_page(request, token, found, _choices_of(found), {})

    async def save_preferences(self, request: Request) -> Response:
        """Save the choices; the subscriber is emailed that they changed (after the answer)."""
        token = request.path_params["token"]
        form = await self.pages.form(request)
        found = await self._subscriber("preferences", token)
        choices = read_choices(self.settings, form)
        csrf_ok = self.pages.cookies.csrf_ok(request, form)
        errors = dict(choices.errors) if csrf_ok else {"form": FORM_EXPIRED, **choices.errors}
        if errors:
            status = 400 if csrf_ok else 403
            return self._preferences_page(request, token, found, choices, errors, status=status)
        try:
            subscriber, changed = await run_in_threadpool(
                lambda: change_preferences(
                    self.service(),
                    token,
                    themes=choices.themes,
                    cadence=choices.cadence,
                    language=choices.language,
                    name=choices.name,
                )
            )
        except SubscriberError as error:
            return self._preferences_page(request, token, found, choices, {"form": sentence(error)}, status=409)
        saved = "Saved. " + self._summary(subscriber) if changed else "Nothing changed: these were your choices."
        response = self._preferences_page(request, token, subscriber, _choices_of(subscriber), {}, saved=saved)
        if changed:
            summary = self._summary(subscriber)
            await run_in_threadpool(queue_preferences_notice, self.service(), subscriber, summary)
            self.wake_notices()
        return response

    async def leave(self, request: Request) -> Response:
        """Unsubscribe from the preference centre."""
        token = request.path_params["token"]
        form = await self.pages.form(request)
        self._check_csrf(request, form, f"/preferences/{token}")
        found = await self._subscriber("preferences", token)
        await run_in_threadpool(unsubscribe, self.service(), found.id)
        return self.pages.message(
            request,
            "You are unsubscribed",
            [f"{found.email} will receive no more emails from {self.settings.site.title}."],
            links=[("/subscribe", "Changed your mind? Subscribe again")],
            headers=LINK_PAGE,
        )

    def _preferences_page(
        self,
        request: Request,
        token: str,
        subscriber: Subscriber,
        chosen: Choices,
        errors: dict[str, str],
        *,
        status: int = 200,
        saved: str = "",
    ) -> Response:
        context = {
            "title": "Your subscription",
            "subscriber": subscriber,
            "errors": errors,
            "saved": saved,
            "action": f"/preferences/{token}",
            "unsubscribe_action": f"/preferences/{token}/unsubscribe",
            **self._choice_context(chosen),
        }
        return self.pages.render(request, "preferences.html", context, status=status, headers=LINK_PAGE)

    def _summary(self, subscriber: Subscriber) -> str:
        names = {theme.slug: theme.name for theme in self.settings.themes}
        themes = ", ".join(names.get(slug, slug) for slug in subscriber.themes) if subscriber.themes else "every theme"
        return f"A {subscriber.cadence} digest in {language_name(subscriber.language)}: {themes}."

    # --- Shared -----------------------------------------------------------------------------------------------

    def _choice_context(self, chosen: Choices) -> dict[str, object]:
        return {"chosen": chosen, "themes": self.settings.themes, "cadences": CADENCES, "languages": self.languages}

    def _check_csrf(self, request: Request, form: Form, back: str) -> None:
        self.pages.check_csrf(request, form, (back, "Back to the form"), headers=LINK_PAGE)

    async def _subscriber(self, purpose: str, token: str) -> Subscriber:
        """The subscriber a link was made for; TokenError for a link that is not valid, PageError when they were
        removed since."""
        found = await run_in_threadpool(lambda: subscriber_for_link(self.service(), purpose, token))
        if found is None:
            raise PageError(
                404,
                "This subscription no longer exists",
                ["It was removed. You can subscribe again at any time."],
                links=[("/subscribe", "Subscribe")],
                headers=LINK_PAGE,
            )
        return found


def _ended(subscriber: Subscriber) -> PageError:
    """The answer for a link of a subscriber who left, bounced or complained."""
    return PageError(
        409,
        "This subscription has ended",
        [f"{subscriber.email} is {subscriber.status}: nothing is sent to it."],
        links=[("/subscribe", "Subscribe again")],
        headers=LINK_PAGE,
    )


def _too_many(retry_after: int, where: str) -> PageError:
    """The answer once a limit of the subscribe form is reached."""
    minutes = max(1, (retry_after + 59) // 60)
    return PageError(
        429,
        "Too many requests",
        [f"We received too many subscription requests {where}. Please try again in {minutes} minutes."],
        headers={"Retry-After": str(retry_after)},
    )


def _choices_of(subscriber: Subscriber) -> Choices:
    return Choices(
        themes=list(subscriber.themes or ()),
        cadence=subscriber.cadence,
        language=subscriber.language,
        name=subscriber.name,
    )
