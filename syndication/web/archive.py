"""The archive: every sent edition at a stable URL and in a feed of its own, and a page per theme.

- ``/editions/<id>`` shows an edition as its email. With ``?t=<view token>`` (the "view in browser" link of
  every digest) it is that reader's own copy (their themes, language and links), from the moment it is sent;
  without, it is the public copy (every theme, the site's language, no personal links), once the edition is sent.
- ``/editions/`` lists the sent editions and ``/feeds/editions.atom`` carries them, written by the feeds' own
  Atom writer.
- ``/themes/`` and ``/themes/<slug>`` (the digests' "N more on <theme>" links) list recent posts, with
  autodiscovery links to the theme's feeds.
"""

from __future__ import annotations

import gzip
import hashlib
from collections.abc import Callable
from datetime import UTC
from email.utils import format_datetime
from typing import Final

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from syndication.app.editions import find_edition, public_copy, reader_copy, sent_editions
from syndication.app.gathering import list_posts, theme_post_counts
from syndication.app.publishing import editions_feed, feed_formats
from syndication.app.service import Service
from syndication.core.editions import READABLE
from syndication.core.models import Edition
from syndication.errors import TokenError
from syndication.web import convertors  # noqa: F401  (registers the row_id path type the routes use)
from syndication.web.errors import PageError, sentence
from syndication.web.feeds import document_of, freshness
from syndication.web.templating import Pages, email_headers

ARCHIVE_SIZE: Final = 100
THEME_PAGE_POSTS: Final = 20


class ArchivePages:
    """The edition and theme pages of one site."""

    def __init__(self, service: Callable[[], Service], pages: Pages) -> None:
        self.service = service
        self.pages = pages
        self.settings = pages.settings

    def routes(self) -> list[Route]:
        """The routes of these pages (``/feeds/editions.atom`` must come before the feed files' route)."""
        return [
            Route("/feeds/editions.atom", self.editions_feed, methods=["GET"]),
            Route("/editions/", self.editions_page, methods=["GET"]),
            Route("/editions/{edition_id:row_id}", self.edition, methods=["GET"]),
            Route("/themes/", self.themes_page, methods=["GET"]),
            Route("/themes/{slug}", self.theme_page, methods=["GET"]),
        ]

    # --- Editions ---------------------------------------------------------------------------------------------

    async def edition(self, request: Request) -> Response:
        """One edition as its email: a reader's copy with a view token, else the public copy."""
        edition_id: int = request.path_params["edition_id"]
        token = request.query_params.get("t") or None  # an empty token is no token: the public copy
        try:
            return await run_in_threadpool(self._edition, edition_id, token)
        except TokenError as error:  # the link's own edition has a public copy to offer instead
            raise PageError(
                400,
                "This link does not work",
                [sentence(error)],
                links=[(f"/editions/{edition_id}", "The public copy")],
            ) from error

    def _edition(self, edition_id: int, token: str | None) -> Response:
        service = self.service()
        edition = find_edition(service, edition_id)
        if edition is None or edition.status not in READABLE:
            raise _no_edition(edition_id)
        if token is not None:
            mine = reader_copy(service, edition, token)
            if mine is not None:
                return HTMLResponse(mine.html, headers=email_headers(private=True))
        public = public_copy(service, edition)
        if public is None:  # not sent to everyone yet, or nothing in it for a reader of everything
            raise _no_edition(edition_id)
        return HTMLResponse(public.html, headers=email_headers(private=False))

    async def editions_page(self, request: Request) -> Response:
        """The sent editions, newest first."""
        editions = await run_in_threadpool(lambda: sent_editions(self.service(), ARCHIVE_SIZE))
        context = {"title": "Past editions", "editions": [(e, self._title(e)) for e in editions]}
        return self.pages.render(request, "editions.html", context, headers={"Cache-Control": "public, max-age=300"})

    async def editions_feed(self, request: Request) -> Response:
        """``/feeds/editions.atom``: the sent editions as an Atom feed."""
        rendered = await run_in_threadpool(
            lambda: editions_feed(self.service(), title_of=self._title, window_of=self._window, limit=ARCHIVE_SIZE)
        )
        body = rendered.body
        # Validated as the built feeds are (weak If-None-Match, If-Modified-Since, a gzip variant of its own).
        etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
        cache_control = f"public, max-age={self.settings.feeds.max_age_seconds}".encode()
        last_modified = format_datetime(rendered.updated.astimezone(UTC), usegmt=True)
        document = document_of("", etag, last_modified, rendered.content_type, cache_control)
        fresh, compress = freshness(request.scope["headers"], document)
        lines = [(b"etag", document.gzip_etag if compress else document.etag), *document.validators]
        if fresh:
            return Response(status_code=304, headers=_header_dict(lines))
        if compress:
            body = gzip.compress(body, compresslevel=6, mtime=0)
            lines.append((b"content-encoding", b"gzip"))
        return Response(body, headers=_header_dict([*lines, *document.metadata]))

    def _title(self, edition: Edition) -> str:
        return edition.subject or f"{edition.cadence.capitalize()} digest, {self._window(edition)}"

    def _window(self, edition: Edition) -> str:
        day = self.pages.environment.filters["day"]
        return f"{day(edition.since)} to {day(edition.until)}"

    # --- Themes -----------------------------------------------------------------------------------------------

    async def themes_page(self, request: Request) -> Response:
        """Every theme with its number of posts."""
        counts = await run_in_threadpool(lambda: theme_post_counts(self.service()))
        themes = [(theme, counts.get(theme.slug, 0)) for theme in self.settings.themes]
        return self.pages.render(
            request,
            "themes.html",
            {"title": "Themes", "themes": themes},
            headers={"Cache-Control": "public, max-age=300"},
        )

    async def theme_page(self, request: Request) -> Response:
        """A theme's newest posts, its feeds (with autodiscovery links) and a way to subscribe to it."""
        slug = request.path_params["slug"]
        theme = next((t for t in self.settings.themes if t.slug == slug), None)
        if theme is None:
            raise PageError(404, "No such theme", [f"There is no theme {slug!r}."], links=[("/themes/", "Every theme")])
        posts = await run_in_threadpool(lambda: list_posts(self.service(), theme=slug, limit=THEME_PAGE_POSTS))
        names = {t.slug: t.name for t in self.settings.themes}
        context = {"title": theme.name, "theme": theme, "posts": posts, "names": names, "feed_formats": feed_formats()}
        return self.pages.render(request, "theme.html", context, headers={"Cache-Control": "public, max-age=300"})


def _no_edition(edition_id: int) -> PageError:
    """The answer for an edition that does not exist or cannot be read (yet): the same, so as to tell nothing."""
    return PageError(
        404,
        "No such edition",
        [f"There is no sent edition {edition_id}."],
        links=[("/editions/", "Every past edition")],
    )


def _header_dict(lines: list[tuple[bytes, bytes]]) -> dict[str, str]:
    return {name.decode("latin-1"): value.decode("latin-1") for name, value in lines}
