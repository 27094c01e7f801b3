"""Which feeds exist, where they live and what one document of a feed holds. Pure: no SQL, no I/O.

A feed's own words (its description, the headings of the OPML list and of the index page) are in the site's
language, a language's own feed in that language, worded by ``FeedWords`` from the web pages' catalog (domain
``web``: the feeds are public documents of the site, as its pages are); the build loads the catalogs
(``feeds.build.feed_words``). Titles name themes and regions by their names in the same language.

Feed paths have one namespace per dimension (``themes/``, ``regions/``, ``authors/``), so a theme and an author
with the same slug never collide. Archive pages (RFC 5005) live under ``archive/<feed path>/<page id>``, the id
named after where the page begins (see ``syndication.feeds.build``), so a page keeps its URL for good.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from gettext import NullTranslations
from typing import Literal

from babel import Locale, UnknownLocaleError

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


def N_(message: str) -> str:
    """Marks ``message`` for the web catalog where it is worded later (``FeedWords.gettext``)."""
    return message


# The feeds' descriptions (``feeds_of``); the build's fingerprint holds their wording in every catalog, so a
# changed translation rewrites every document.
DESCRIPTIONS: Mapping[str, str] = {
    "site": N_("Everything published by %(site)s."),
    "theme": N_("%(name)s: posts by %(site)s."),
    "region": N_("Posts about %(name)s by %(site)s."),
    "author": N_("Posts by %(name)s on %(site)s."),
    "language": N_("Posts in %(language)s by %(site)s."),
}


@dataclass(frozen=True, slots=True)
class FeedWords:
    """The feeds' own words in one language: ``translations``, the web pages' catalog of ``language`` (the
    default, NullTranslations, words them in English, the language of the sources)."""

    language: str = "en"
    translations: NullTranslations = field(default_factory=NullTranslations)

    def gettext(self, message: str, **values: object) -> str:
        """``message`` in this language, its ``%(name)s`` placeholders filled from ``values``."""
        return self.translations.gettext(message) % values

    def language_in_sentence(self, tag: str) -> str:
        """The name of the language ``tag`` as written inside a sentence of this language (``español`` in
        Spanish, ``Spanish`` in English); the tag when Babel does not know it."""
        try:
            name = Locale.parse(tag.replace("-", "_")).get_display_name(self.language.replace("-", "_"))
        except (UnknownLocaleError, ValueError):
            return tag
        return name or tag


ENGLISH = FeedWords()
# The words of a language, None when the web pages have no catalog for it (``feeds.build.feed_words``).
Wording = Callable[[str], FeedWords | None]


def _english_only(language: str) -> FeedWords | None:
    return None


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
    def language(self) -> str:
        """The language the document is written in, and its categories labelled in: a language's own feed, that
        language (its title names it in itself); every other feed, the site's."""
        if self.feed.dimension == "language" and self.feed.slug:
            return self.feed.slug
        return self.site.language

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


def feeds_of(
    site: Site, authors: Sequence[Author], languages: Sequence[str] = (), wording: Wording = _english_only
) -> list[Feed]:
    """Every feed the site publishes: the whole site, then each theme, region, author and language (a canonical
    tag; its path is the tag in lower case). Titles and descriptions are in the site's language (``wording``'s
    words for it; English when it has none), themes and regions named in it; a language's own feed is named in
    that language, and described in it when ``wording`` has its words (else in the site's)."""
    words = wording(site.language) or ENGLISH
    title = site.title

    def described(dimension: str, in_words: FeedWords = words, **values: str) -> str:
        return in_words.gettext(DESCRIPTIONS[dimension], site=title, **values)

    feeds = [Feed("site", None, title, title, described("site"), "all")]
    themes = [(t, t.name_in(site.language)) for t in site.themes]
    regions = [(r, r.name_in(site.language)) for r in site.regions]
    feeds += [
        Feed("theme", t.slug, name, f"{title}: {name}", t.description or described("theme", name=name),
             f"themes/{t.slug}")
        for t, name in themes
    ]  # fmt: skip
    feeds += [
        Feed("region", r.slug, name, f"{title}: {name}", described("region", name=name), f"regions/{r.slug}")
        for r, name in regions
    ]  # fmt: skip
    feeds += [
        Feed("author", a.slug, a.name, f"{title}: {a.name}", described("author", name=a.name), f"authors/{a.slug}")
        for a in authors
    ]  # fmt: skip
    for tag in languages:
        own = wording(tag) or words
        description = described("language", own, language=own.language_in_sentence(tag))
        feeds.append(
            Feed("language", tag, language_name(tag), f"{title}: {language_name(tag)}", description,
                 f"languages/{tag.lower()}")
        )  # fmt: skip
    return feeds


def updated_of(posts: Sequence[Post], fallback: datetime) -> datetime:
    """A document's date: its newest item's, never the build time, so an unchanged feed is byte-identical."""
    return max((post.updated for post in posts), default=fallback)
