"""RSS 2.0 and Atom 1.0 documents, written with feedgen: the only module that uses it.

feedgen's traps, handled here: it stamps "now" unless given dates (we give the newest item's), the RSS channel
``<link>`` is the last ``link()`` added (so the alternate link goes last), ``add_entry`` prepends by default,
``content(type="CDATA")`` is invalid Atom (we use ``html``), naive datetimes raise (ours are always UTC),
``guid()`` and ``id()`` overwrite each other (each format gets only its own), and feedgen 1.0.0 drops the
``rel`` and ``type`` of every Atom *entry* link (a shadowed loop variable), which would turn an image enclosure
into a second "alternate" link. So feedgen gets only the entry's alternate link; its attributes, the image
enclosure, the links feedgen does not write (hub, prev-archive, current in RSS) and RFC 5005's ``fh:archive``
come from a small feedgen extension.
"""

from __future__ import annotations

import functools
import mimetypes
import re
from typing import Any

from feedgen.ext.base import BaseEntryExtension, BaseExtension
from feedgen.feed import FeedGenerator
from lxml import etree

from syndication import __version__
from syndication.core.models import Post
from syndication.feeds.catalog import FeedDocument

ATOM_NS = "http://www.w3.org/2005/Atom"
HISTORY_NS = "http://purl.org/syndication/history/1.0"
DC_NS = "http://purl.org/dc/elements/1.1/"
DC_CREATOR = f"{{{DC_NS}}}creator"
DC_LANGUAGE = f"{{{DC_NS}}}language"
XML_LANG = "{http://www.w3.org/XML/1998/namespace}lang"
GENERATOR_URI = "https://github.com/syndication/syndication"
SELF_TYPES = {"rss": "application/rss+xml", "atom": "application/atom+xml"}
_HAS_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:\S+$")


class _HistoryExtension(BaseExtension):  # type: ignore[misc]
    """Adds the links feedgen leaves out of RSS, and RFC 5005's archive marker to both formats."""

    def __init__(self) -> None:
        self.rss_links: list[tuple[str, str]] = []
        self.archive = False

    def extend_ns(self) -> dict[str, str]:
        return {"fh": HISTORY_NS}  # feedgen's RSS already declares atom:

    def extend_rss(self, rss: Any) -> Any:
        channel = rss[0]
        for rel, href in self.rss_links:
            etree.SubElement(channel, f"{{{ATOM_NS}}}link", rel=rel, href=href)
        if self.archive:
            etree.SubElement(channel, f"{{{HISTORY_NS}}}archive")
        return rss

    def extend_atom(self, atom: Any) -> Any:
        if self.archive:
            etree.SubElement(atom, f"{{{HISTORY_NS}}}archive")
        return atom


class _EntryExtras(BaseEntryExtension):  # type: ignore[misc]
    """What feedgen writes wrongly or not at all for one entry.

    That is the Atom id, the alternate link's attributes, the image enclosure in both formats, RSS's
    ``dc:creator`` elements and each post's language (Atom's ``xml:lang``, RSS's ``dc:language``: feedgen sets
    neither per entry). Writing these here rather than through
    feedgen's setters and its Dublin Core extension is also a third cheaper: an entry is built once for each feed
    it is in.
    """

    def __init__(self) -> None:
        self.atom_id = ""
        self.enclosure: tuple[str, str] | None = None  # (url, media type)
        self.creators: list[str] = []
        self.language: str | None = None

    def extend_atom(self, entry: Any) -> Any:
        # feedgen builds Atom elements without a namespace and lets the root's default xmlns cover them.
        entry[0].text = self.atom_id  # <id> comes first; guid() set it to the RSS guid, which need not be an IRI
        if self.language is not None:
            entry.set(XML_LANG, self.language)  # the entry's text constructs inherit it from here
        alternate = next(entry.iterchildren("link"), None)
        if alternate is not None:
            alternate.set("rel", "alternate")
            alternate.set("type", "text/html")
        if self.enclosure is not None:
            url, media_type = self.enclosure
            etree.SubElement(entry, "link", href=url, rel="enclosure", type=media_type, length="0")
        return entry

    def extend_rss(self, item: Any) -> Any:
        if self.enclosure is not None:
            url, media_type = self.enclosure
            etree.SubElement(item, "enclosure", url=url, length="0", type=media_type)
        for name in self.creators:
            etree.SubElement(item, DC_CREATOR).text = name
        if self.language is not None:
            etree.SubElement(item, DC_LANGUAGE).text = self.language
        return item


class _Creators(BaseExtension):  # type: ignore[misc]
    """Declares Dublin Core in RSS, where each item names its authors as ``dc:creator``."""

    def extend_ns(self) -> dict[str, str]:
        return {"dc": DC_NS}


def atom_id(guid: str) -> str:
    """An Atom id for a post: its guid when that is already an IRI, else a stable URN made from it."""
    if _HAS_SCHEME.match(guid):
        return guid
    return "urn:syndication:guid:" + "".join(ch if ch.isalnum() or ch in "-._~" else f"%{ord(ch):02X}" for ch in guid)


def image_type(url: str) -> str:
    """The media type of an image URL, from its extension (JPEG when unknown)."""
    path = url.split("?", 1)[0].split("#", 1)[0]
    name = path.rsplit("/", 1)[-1]
    return _image_type_of_extension(name.rsplit(".", 1)[-1].lower() if "." in name else "")


@functools.lru_cache(maxsize=256)
def _image_type_of_extension(extension: str) -> str:
    guessed, _ = mimetypes.guess_type("image." + extension) if extension else (None, None)
    return guessed if guessed and guessed.startswith("image/") else "image/jpeg"


def _generator(document: FeedDocument) -> FeedGenerator:
    """A generator holding the feed's metadata and entries; ``_point_at`` then makes it one document."""
    site, feed = document.site, document.feed
    generator = FeedGenerator()
    generator.register_extension("history", _HistoryExtension, _EntryExtras, atom=True, rss=True)
    generator.register_extension("creators", _Creators, atom=False, rss=True)  # entries' creators: _EntryExtras
    generator.title(feed.title)
    generator.subtitle(feed.description)
    generator.language(document.language)
    generator.author({"name": site.title, "uri": site.base_url + "/"})
    generator.generator("syndication", version=__version__, uri=GENERATOR_URI)
    generator.updated(document.updated)
    generator.lastBuildDate(document.updated)
    for post in document.posts:
        _add_entry(generator, document, post)
    return generator


def _point_at(generator: FeedGenerator, document: FeedDocument) -> FeedGenerator:
    """Give the generator this document's identity and links (the same entries serve RSS and Atom)."""
    generator.id(document.self_url)
    links = [{"href": document.self_url, "rel": "self", "type": SELF_TYPES[document.fmt]}]
    extra: list[tuple[str, str]] = []
    if document.site.hub:
        extra.append(("hub", document.site.hub))
    if document.archive_page is not None:
        extra.append(("current", document.current_url))
    if document.prev_archive_url:
        extra.append(("prev-archive", document.prev_archive_url))
    if document.next_archive_url:
        extra.append(("next-archive", document.next_archive_url))
    links += [{"href": href, "rel": rel} for rel, href in extra]
    links.append({"href": document.home_url, "rel": "alternate", "type": "text/html"})  # last: RSS's <link>
    generator.link(links, replace=True)
    generator.history.rss_links = extra
    generator.history.archive = document.archive_page is not None
    return generator


def _add_entry(generator: FeedGenerator, document: FeedDocument, post: Post) -> None:
    site = document.site
    entry = generator.add_entry(order="append")
    extras: _EntryExtras = entry.history
    entry.guid(post.guid, permalink=post.guid == post.url)
    extras.atom_id = atom_id(post.guid)
    extras.language = post.language  # every entry says its language: a feed may mix several
    entry.title(post.title)
    entry.link(href=post.url)  # RSS's <link>, Atom's alternate link
    if post.image:
        extras.enclosure = (post.image.url, image_type(post.image.url))
    entry.published(post.published)
    entry.updated(post.updated)
    if post.summary:
        entry.summary(post.summary)
    if site.full_content and post.content_html:
        entry.content(post.content_html, type="html")
    if post.authors:
        entry.author([{"name": author.name} for author in post.authors])
        extras.creators = [author.name for author in post.authors]
    if post.themes:
        scheme = site.url("themes/")
        # A language's own feed labels its categories in that language; every other feed in the site's.
        language = document.language
        labels = [{"term": slug, "label": site.theme_name(slug, language), "scheme": scheme} for slug in post.themes]
        entry.category(labels)


def render_rss(document: FeedDocument) -> bytes:
    """The RSS 2.0 document."""
    result: bytes = _point_at(_generator(document), document).rss_str(pretty=True)
    return result


def render_atom(document: FeedDocument) -> bytes:
    """The Atom 1.0 document."""
    result: bytes = _point_at(_generator(document), document).atom_str(pretty=True)
    return result


def render_rss_and_atom(rss: FeedDocument, atom: FeedDocument) -> tuple[bytes, bytes]:
    """Both documents of one feed from one generator: building feedgen's entries is half the cost of a feed."""
    generator = _generator(rss)
    rss_bytes: bytes = _point_at(generator, rss).rss_str(pretty=True)
    atom_bytes: bytes = _point_at(generator, atom).atom_str(pretty=True)
    return rss_bytes, atom_bytes
