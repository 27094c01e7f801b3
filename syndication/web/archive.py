"""The archive: every sent edition at a stable URL and in a feed of its own, and a page per theme.

- ``/editions/<id>`` shows an edition as its email. With ``?t=<view token>`` (the "view in browser" link of
  every digest) it is that reader's own copy (their themes, language and links), from the moment it is sent;
  without, it is the public copy (every theme, the site's language, no personal links), once the edition is sent.
- ``/editions/`` lists the sent editions and ``/feeds/editions.atom`` carries them, written by the feeds' own
  Atom writer.
- ``/themes/`` and ``/themes/<slug>`` (the digests' "N more on <theme>" links) list recent posts, with
  autodiscovery links to the theme's feeds.

The list and theme pages are worded in the reader's language (``web.languages``); an edition is shown as its
email was written (a reader's copy in their language, the public copy in the site's), and the editions feed in
the site's language.
"""

from __future__ import annotations

import gzip
import hashlib
import threading
from collections import OrderedDict
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
from syndication.app.publishing import RenderedFeed, editions_feed, feed_formats
from syndication.app.service import Service
from syndication.core.editions import READABLE
from syndication.core.models import Edition
from syndication.errors import TokenError
from syndication.web import convertors  # noqa: F401  (registers the row_id path type the routes use)
from syndication.web.errors import PageError, token_refusal
from syndication.web.feeds import document_of, freshness
from syndication.web.languages import Words
from syndication.web.templating import Pages, email_headers

ARCHIVE_SIZE: Final = 100
THEME_PAGE_POSTS: Final = 20
# Public copies kept rendered (premailer makes each in tens of milliseconds; a sent edition's never changes).
PUBLIC_COPIES: Final = 64


class ArchivePages:
    """The edition and theme pages of one site."""

    def __init__(self, service: Callable[[], Service], pages: Pages) -> None:
        self.service = service
        self.pages = pages
        self.settings = pages.settings
        # Kept rendered, checked against the store on every request: a sent edition's public copy never changes
        # (what an edition holds is fixed when it is made, and only a sent one has a public copy), so it is kept
        # by its id; the editions feed is kept with the list of sent editions it was written from, and written
        # again when a request finds another list (one query of at most ARCHIVE_SIZE rows).
        self._public: OrderedDict[int, str] = OrderedDict()
        self._feed: tuple[tuple[Edition, ...], RenderedFeed] | None = None
        self._lock = threading.Lock()

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
        words = self.pages.words(request)
        try:
            return await run_in_threadpool(self._edition, words, edition_id, token)
        except TokenError as error:  # the link's own edition has a public copy to offer instead
            raise PageError(
                400,
                words.gettext("This link does not work"),
                [token_refusal(error, words)],
                links=[(words.url(f"/editions/{edition_id}"), words.gettext("The public copy"))],
            ) from error

    def _edition(self, words: Words, edition_id: int, token: str | None) -> Response:
        service = self.service()
        edition = find_edition(service, edition_id)
        if edition is None or edition.status not in READABLE:
            raise _no_edition(words, edition_id)
        if token is not None:
            mine = reader_copy(service, edition, token)
            if mine is not None:
                return HTMLResponse(mine.html, headers=email_headers(private=True))
        html = self._public_html(service, edition)
        if html is None:  # not sent to everyone yet, or nothing in it for a reader of everything
            raise _no_edition(words, edition_id)
        return HTMLResponse(html, headers=email_headers(private=False))

    def _public_html(self, service: Service, edition: Edition) -> str | None:
        with self._lock:
            kept = self._public.get(edition.id)
            if kept is not None:
                self._public.move_to_end(edition.id)
                return kept
        public = public_copy(service, edition)
        if public is None:
            return None
        with self._lock:
            self._public[edition.id] = public.html
            while len(self._public) > PUBLIC_COPIES:
                self._public.popitem(last=False)
        return public.html

    async def editions_page(self, request: Request) -> Response:
        """The sent editions, newest first."""
        words = self.pages.words(request)
        editions = await run_in_threadpool(lambda: sent_editions(self.service(), ARCHIVE_SIZE))
        context = {
            "title": words.gettext("Past editions"),
            "editions": [(e, self._title(words, e)) for e in editions],
        }
        return self.pages.render(
            request, "editions.html", context, headers={"Cache-Control": "public, max-age=300"}, public=True
        )

    async def editions_feed(self, request: Request) -> Response:
        """``/feeds/editions.atom``: the sent editions as an Atom feed."""
        # The feed is one document for every reader: worded in the site's language.
        words = self.pages.languages.words(self.pages.languages.default)
        site = self.settings.site.title
        rendered = await run_in_threadpool(self._editions_feed, words, site)
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

    def _editions_feed(self, words: Words, site: str) -> RenderedFeed:
        service = self.service()
        editions = tuple(sent_editions(service, ARCHIVE_SIZE))
        with self._lock:
            if self._feed is not None and self._feed[0] == editions:
                return self._feed[1]
        rendered = editions_feed(
            service,
            editions,
            title=words.gettext("%(site)s: editions", site=site),
            description=words.gettext("Every digest %(site)s sent.", site=site),
            title_of=lambda edition: self._title(words, edition),
            summary_of=lambda edition: self._summary(words, edition),
        )
        with self._lock:
            self._feed = (editions, rendered)
        return rendered

    def _title(self, words: Words, edition: Edition) -> str:
        """An edition's subject, or (an edition without one) its cadence and window: ``Weekly digest, 1 May 2024
        to 1 Jun 2024``."""
        if edition.subject:
            return edition.subject
        window = self._window(words, edition)
        titles = {
            "daily": words.gettext("Daily digest, %(window)s", window=window),
            "weekly": words.gettext("Weekly digest, %(window)s", window=window),
            "monthly": words.gettext("Monthly digest, %(window)s", window=window),
        }
        return titles.get(edition.cadence, f"{words.cadence(edition.cadence)}, {window}")

    def _summary(self, words: Words, edition: Edition) -> str:
        """One sentence about an edition, for its entry in the feed of editions: ``The weekly digest of <site>:
        what was published 1 May 2024 to 1 Jun 2024.``"""
        site, window = self.settings.site.title, self._window(words, edition)
        summaries = {
            "daily": words.gettext(
                "The daily digest of %(site)s: what was published %(window)s.", site=site, window=window
            ),
            "weekly": words.gettext(
                "The weekly digest of %(site)s: what was published %(window)s.", site=site, window=window
            ),
            "monthly": words.gettext(
                "The monthly digest of %(site)s: what was published %(window)s.", site=site, window=window
            ),
        }
        return summaries.get(edition.cadence, f"{words.cadence(edition.cadence)}: {window}")

    def _window(self, words: Words, edition: Edition) -> str:
        return words.gettext("%(since)s to %(until)s", since=words.day(edition.since), until=words.day(edition.until))

    # --- Themes -----------------------------------------------------------------------------------------------

    async def themes_page(self, request: Request) -> Response:
        """Every theme with its number of posts."""
        words = self.pages.words(request)
        counts = await run_in_threadpool(lambda: theme_post_counts(self.service()))
        themes = [(theme, counts.get(theme.slug, 0)) for theme in self.settings.theme_list]
        return self.pages.render(
            request,
            "themes.html",
            {"title": words.gettext("Themes"), "themes": themes},
            headers={"Cache-Control": "public, max-age=300"},
            public=True,
        )

    async def theme_page(self, request: Request) -> Response:
        """A theme's newest posts, its feeds (with autodiscovery links) and a way to subscribe to it."""
        slug = request.path_params["slug"]
        words = self.pages.words(request)
        theme = next((t for t in self.settings.theme_list if t.slug == slug), None)
        if theme is None:
            raise PageError(
                404,
                words.gettext("No such theme"),
                [words.gettext("There is no theme '%(theme)s'.", theme=slug)],
                links=[(words.url("/themes/"), words.gettext("Every theme"))],
            )
        posts = await run_in_threadpool(lambda: list_posts(self.service(), theme=slug, limit=THEME_PAGE_POSTS))
        names = {t.slug: t.name_in(words.language) for t in self.settings.theme_list}

        def also_in(slugs: list[str]) -> str:
            return ", ".join(names.get(other, other) for other in slugs)

        context = {
            "title": theme.name_in(words.language),
            "theme": theme,
            "posts": posts,
            "also_in": also_in,
            "feed_formats": feed_formats(),
        }
        return self.pages.render(
            request, "theme.html", context, headers={"Cache-Control": "public, max-age=300"}, public=True
        )


def _no_edition(words: Words, edition_id: int) -> PageError:
    """The answer for an edition that does not exist or cannot be read (yet): the same, so as to tell nothing."""
    return PageError(
        404,
        words.gettext("No such edition"),
        [words.gettext("There is no sent edition %(number)s.", number=edition_id)],
        links=[(words.url("/editions/"), words.gettext("Every past edition"))],
    )


def _header_dict(lines: list[tuple[bytes, bytes]]) -> dict[str, str]:
    return {name.decode("latin-1"): value.decode("latin-1") for name, value in lines}
