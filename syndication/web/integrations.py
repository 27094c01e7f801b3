"""The owner's pages for integrations (issue 21): the JSON API's tokens and the outgoing webhooks, managed from
the editor pages as from the command line (``syndication tokens``, ``syndication webhooks``).

Every route needs ``Access.MANAGE`` (an owner), checked by the gate before its handler runs. A token's text and a
webhook's signing secret are shown once, on the page that answers the post that made them: rendered there (never
put in a redirect's URL) and, as every editor page, ``Cache-Control: no-store``; the lists never show them again
(a token's hash is all the store keeps; a secret is masked). A form the page refuses (no name, no scope, a URL that
is not one or is on a private network) is shown again with the reason beside the field, status 400, and nothing
made. Revoking and removing redirect (303) back to the list with a notice. Each change is recorded in the audit
log as the signed-in owner's, by its use case.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import urlsplit

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from syndication.app.api import NoSuchToken, create_token, list_tokens, revoke_token
from syndication.app.service import Service
from syndication.app.webhooks import (
    MAX_URL,
    WebhookError,
    add_endpoint,
    check_url,
    endpoint_attempts,
    list_endpoints,
    remove_endpoint,
)
from syndication.core.api_tokens import MAX_NAME, SCOPES
from syndication.core.team import Access
from syndication.core.webhooks import EVENT_TYPES, mask_secret
from syndication.errors import SyndicationError
from syndication.web import convertors  # noqa: F401  (registers the row_id path type the routes use)
from syndication.web.access import Gate, signed_in
from syndication.web.errors import PageError
from syndication.web.forms import Form
from syndication.web.languages import N_, Words
from syndication.web.templating import Pages

log = logging.getLogger(__name__)

TOKENS: Final = "/editor/tokens"
WEBHOOKS: Final = "/editor/webhooks"
# The last attempts shown under each endpoint (``webhooks attempts`` shows 20 by default).
ATTEMPTS_SHOWN: Final = 10
# What each scope lets a token do (``core.api_tokens.SCOPES``; a test holds the two equal).
SCOPE_WORDS: Final = {
    "read": N_("Read posts, subscribers and editions"),
    "posts": N_("Create and update posts"),
    "subscribers": N_("Add and list subscribers"),
    "send": N_("Approve, pause, resume and cancel editions"),
}
# What each event announces (``core.webhooks.EVENT_TYPES``; a test holds the two equal).
EVENT_WORDS: Final = {
    "subscriber.confirmed": N_("A subscriber confirmed their subscription"),
    "subscriber.unsubscribed": N_("A subscriber unsubscribed"),
    "subscriber.bounced": N_("A subscriber's address bounced and was suppressed"),
    "subscriber.complained": N_("A subscriber complained (marked a message as spam)"),
    "edition.approved": N_("An edition was approved"),
    "edition.sent": N_("An edition was sent"),
    "post.published": N_("A post was published"),
}
# A webhook delivery's status (``core.webhooks``: pending, sending, sent, failed) as the page says it.
DELIVERY_WORDS: Final = {
    "pending": N_("waiting"),
    "sending": N_("being posted"),
    "sent": N_("delivered"),
    "failed": N_("given up"),
}
# Every page here may hold a secret shown once: never kept by a cache (every editor page says so already).
_SHOWN_ONCE: Final = {"Cache-Control": "no-store"}
# What the pages say after a post worked (``?done=``).
NOTICES: Final = {
    "revoked": N_("The token was revoked: its next request is refused."),
    "removed": N_("The webhook was removed, with its deliveries and attempts."),
}


@dataclass
class TokenForm:
    """What the token form was given (shown again when refused) and what is wrong with it, by field."""

    name: str = ""
    scopes: list[str] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)


@dataclass
class WebhookForm:
    """What the webhook form was given (shown again when refused) and what is wrong with it, by field."""

    url: str = ""
    events: list[str] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)


class IntegrationPages:
    """The owner's pages of API tokens and webhooks of one site."""

    def __init__(self, service: Callable[[], Service], pages: Pages, gate: Gate) -> None:
        self.service = service
        self.pages = pages
        self.gate = gate
        self.settings = pages.settings

    def routes(self) -> list[Route]:
        """The routes of these pages, each for owners only (``Access.MANAGE``)."""
        route = self.gate.route
        manage = Access.MANAGE
        return [
            route(TOKENS, self.tokens_page, method="GET", needs=manage),
            route(TOKENS, self.create_token, method="POST", needs=manage, back=_tokens),
            route(f"{TOKENS}/{{token_id:row_id}}/revoke", self.revoke_token, method="POST", needs=manage, back=_tokens),
            route(WEBHOOKS, self.webhooks_page, method="GET", needs=manage),
            route(WEBHOOKS, self.add_webhook, method="POST", needs=manage, back=_webhooks),
            route(
                f"{WEBHOOKS}/{{endpoint_id:row_id}}/remove",
                self.remove_webhook,
                method="POST",
                needs=manage,
                back=_webhooks,
            ),
        ]

    # --- API tokens -------------------------------------------------------------------------------------------

    async def tokens_page(self, request: Request) -> Response:
        """The tokens (revoked ones too, never their secrets) and the form that creates one."""
        words = self.pages.words(request)
        return await self._tokens_page(request, TokenForm(), notice=_notice(words, request))

    async def create_token(self, request: Request) -> Response:
        """Create a token and show it this once, on the page that answers (never in a URL)."""
        words = self.pages.words(request)
        form = await self.pages.form(request)
        self._check_csrf(request, form, TOKENS)
        editor = signed_in(request)
        given = TokenForm(" ".join(form.get("name", "").split()), form.all("scopes"))
        given.errors = _token_errors(words, given)
        if given.errors:
            return await self._tokens_page(request, given, status=400)
        try:
            token, text = await run_in_threadpool(
                lambda: create_token(self.service(), given.name, given.scopes, actor=editor.actor)
            )
        except SyndicationError as error:  # the use case's own rules, should they refuse what passed ours
            given.errors = {"name": str(error)}
            return await self._tokens_page(request, given, status=400)
        log.info("editor %s created API token %d (%s)", editor.name, token.id, ",".join(token.scopes))
        return await self._tokens_page(request, TokenForm(), created=(token.name, text))

    async def revoke_token(self, request: Request) -> Response:
        """Revoke a token at once; back to the list with a notice."""
        words = self.pages.words(request)
        form = await self.pages.form(request)
        self._check_csrf(request, form, TOKENS)
        editor = signed_in(request)
        token_id: int = request.path_params["token_id"]
        try:
            await run_in_threadpool(lambda: revoke_token(self.service(), token_id, actor=editor.actor))
        except NoSuchToken:
            raise _not_found(words, words.gettext("There is no token %(id)s.", id=token_id), TOKENS) from None
        log.info("editor %s revoked API token %d", editor.name, token_id)
        return RedirectResponse(words.url(f"{TOKENS}?done=revoked"), status_code=303)

    async def _tokens_page(
        self,
        request: Request,
        given: TokenForm,
        *,
        status: int = 200,
        notice: str = "",
        created: tuple[str, str] | None = None,
    ) -> Response:
        words = self.pages.words_of(request)
        tokens = await run_in_threadpool(lambda: list_tokens(self.service()))
        context = {
            "title": words.gettext("API tokens"),
            "tokens": [(token, words.actor(token.created_by)) for token in tokens],
            "scopes": [(scope, words.gettext(SCOPE_WORDS.get(scope, scope))) for scope in SCOPES],
            "values": given,
            "errors": given.errors,
            "notice": notice,
            "created": created,
            "max_name": MAX_NAME,
        }
        return self.pages.render(
            request, "editor_tokens.html", context, status=status, headers=_SHOWN_ONCE, editor=signed_in(request)
        )

    # --- Webhooks ---------------------------------------------------------------------------------------------

    async def webhooks_page(self, request: Request) -> Response:
        """The endpoints, each with its last attempts, and the form that adds one."""
        words = self.pages.words(request)
        return await self._webhooks_page(request, WebhookForm(), notice=_notice(words, request))

    async def add_webhook(self, request: Request) -> Response:
        """Register a URL for some events and show its signing secret this once, on the page that answers."""
        words = self.pages.words(request)
        form = await self.pages.form(request)
        self._check_csrf(request, form, WEBHOOKS)
        editor = signed_in(request)
        given = WebhookForm(form.text("url"), form.all("events"))
        given.errors = _webhook_errors(words, given, allow_private=self.settings.webhooks.allow_private)
        if given.errors:
            return await self._webhooks_page(request, given, status=400)
        try:
            endpoint, secret = await run_in_threadpool(
                lambda: add_endpoint(self.service(), given.url, given.events, actor=editor.actor)
            )
        except WebhookError as error:  # the use case's own rules, should they refuse what passed ours
            given.errors = {"url": str(error)}
            return await self._webhooks_page(request, given, status=400)
        log.info("editor %s added webhook %d: %s", editor.name, endpoint.id, endpoint.url)
        return await self._webhooks_page(request, WebhookForm(), created=(endpoint.url, secret or ""))

    async def remove_webhook(self, request: Request) -> Response:
        """Remove an endpoint with its deliveries and attempts; back to the list with a notice."""
        words = self.pages.words(request)
        form = await self.pages.form(request)
        self._check_csrf(request, form, WEBHOOKS)
        editor = signed_in(request)
        endpoint_id: int = request.path_params["endpoint_id"]
        try:
            await run_in_threadpool(lambda: remove_endpoint(self.service(), endpoint_id, actor=editor.actor))
        except WebhookError:
            raise _not_found(words, words.gettext("There is no webhook %(id)s.", id=endpoint_id), WEBHOOKS) from None
        log.info("editor %s removed webhook %d", editor.name, endpoint_id)
        return RedirectResponse(words.url(f"{WEBHOOKS}?done=removed"), status_code=303)

    async def _webhooks_page(
        self,
        request: Request,
        given: WebhookForm,
        *,
        status: int = 200,
        notice: str = "",
        created: tuple[str, str] | None = None,
    ) -> Response:
        words = self.pages.words_of(request)
        context: dict[str, Any] = {
            "title": words.gettext("Webhooks"),
            "endpoints": await run_in_threadpool(self._endpoints, words),
            "events": [(event, words.gettext(EVENT_WORDS.get(event, event))) for event in EVENT_TYPES],
            "values": given,
            "errors": given.errors,
            "notice": notice,
            "created": created,
            "allow_private": self.settings.webhooks.allow_private,
            "max_attempts": self.settings.webhooks.max_attempts,
        }
        return self.pages.render(
            request, "editor_webhooks.html", context, status=status, headers=_SHOWN_ONCE, editor=signed_in(request)
        )

    def _endpoints(self, words: Words) -> list[dict[str, Any]]:
        """Each endpoint with its deliveries by status (worded) and its last attempts, newest first."""
        service = self.service()
        shown = []
        for view in list_endpoints(service):
            try:
                _endpoint, attempts = endpoint_attempts(service, view.endpoint.id, ATTEMPTS_SHOWN)
            except WebhookError:  # removed meanwhile
                continue
            shown.append(
                {
                    "endpoint": view.endpoint,
                    "secret": mask_secret(view.endpoint.secret),
                    "deliveries": [
                        (words.gettext(DELIVERY_WORDS.get(status, status)), count)
                        for status, count in sorted(view.deliveries.items())
                    ],
                    "attempts": attempts,
                }
            )
        return shown

    # --- Shared -----------------------------------------------------------------------------------------------

    def _check_csrf(self, request: Request, form: Form, back: str) -> None:
        words = self.pages.words_of(request)
        self.pages.check_csrf(request, form, (words.url(back), words.gettext("Back to the page")))


def _token_errors(words: Words, given: TokenForm) -> dict[str, str]:
    """What is wrong with a new token's name and scopes, worded in the page's language, by field."""
    errors = {}
    if not given.name:
        errors["name"] = words.gettext("Name: say who or what will use the token (a CMS, a CRM).")
    elif len(given.name) > MAX_NAME:
        errors["name"] = words.gettext("Name: at most %(most)s characters.", most=MAX_NAME)
    unknown = [scope for scope in given.scopes if scope not in SCOPES]
    if unknown:
        errors["scopes"] = words.gettext("Scopes: there is no scope '%(scope)s'.", scope=unknown[0])
    elif not given.scopes:
        errors["scopes"] = words.gettext("Scopes: choose at least one thing the token may do.")
    return errors


def _webhook_errors(words: Words, given: WebhookForm, *, allow_private: bool) -> dict[str, str]:
    """What is wrong with a new endpoint's URL and events, worded in the page's language, by field."""
    errors = {}
    url_error = _url_error(words, given.url, allow_private=allow_private)
    if url_error:
        errors["url"] = url_error
    unknown = [event for event in given.events if event not in EVENT_TYPES]
    if unknown:
        errors["events"] = words.gettext("Events: there is no event '%(event)s'.", event=unknown[0])
    elif not given.events:
        errors["events"] = words.gettext("Events: choose at least one event to send.")
    return errors


def _url_error(words: Words, url: str, *, allow_private: bool) -> str | None:
    """Why ``url`` cannot be a webhook endpoint (``app.webhooks.check_url``'s rules), or None."""
    if not url:
        return words.gettext("URL: enter the address the events are posted to.")
    if len(url) > MAX_URL:
        return words.gettext("URL: at most %(most)s characters.", most=MAX_URL)
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError:
        host = None
        parts = None
    if parts is None or parts.scheme.lower() not in ("http", "https") or not host:
        return words.gettext("URL: an address starting with https:// (or http://) and naming a host.")
    try:
        check_url(url, allow_private=allow_private)
    except WebhookError:
        return words.gettext(
            "URL: %(host)s is a loopback, private or local address, where webhooks are not sent unless the"
            " configuration allows it ([webhooks] allow_private = true).",
            host=host,
        )
    return None


def _notice(words: Words, request: Request) -> str:
    """What the page says after a post worked (``?done=``)."""
    done = request.query_params.get("done", "")
    return words.gettext(NOTICES[done]) if done in NOTICES else ""


def _not_found(words: Words, message: str, back: str) -> PageError:
    return PageError(404, words.gettext("Not found"), [message], links=[(words.url(back), words.gettext("Back"))])


def _tokens(_request: Request) -> str:
    return TOKENS


def _webhooks(_request: Request) -> str:
    return WEBHOOKS
