"""The subscriber's pages: the subscribe form (double opt-in), the confirmation page its email links to, and the
preference centre reached from the signed link in every digest (themes, cadence, language, or leave).

Every change goes through ``syndication.app.subscribers``; these handlers read forms, check their CSRF token and
limits, and say what happened. The subscribe form answers the same page whatever the address (new, pending,
subscribed, unsubscribed or removed), once the subscriber and their confirmation are stored (one transaction of
about the same work whatever the address); the email itself goes through the outgoing queue of notices
(``app.notices``), sent by the app's own drain thread, which ``wake_notices`` wakes. The emails the form sends
are capped per address per day in the store.

Each page is worded in the reader's language (``web.languages``): a page reached by a subscriber's signed link
(confirm, rejoin, preferences) in the language they chose for their emails unless its URL chooses another
(``?lang=``, which the links in the emails carry).
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
    reading_languages,
    rejoin,
    subscribe_by_form,
    subscriber_for_link,
    unsubscribe,
)
from syndication.core.languages import LANGUAGE_CHOICES, language_name
from syndication.core.models import CADENCES, Subscriber
from syndication.web.errors import PageError
from syndication.web.forms import FORM_EXPIRED, Choices, Form, read_choices
from syndication.web.languages import Words
from syndication.web.limits import site_limit
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
        self.per_client = site_limit(self.settings, "subscribe-client", web.subscribe_per_client_per_hour, HOUR)
        self.per_address = site_limit(self.settings, "subscribe-address", web.subscribe_per_address_per_hour, HOUR)
        # The emails' languages, each named in itself: a reader finds their own whatever the page's language.
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
        known = {theme.slug for theme in self.settings.theme_list}
        query = request.query_params
        cadence = query.get("cadence", "")
        chosen = Choices(
            themes=[slug for slug in query.getlist("themes") if slug in known],
            cadence=cadence if cadence in CADENCES else DEFAULT_CADENCE,
            language=self._email_language(self.pages.words(request)),
        )
        return self._subscribe_page(request, chosen, "", {})

    async def subscribe(self, request: Request) -> Response:
        """Check the form and the limits, store the subscriber and queue their email, answer "check your inbox"."""
        words = self.pages.words(request)
        form = await self.pages.form(request)
        choices = read_choices(self.settings, form, words)
        email = form.text("email")
        errors: dict[str, str] = {}
        if not self.pages.cookies.csrf_ok(request, form):
            errors["form"] = words.gettext(FORM_EXPIRED)
        address = ""
        try:
            address = normalise_email(email)
        except SubscriberError:
            errors["email"] = (
                words.gettext("Email address: '%(address)s' is not an email address we can write to.", address=email)
                if email
                else words.gettext("Email address: please enter your email address.")
            )
        for key in ("name", "themes", "cadence", "language"):
            if key in choices.errors:
                errors[key] = choices.errors[key]
        if errors:
            return self._subscribe_page(request, choices, email, errors, status=403 if "form" in errors else 400)
        client = client_address(request)
        if not self.per_client.allow(client):
            raise _too_many(words, self.per_client.retry_after(client), by_address=False)
        if not self.per_address.allow(address):
            raise _too_many(words, self.per_address.retry_after(address), by_address=True)
        outcome = await run_in_threadpool(self._act_on_subscription, address, choices, client)
        if outcome.startswith("queued"):
            self.wake_notices()
        return self.pages.message(
            request,
            words.gettext("Check your inbox"),
            [
                words.gettext(
                    "If %(address)s can receive email from us, a message is on its way to it with a link to confirm"
                    " your subscription. The link works for 7 days.",
                    address=address,
                ),
                words.gettext("Nothing arrived? Look in your spam folder, or send the form again later."),
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
        title = self.pages.words_of(request).gettext("Subscribe")
        context = {"title": title, "email": email, "errors": errors, **self._choice_context(chosen)}
        return self.pages.render(request, "subscribe.html", context, status=status, public=status == 200)

    # --- Confirm ----------------------------------------------------------------------------------------------

    async def confirm_page(self, request: Request) -> Response:
        """The page the confirmation email links to: a button, so that a link scanner confirms nobody."""
        return await self._button_page(request, "confirm", ("pending",))

    async def confirm(self, request: Request) -> Response:
        """Confirm: the pending subscriber becomes active."""
        return await self._press_button(request, "confirm", ("pending",), confirm)

    # --- Rejoin: someone who left subscribes again ---------------------------------------------------------------

    async def rejoin_page(self, request: Request) -> Response:
        """The page a rejoin email links to: a button, as for a confirmation."""
        return await self._button_page(request, "rejoin", REJOINABLE_STATUSES)

    async def rejoin(self, request: Request) -> Response:
        """Rejoin: the subscriber is active again, with their earlier choices (the next page links to them)."""
        return await self._press_button(request, "rejoin", REJOINABLE_STATUSES, rejoin)

    async def _button_page(self, request: Request, purpose: str, waiting: tuple[str, ...]) -> Response:
        token = request.path_params["token"]
        found = await self._subscriber(request, purpose, token)
        words = self.pages.words(request, found.language)
        if found.status == "active":
            return self._subscribed(request, found)
        if found.status not in waiting:
            raise _ended(words, found)
        title = words.gettext("Confirm your subscription") if purpose == "confirm" else words.gettext("Subscribe again")
        context = {"title": title, "subscriber": found, "action": words.url(f"/subscribe/{purpose}/{token}")}
        return self.pages.render(request, "confirm.html", context, headers=LINK_PAGE)

    async def _press_button(
        self, request: Request, purpose: str, waiting: tuple[str, ...], act: Callable[[Service, str], Subscriber]
    ) -> Response:
        token = request.path_params["token"]
        found = await self._subscriber(request, purpose, token)
        words = self.pages.words(request, found.language)
        form = await self.pages.form(request)
        self._check_csrf(request, form, f"/subscribe/{purpose}/{token}")
        try:
            subscriber = await run_in_threadpool(lambda: act(self.service(), token))
        except SubscriberError as error:
            if found.status not in (*waiting, "active"):
                raise _ended(words, found) from error
            # Still waiting, yet refused: the address changed since the link was made, or the subscriber was
            # erased in between (the use case says which, in English, to the log).
            log.info("%s link refused: %s", purpose, error)
            title = (
                words.gettext("This subscription cannot be confirmed")
                if purpose == "confirm"
                else words.gettext("This link no longer works")
            )
            raise PageError(
                409,
                title,
                [words.gettext("This subscription changed since this link was made: please subscribe again.")],
                links=[(words.url("/subscribe"), words.gettext("Subscribe again"))],
                headers=LINK_PAGE,
            ) from error
        return self._subscribed(request, subscriber)

    def _subscribed(self, request: Request, subscriber: Subscriber) -> Response:
        words = self.pages.words_of(request)
        url = words.url(preferences_url(self.service(), subscriber))
        return self.pages.message(
            request,
            words.gettext("You are subscribed"),
            [
                words.gettext(
                    "%(address)s receives %(site)s %(how_often)s, starting with the next edition.",
                    address=subscriber.email,
                    site=self.settings.site.title,
                    how_often=words.how_often(subscriber.cadence),
                ),
                words.gettext("Every email has links to change your choices or to leave."),
            ],
            links=[(url, words.gettext("Choose your themes, how often and the language"))],
            headers=LINK_PAGE,
        )

    # --- Preferences ------------------------------------------------------------------------------------------

    async def preferences_page(self, request: Request) -> Response:
        """The preference centre of the subscriber the link was made for."""
        token = request.path_params["token"]
        found = await self._subscriber(request, "preferences", token)
        words = self.pages.words(request, found.language)
        if found.status not in ("pending", "active"):
            raise _ended(words, found)
        readable = await run_in_threadpool(reading_languages, self.service())
        return self._preferences_page(request, token, found, _choices_of(found), {}, readable)

    async def save_preferences(self, request: Request) -> Response:
        """Save the choices; the subscriber is emailed that they changed (after the answer)."""
        token = request.path_params["token"]
        found = await self._subscriber(request, "preferences", token)
        words = self.pages.words(request, found.language)
        form = await self.pages.form(request)
        choices = read_choices(self.settings, form, words)
        csrf_ok = self.pages.cookies.csrf_ok(request, form)
        errors = dict(choices.errors) if csrf_ok else {"form": words.gettext(FORM_EXPIRED), **choices.errors}
        readable = await run_in_threadpool(reading_languages, self.service())
        if errors:
            status = 400 if csrf_ok else 403
            return self._preferences_page(request, token, found, choices, errors, readable, status=status)
        try:
            subscriber, changed = await run_in_threadpool(
                lambda: change_preferences(
                    self.service(),
                    token,
                    themes=choices.themes,
                    cadence=choices.cadence,
                    language=choices.language,
                    name=choices.name,
                    reads=choices.reads,
                    language_choice=choices.language_choice,
                )
            )
        except SubscriberError as error:
            if found.status not in ("pending", "active"):
                raise _ended(words, found) from error
            log.info("preferences refused: %s", error)
            refusal = words.gettext("This subscription changed since this page was shown: please look again.")
            return self._preferences_page(request, token, found, choices, {"form": refusal}, readable, status=409)
        saved = (
            words.gettext("Saved. %(summary)s", summary=self._summary(words, subscriber))
            if changed
            else words.gettext("Nothing changed: these were your choices.")
        )
        response = self._preferences_page(
            request, token, subscriber, _choices_of(subscriber), {}, readable, saved=saved
        )
        if changed:
            # Kept with the notice as a record; the email says it in its own words, in the subscriber's language
            # (``app.notices`` writes it as it sends).
            summary = self._summary(words, subscriber)
            await run_in_threadpool(queue_preferences_notice, self.service(), subscriber, summary)
            self.wake_notices()
        return response

    async def leave(self, request: Request) -> Response:
        """Unsubscribe from the preference centre."""
        token = request.path_params["token"]
        found = await self._subscriber(request, "preferences", token)
        words = self.pages.words(request, found.language)
        form = await self.pages.form(request)
        self._check_csrf(request, form, f"/preferences/{token}")
        await run_in_threadpool(unsubscribe, self.service(), found.id)
        return self.pages.message(
            request,
            words.gettext("You are unsubscribed"),
            [
                words.gettext(
                    "%(address)s will receive no more emails from %(site)s.",
                    address=found.email,
                    site=self.settings.site.title,
                )
            ],
            links=[(words.url("/subscribe"), words.gettext("Changed your mind? Subscribe again"))],
            headers=LINK_PAGE,
        )

    def _preferences_page(
        self,
        request: Request,
        token: str,
        subscriber: Subscriber,
        chosen: Choices,
        errors: dict[str, str],
        readable: list[str],
        *,
        status: int = 200,
        saved: str = "",
    ) -> Response:
        words = self.pages.words_of(request)
        # Every language a reader may read, each named in itself; their own ticked even if no post is in it yet.
        reads = chosen.reads if chosen.reads is not None else list(subscriber.reads)
        offered = list(dict.fromkeys([*readable, *reads]))
        context = {
            "title": words.gettext("Your subscription"),
            "subscriber": subscriber,
            "errors": errors,
            "saved": saved,
            "action": words.url(f"/preferences/{token}"),
            "unsubscribe_action": words.url(f"/preferences/{token}/unsubscribe"),
            "reading_languages": [(tag, language_name(tag)) for tag in offered],
            "reads": reads,
            "language_choices": LANGUAGE_CHOICES,
            "site_language_choice": self.settings.digest.language_choice,
            **self._choice_context(chosen),
        }
        return self.pages.render(request, "preferences.html", context, status=status, headers=LINK_PAGE)

    def _summary(self, words: Words, subscriber: Subscriber) -> str:
        """The subscriber's choices in one sentence of ``words``' language (the page's, or the notice email's)."""
        names = {theme.slug: theme.name_in(words.language) for theme in self.settings.theme_list}
        if subscriber.themes:
            themes = ", ".join(names.get(slug, slug) for slug in subscriber.themes)
        else:
            themes = words.gettext("every theme")
        return words.gettext(
            "One email %(how_often)s in %(language)s: %(themes)s.",
            how_often=words.how_often(subscriber.cadence),
            language=words.language_in_sentence(subscriber.language),
            themes=themes,
        )

    def _email_language(self, words: Words) -> str:
        """The emails' language a new subscriber is offered first: the page's when the emails are written in it,
        else the site's."""
        for language in self.settings.digest.languages:
            if language.lower() == words.language.lower():
                return language
        return default_language(self.settings)

    # --- Shared -----------------------------------------------------------------------------------------------

    def _choice_context(self, chosen: Choices) -> dict[str, object]:
        return {"chosen": chosen, "themes": self.settings.theme_list, "cadences": CADENCES, "languages": self.languages}

    def _check_csrf(self, request: Request, form: Form, back: str) -> None:
        words = self.pages.words_of(request)
        self.pages.check_csrf(request, form, (words.url(back), words.gettext("Back to the form")), headers=LINK_PAGE)

    async def _subscriber(self, request: Request, purpose: str, token: str) -> Subscriber:
        """The subscriber a link was made for; TokenError for a link that is not valid, PageError when they were
        removed since."""
        found = await run_in_threadpool(lambda: subscriber_for_link(self.service(), purpose, token))
        if found is None:
            words = self.pages.words_of(request)
            raise PageError(
                404,
                words.gettext("This subscription no longer exists"),
                [words.gettext("It was removed. You can subscribe again at any time.")],
                links=[(words.url("/subscribe"), words.gettext("Subscribe"))],
                headers=LINK_PAGE,
            )
        return found


def _ended(words: Words, subscriber: Subscriber) -> PageError:
    """The answer for a link of a subscriber who left, bounced or complained."""
    return PageError(
        409,
        words.gettext("This subscription has ended"),
        [
            words.gettext(
                "%(address)s is %(status)s: nothing is sent to it.",
                address=subscriber.email,
                status=words.subscriber_status(subscriber.status),
            )
        ],
        links=[(words.url("/subscribe"), words.gettext("Subscribe again"))],
        headers=LINK_PAGE,
    )


def _too_many(words: Words, retry_after: int, *, by_address: bool) -> PageError:
    """The answer once a limit of the subscribe form is reached (per address, or per connection)."""
    minutes = max(1, (retry_after + 59) // 60)
    if by_address:
        text = words.ngettext(
            "We received too many subscription requests for this address. Please try again in %(num)s minute.",
            "We received too many subscription requests for this address. Please try again in %(num)s minutes.",
            minutes,
        )
    else:
        text = words.ngettext(
            "We received too many subscription requests from your connection. Please try again in %(num)s minute.",
            "We received too many subscription requests from your connection. Please try again in %(num)s minutes.",
            minutes,
        )
    return PageError(429, words.gettext("Too many requests"), [text], headers={"Retry-After": str(retry_after)})


def _choices_of(subscriber: Subscriber) -> Choices:
    return Choices(
        themes=list(subscriber.themes or ()),
        cadence=subscriber.cadence,
        language=subscriber.language,
        name=subscriber.name,
        reads=list(subscriber.reads),
        language_choice=subscriber.language_choice or "default",
    )
