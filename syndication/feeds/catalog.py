"""Which feeds exist, where they live and what one document of a feed holds. Pure: no SQL, no I/O.

Feed paths have one namespace per dimension (``themes/``, ``regions/``, ``authors/``), so a theme and an author
with the same slug never collide. Archive pages (RFC 5005) live under ``archive/<feed path>/<page id>``, the id
named after where the page begins (see ``syndication.feeds.build``), so a page keeps its URL for good.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from syndication.core.languages import language_name
from syndication.core.models import Author, Post, Region, Theme

Format = Literal["rss", "atom", "json"]
Dimension = Literal["site", "theme", "region", "author", "language"]
FORMATS: tuple[Format, ...] = ("rss", "atom", "json")


@dataclass(frozen=True, slots=True)
class FormatLabel:
    """How a feed format is shown to readers: its name on a page and its media type in autodiscovery links."""

    format: Format
    label: str
    media_type: str


# The formats as pages list them (Atom first: the richest of the three); one entry per format of FORMATS.
FORMAT_LABELS: tuple[FormatLabel, ...] = (
    FormatLabel("atom", "Atom", "application/atom+xml"),
    FormatLabel("rss", "RSS", "application/rss+xml"),
    FormatLabel("json", "JSON Feed", "application/feed+json"),
)
CONTENT_TYPES: Mapping[str, str] = {
    "rss": "application/rss+xml; charset=utf-8",
    "atom": "application/atom+xml; charset=utf-8",
    "json": "application/feed+json; charset=utf-8",
    "opml": "text/x-opml; charset=utf-8",
    "html": "text/html; charset=utf-8",
}
FEEDS_PREFIX = "/feeds/"


@dataclass(frozen=True, slots=True)
class Feed:
    """One feed: the whole site, or the posts of one theme, region or author."""

    dimension: Dimension
    slug: str | None
    name: str
    title: str
    description: str
    path: str

    def document_path(self, fmt: Format, archive_page: str | None = None) -> str:
        """The document's path under the feeds folder (and under ``/feeds/`` over HTTP)."""
        if archive_page is None:
            return f"{self.path}.{fmt}"
        return f"archive/{self.path}/{archive_page}.{fmt}"


@dataclass(frozen=True, slots=True)
class Site:
    """What every document needs to know about the site it belongs to."""

    title: str
    base_url: str
    language: str
    themes: Sequence[Theme]
    regions: Sequence[Region]
    full_content: bool
    hub: str | None = None
    _theme_names: dict[tuple[str, str], str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Every item of every feed looks up its themes' names: a dict rather than a scan of the themes, filled
        # with the site language's names now and with another language's the first time one is asked for.
        names = {(theme.slug, self.language): theme.name_in(self.language) for theme in self.themes}
        object.__setattr__(self, "_theme_names", names)

    def url(self, path: str) -> str:
        """The public URL of a document path."""
        return f"{self.base_url}{FEEDS_PREFIX}{path}"

    def theme_name(self, slug: str, language: str | None = None) -> str:
        """The human name of a theme slug in ``language`` (default: the site's; ``Theme.name_in`` falls back to the
        site language's name); the slug itself for a theme no longer configured."""
        key = (slug, language or self.language)
        name = self._theme_names.get(key)
        if name is None:
            theme = next((theme for theme in self.themes if theme.slug == slug), None)
            name = slug if theme is None else theme.name_in(key[1])
            self._theme_names[key] = name  # a race only writes the same name twice
        return name


@dataclass(frozen=True, slots=True)
class FeedDocument:
    """One document to write: a subscription document (newest posts) or one archive page."""

    site: Site
    feed: Feed
    fmt: Format
    posts: Sequence[Post]  # newest first
    updated: datetime
    archive_page: str | None = None  # None for the subscription document
    prev_archive_page: str | None = None  # the page just before this document, if any
    next_archive_page: str | None = None  # an archive page's next newer page (None: the subscription document)

    @property
    def path(self) -> str:
        """Where this document is written."""
        return self.feed.document_path(self.fmt, self.archive_page)

    @property
    def self_url(self) -> str:
        """This document's own public URL."""
        return self.site.url(self.path)

    @property
    def current_url(self) -> str:
        """The feed's subscription document in the same format."""
        return self.site.url(self.feed.document_path(self.fmt))

    @property
    def prev_archive_url(self) -> str | None:
        """The older archive page, for RFC 5005 ``prev-archive``."""
        if self.prev_archive_page is None:
            return None
        return self.site.url(self.feed.document_path(self.fmt, self.prev_archive_page))

    @property
    def next_archive_url(self) -> str | None:
        """For an archive page, the next newer one for RFC 5005 ``next-archive``: the newest archive page's is
        the subscription document, which holds the posts after it."""
        if self.archive_page is None:
            return None
        if self.next_archive_page is None:
            return self.current_url
        return self.site.url(self.feed.document_path(self.fmt, self.next_archive_page))

    @property
    def home_url(self) -> str:
        """The web page the feed stands for (its ``alternate`` link)."""
        return self.site.base_url + "/"


def feeds_of(site: Site, authors: Sequence[Author], languages: Sequence[str] = ()) -> list[Feed]:
    """Every feed the site publishes: the whole site, then each theme, region, author and language (a canonical
    tag, named in that language; its path is the tag in lower case). Titles are in the site's language: themes and
    regions by their names in it."""
    feeds = [Feed("site", None, site.title, site.title, f"Everything published by {site.title}.", "all")]
    themes = [(t, t.name_in(site.language)) for t in site.themes]
    regions = [(r, r.name_in(site.language)) for r in site.regions]
    feeds += [
        Feed("theme", t.slug, name, f"{site.title}: {name}", t.description or f"{name}: posts by {site.title}.",
             f"themes/{t.slug}")
        for t, name in themes
    ]  # fmt: skip
    feeds += [
        Feed("region", r.slug, name, f"{site.title}: {name}", f"Posts about {name} by {site.title}.",
             f"regions/{r.slug}")
        for r, name in regions
    ]  # fmt: skip
    feeds += [
        Feed("author", a.slug, a.name, f"{site.title}: {a.name}", f"Posts by {a.name} on {site.title}.",
             f"authors/{a.slug}")
        for a in authors
    ]  # fmt: skip
    feeds += [
        Feed("language", tag, language_name(tag), f"{site.title}: {language_name(tag)}",
             f"Posts in {language_name(tag, 'en')} by {site.title}.", f"languages/{tag.lower()}")
        for tag in languages
    ]  # fmt: skip
    return feeds


def updated_of(posts: Sequence[Post], fallback: datetime) -> datetime:
    """A document's date: its newest item's, never the build time, so an unchanged feed is byte-identical."""
    return max((post.updated for post in posts), default=fallback)
