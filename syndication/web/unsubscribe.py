"""One-click unsubscribe (RFC 8058): the link in every digest's List-Unsubscribe header and footer.

``POST`` unsubscribes at once, with no cookie, login, CSRF token or redirect, whatever the body's encoding (mail
providers send ``List-Unsubscribe=One-Click`` urlencoded or multipart); the signed token is the authority.
``GET`` only shows a page with a button, so a link scanner that opens every URL unsubscribes nobody. The pages
are the site's own (its stylesheet and headers), and say ``no-referrer``: their address holds the token.

The pages are in the subscriber's language (the one they chose for their emails) unless the URL chooses another
(``?lang=``); the ``GET`` page looks the subscriber up for that only, and a link it cannot read is still shown its
button (the ``POST`` answers for the link, as before), in the browser's language.
"""

from __future__ import annotations

from collections.abc import Callable

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from syndication.app.service import Service
from syndication.app.subscribers import subscriber_for_link, unsubscribe
from syndication.errors import ConfigError, TokenError
from syndication.web.errors import PageError
from syndication.web.forms import FormRefused, read_body
from syndication.web.templating import Pages

_TOKEN_PAGE = {"Referrer-Policy": "no-referrer"}


def routes(service: Callable[[], Service], pages: Pages) -> list[Route]:
    """The unsubscribe routes; ``service`` gives the open store (opened once by the app).

    A link that is not valid (TokenError) or no signing key to check it with (ConfigError) is answered by the
    app's error pages: nobody's link is guessed at.
    """

    def language_of(token: str) -> str | None:
        """The language the link's subscriber chose, or None for a link that cannot be read (or no one's)."""
        try:
            found = subscriber_for_link(service(), "unsubscribe", token)
        except (TokenError, ConfigError):
            return None
        return found.language if found else None

    async def show(request: Request) -> Response:
        language = await run_in_threadpool(language_of, request.path_params["token"])
        words = pages.words(request, language)
        # The form posts to this same address, its ``lang`` kept: the answer is in the language of this page.
        context = {"title": words.gettext("Unsubscribe"), "action": words.url(request.url.path)}
        return pages.render(request, "unsubscribe.html", context, headers=_TOKEN_PAGE)

    async def one_click(request: Request) -> Response:
        words = pages.words(request)
        try:
            await read_body(request)  # whatever encoding the provider used; the token decides, not the body
        except FormRefused as error:
            raise PageError(error.status, words.gettext("This request was not sent right"), [error.worded(words)],
                            headers=_TOKEN_PAGE) from error  # fmt: skip
        token = request.path_params["token"]
        subscriber = await run_in_threadpool(lambda: unsubscribe(service(), token))
        if subscriber is not None:
            words = pages.words(request, subscriber.language)
        site = service().settings.site.title
        text = (
            words.gettext("You will receive no more emails from %(site)s.", site=site)
            if subscriber
            else words.gettext("You are not subscribed.")
        )
        return pages.message(request, words.gettext("You are unsubscribed"), [text], headers=_TOKEN_PAGE)

    return [
        Route("/unsubscribe/{token}", show, methods=["GET"]),
        Route("/unsubscribe/{token}", one_click, methods=["POST"]),
    ]
