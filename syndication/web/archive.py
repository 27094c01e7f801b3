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
import logging
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Final

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from syndication.app.editions import MessageBuilder
from syndication.app.gathering import list_posts, theme_post_counts
from syndication.app.service import Service
from syndication.app.subscribers import default_language, reader_of_view_link
from syndication.core.models import Post
from syndication.errors import ConfigError, TokenError
from syndication.feeds.build import feed_site
from syndication.feeds.catalog import CONTENT_TYPES, Feed, FeedDocument
from syndication.feeds.rss_atom import render_atom
from syndication.mailing.render import Links
from syndication.store import database, ledger
from syndication.web import convertors  # noqa: F401  (registers the row_id path type the routes use)
from syndication.web.feeds import document_of, freshness
from syndication.web.templating import Pages, email_headers, sentence

log = logging.getLogger(__name__)

ARCHIVE_SIZE: Final = 100
THEME_PAGE_POSTS: Final = 20
# A reader's own copy exists as soon as it is sent to them; the public copy once the whole edition is sent.
READABLE: Final = (ledger.SENDING, ledger.PAUSED, ledger.SENT)
_EPOCH: Final = datetime(2000, 1, 1, tzinfo=UTC)


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
            return await run_in_threadpool(self._edition, request, edition_id, token)
        except TokenError as error:
            return self.pages.message(
                request,
                "This link does not work",
                [sentence(error)],
                status=400,
                links=[(f"/editions/{edition_id}", "The public copy")],
            )
        except ConfigError as error:
            log.error("GET %s refused: %s", request.url.path, error)
            return self.pages.message(request, "Not available right now", ["Please try again later."], status=503)

    def _edition(self, request: Request, edition_id: int, token: str | None) -> Response:
        service = self.service()
        with database.transaction(service.engine) as session:
            edition = ledger.edition(session, edition_id)
        if edition is None or edition.status not in READABLE:
            return self._no_edition(request, edition_id)
        builder = MessageBuilder(service)
        base = self.settings.site.base_url
        if token is not None:
            reader = reader_of_view_link(service, edition_id, token)
            if reader is not None:
                email = builder.edition_email(edition, reader.themes, reader.language)
                if email is not None:
                    mine = email.personalised(builder.links(edition, reader))
                    return HTMLResponse(mine.html, headers=email_headers(private=True))
        if edition.status != ledger.SENT:
            return self._no_edition(request, edition_id)
        public = builder.edition_email(edition, None, default_language(self.settings))
        if public is None:
            return self._no_edition(request, edition_id)
        links = Links(
            unsubscribe=f"{base}/subscribe",
            preferences=f"{base}/subscribe",
            view_online=f"{base}/editions/{edition_id}",
        )
        return HTMLResponse(public.personalised(links).html, headers=email_headers(private=False))

    def _no_edition(self, request: Request, edition_id: int) -> Response:
        return self.pages.message(
            request,
            "No such edition",
            [f"There is no sent edition {edition_id}."],
            status=404,
            links=[("/editions/", "Every past edition")],
        )

    async def editions_page(self, request: Request) -> Response:
        """The sent editions, newest first."""
        editions = await run_in_threadpool(self._sent_editions)
        context = {"title": "Past editions", "editions": [(e, self._title(e)) for e in editions]}
        return self.pages.render(request, "editions.html", context, headers={"Cache-Control": "public, max-age=300"})

    async def editions_feed(self, request: Request) -> Response:
        """``/feeds/editions.atom``: the sent editions as an Atom feed."""
        body, updated = await run_in_threadpool(self._editions_atom)
        # Validated as the built feeds are (weak If-None-Match, If-Modified-Since, a gzip variant of its own).
        etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
        cache_control = f"public, max-age={self.settings.feeds.max_age_seconds}".encode()
        last_modified = format_datetime(updated.astimezone(UTC), usegmt=True)
        document = document_of("", etag, last_modified, CONTENT_TYPES["atom"], cache_control)
        fresh, compress = freshness(request.scope["headers"], document)
        lines = [(b"etag", document.gzip_etag if compress else document.etag), *document.validators]
        if fresh:
            return Response(status_code=304, headers=_header_dict(lines))
        if compress:
            body = gzip.compress(body, compresslevel=6, mtime=0)
            lines.append((b"content-encoding", b"gzip"))
        return Response(body, headers=_header_dict([*lines, *document.metadata]))

    def _editions_atom(self) -> tuple[bytes, datetime]:
        site = replace(feed_site(self.settings), full_content=False)
        title = self.settings.site.title
        feed = Feed("site", None, "Editions", f"{title}: editions", f"Every digest {title} sent.", "editions")
        base = self.settings.site.base_url
        entries = [
            Post(
                guid=f"{base}/editions/{edition.id}",
                title=self._title(edition),
                url=f"{base}/editions/{edition.id}",
                summary=f"The {edition.cadence} digest of {title}: what was published {self._window(edition)}.",
                content_html="",
                published=edition.until,
                updated=edition.until,
                language=self.settings.site.language,
            )
            for edition in self._sent_editions()
        ]
        updated = max((entry.updated for entry in entries), default=_EPOCH)
        return render_atom(FeedDocument(site, feed, "atom", entries, updated)), updated

    def _sent_editions(self) -> list[ledger.Edition]:
        service = self.service()
        with database.transaction(service.engine) as session:
            return [e for e in ledger.editions(session, limit=ARCHIVE_SIZE) if e.status == ledger.SENT]

    def _title(self, edition: ledger.Edition) -> str:
        return edition.subject or f"{edition.cadence.capitalize()} digest, {self._window(edition)}"

    def _window(self, edition: ledger.Edition) -> str:
        day = self.pages.environment.filters["day"]
        return f"{day(edition.since)} to {day(edition.until)}"

    # --- Themes -----------------------------------------------------------------------------------------------

    async def themes_page(self, request: Request) -> Response:
        """Every theme with its number of posts."""
        counts = await run_in_threadpool(theme_post_counts, self.service())
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
            return self.pages.message(
                request,
                "No such theme",
                [f"There is no theme {slug!r}."],
                status=404,
                links=[("/themes/", "Every theme")],
            )
        posts = await run_in_threadpool(lambda: list_posts(self.service(), theme=slug, limit=THEME_PAGE_POSTS))
        names = {t.slug: t.name for t in self.settings.themes}
        context = {"title": theme.name, "theme": theme, "posts": posts, "names": names}
        return self.pages.render(request, "theme.html", context, headers={"Cache-Control": "public, max-age=300"})


def _header_dict(lines: list[tuple[bytes, bytes]]) -> dict[str, str]:
    return {name.decode("latin-1"): value.decode("latin-1") for name, value in lines}
