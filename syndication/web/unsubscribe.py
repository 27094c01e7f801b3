"""One-click unsubscribe (RFC 8058): the link in every digest's List-Unsubscribe header and footer.

``POST`` unsubscribes at once, with no cookie, login, CSRF token or redirect, whatever the body's encoding (mail
providers send ``List-Unsubscribe=One-Click`` urlencoded or multipart); the signed token is the authority.
``GET`` only shows a page with a button, so a link scanner that opens every URL unsubscribes nobody.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from html import escape

from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import Route

from syndication.errors import ConfigError, TokenError
from syndication.pipeline import Service

log = logging.getLogger(__name__)

PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>body{{font:16px/1.5 system-ui,sans-serif;max-width:36rem;margin:3rem auto;padding:0 1rem;color:#1b1b1b}}
button{{font:inherit;padding:.6rem 1.2rem;background:#0a7d55;color:#fff;border:0;border-radius:4px;cursor:pointer}}
</style></head><body><main><h1>{title}</h1>{body}</main></body></html>"""


def routes(service: Callable[[], Service]) -> list[Route]:
    """The unsubscribe routes; ``service`` gives the open store (opened once by the app)."""

    async def show(request: Request) -> HTMLResponse:
        token = request.path_params["token"]
        form = (
            f'<p>Stop receiving these emails?</p><form method="post" action="/unsubscribe/{escape(token)}">'
            '<input type="hidden" name="List-Unsubscribe" value="One-Click">'
            '<button type="submit">Unsubscribe</button></form>'
        )
        return HTMLResponse(PAGE.format(title="Unsubscribe", body=form), headers={"Cache-Control": "no-store"})

    async def one_click(request: Request) -> HTMLResponse:
        from starlette.concurrency import run_in_threadpool

        from syndication.subscriptions import unsubscribe

        await request.body()  # read whatever encoding the provider used; the token decides, not the body
        try:
            subscriber = await run_in_threadpool(unsubscribe, service(), request.path_params["token"])
        except TokenError as error:
            body = f"<p>{escape(str(error))}</p>"
            return HTMLResponse(PAGE.format(title="This link does not work", body=body), status_code=400)
        except ConfigError as error:  # no signing key: nobody's link can be checked; say so, don't guess
            log.error("one-click unsubscribe refused: %s", error)
            body = "<p>Unsubscribing is not available right now. Please try again later.</p>"
            return HTMLResponse(PAGE.format(title="Not available", body=body), status_code=503,
                                headers={"Retry-After": "3600"})  # fmt: skip
        site = escape(service().settings.site.title)
        text = (
            f"<p>You will receive no more emails from {site}.</p>" if subscriber else "<p>You are not subscribed.</p>"
        )
        return HTMLResponse(PAGE.format(title="You are unsubscribed", body=text), headers={"Cache-Control": "no-store"})

    return [
        Route("/unsubscribe/{token}", show, methods=["GET"]),
        Route("/unsubscribe/{token}", one_click, methods=["POST"]),
    ]
