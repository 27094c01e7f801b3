"""One-click unsubscribe (RFC 8058): the link in every digest's List-Unsubscribe header and footer.

``POST`` unsubscribes at once, with no cookie, login, CSRF token or redirect, whatever the body's encoding (mail
providers send ``List-Unsubscribe=One-Click`` urlencoded or multipart); the signed token is the authority.
``GET`` only shows a page with a button, so a link scanner that opens every URL unsubscribes nobody. The pages
are the site's own (its stylesheet and headers), and say ``no-referrer``: their address holds the token.
"""

from __future__ import annotations

from collections.abc import Callable

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from syndication.app.service import Service
from syndication.app.subscribers import unsubscribe
from syndication.web.errors import PageError, sentence
from syndication.web.forms import FormRefused, read_body
from syndication.web.templating import Pages

_TOKEN_PAGE = {"Referrer-Policy": "no-referrer"}


def routes(service: Callable[[], Service], pages: Pages) -> list[Route]:
    """The unsubscribe routes; ``service`` gives the open store (opened once by the app).

    A link that is not valid (TokenError) or no signing key to check it with (ConfigError) is answered by the
    app's error pages: nobody's link is guessed at.
    """

    async def show(request: Request) -> Response:
        context = {"title": "Unsubscribe", "action": request.url.path}
        return pages.render(request, "unsubscribe.html", context, headers=_TOKEN_PAGE)

    async def one_click(request: Request) -> Response:
        try:
            await read_body(request)  # whatever encoding the provider used; the token decides, not the body
        except FormRefused as error:
            raise PageError(error.status, "This request was not sent right", [sentence(error.reason)],
                            headers=_TOKEN_PAGE) from error  # fmt: skip
        token = request.path_params["token"]
        subscriber = await run_in_threadpool(lambda: unsubscribe(service(), token))
        site = service().settings.site.title
        text = f"You will receive no more emails from {site}." if subscriber else "You are not subscribed."
        return pages.message(request, "You are unsubscribed", [text], headers=_TOKEN_PAGE)

    return [
        Route("/unsubscribe/{token}", show, methods=["GET"]),
        Route("/unsubscribe/{token}", one_click, methods=["POST"]),
    ]
