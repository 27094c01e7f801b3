"""The site's front door: ``/``, a small page in the reader's language leading to the subscribe page, the past
editions, the themes and the feeds; and ``/favicon.ico``, which sends browsers that ask for it by that old name to
the icon every page links to (``favicon.svg``, one of the pages' assets)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from syndication.web.templating import Pages


def routes(pages: Pages) -> list[Route]:
    """``/`` and ``/favicon.ico`` (GET, and HEAD as every GET route takes it)."""

    async def home(request: Request) -> Response:
        return pages.render(request, "home.html", {"title": pages.settings.site.title},
                            headers={"Cache-Control": "public, max-age=300"}, public=True)  # fmt: skip

    async def favicon(request: Request) -> Response:
        # Not permanent: the icon's versioned address changes with its bytes.
        icon = f"/assets/favicon.svg?v={pages.assets['favicon.svg'].version}"
        return RedirectResponse(icon, status_code=302, headers={"Cache-Control": "public, max-age=86400"})

    return [Route("/", home, methods=["GET"]), Route("/favicon.ico", favicon, methods=["GET"])]
