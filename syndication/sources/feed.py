"""RSS and Atom feeds, from a URL or a local file: each entry mapped to the JSON Lines fields and built alike."""

from __future__ import annotations

import calendar
import html
import io
import os
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import feedparser

from syndication.config import FeedSourceSettings
from syndication.errors import ItemError, SourceError
from syndication.sources.base import CursorMoved, PullEvent, Rejected, Warned
from syndication.sources.cleaning import html_to_text, is_web_url, single_line
from syndication.sources.http import fetch
from syndication.sources.normalise import Vocabulary, build_post

ACCEPT_FEEDS = "application/rss+xml, application/atom+xml, application/xml;q=0.9, text/xml;q=0.9, */*;q=0.5"
_HTML_TYPES = frozenset({"text/html", "application/xhtml+xml"})
# Entry ids and links in messages are cut to this: enough to find the entry, never a wall of text.
_WHERE_CHARACTERS = 200


class FeedSource:
    """An RSS or Atom feed. The cursor is the file's path, mtime and size, or the URL and its validators."""

    def __init__(self, settings: FeedSourceSettings, vocabulary: Vocabulary) -> None:
        self.name = settings.name
        self.settings = settings
        self.vocabulary = vocabulary

    def pull(self, cursor: Mapping[str, Any]) -> Iterator[PullEvent]:
        """Yield every entry of the feed, or only the cursor when the file or URL says nothing changed."""
        if self.settings.path is not None:
            yield from self._pull_file(self.settings.path, cursor)
        else:
            assert self.settings.url is not None  # the settings hold exactly one of path and url
            yield from self._pull_url(self.settings.url, cursor)

    def _pull_file(self, path: Path, cursor: Mapping[str, Any]) -> Iterator[PullEvent]:
        limit = self.settings.max_bytes
        try:
            with path.open("rb") as handle:
                # Stat before reading: a file that changes while it is read looks changed to the next pull.
                status = os.fstat(handle.fileno())
                state: dict[str, Any] = {"path": str(path), "mtime_ns": status.st_mtime_ns, "size": status.st_size}
                if _same(cursor, state):
                    yield CursorMoved(state)
                    return
                body = handle.read(limit + 1)
        except OSError as error:
            raise SourceError(f"{path}: cannot be read: {error.strerror or error}") from error
        if len(body) > limit:
            raise SourceError(f"{path}: refused: the file is larger than max_bytes = {limit}")
        yield from self._entries(feedparser.parse(io.BytesIO(body)), str(path), document=None)
        yield CursorMoved(state)

    def _pull_url(self, url: str, cursor: Mapping[str, Any]) -> Iterator[PullEvent]:
        # Validators belong to the URL that gave them: a source pointed elsewhere starts afresh.
        conditional = cursor.get("url") == url
        result = fetch(
            url,
            timeout=self.settings.timeout_seconds,
            max_bytes=self.settings.max_bytes,
            allow_private_networks=self.settings.allow_private_networks,
            etag=cursor.get("etag") if conditional else None,
            last_modified=cursor.get("last_modified") if conditional else None,
            accept=ACCEPT_FEEDS,
        )
        if result.not_modified:
            yield CursorMoved(dict(cursor))
            return
        # The charset of Content-Type counts; without one, the XML declaration decides.
        headers = {"content-type": result.content_type} if result.content_type else None
        # A stream, never bytes: feedparser opens bytes that look like a path as a local file.
        parsed = feedparser.parse(io.BytesIO(result.body), response_headers=headers)
        yield from self._entries(parsed, url, document=result.url)
        state: dict[str, Any] = {"url": url}
        if result.etag:
            state["etag"] = result.etag
        if result.last_modified:
            state["last_modified"] = result.last_modified
        yield CursorMoved(state)

    def _entries(self, parsed: Any, location: str, document: str | None) -> Iterator[PullEvent]:
        """The posts, rejections and warnings of a parsed feed; SourceError when it is no feed at all.

        ``document`` is the URL the feed came from, if it came from one.
        """
        problem = _bozo_reason(parsed)
        entries = parsed.get("entries") or []
        if not entries and not parsed.get("version"):
            raise SourceError(f"{location}: not an RSS or Atom feed: {problem or 'no RSS or Atom elements found'}")
        if problem:
            yield Warned("feed", f"not well-formed, read as far as possible: {problem}")
        feed = parsed.get("feed") or {}
        feed_link = _string(feed.get("link")).strip()
        # Relative entry links: Atom resolves them against the document, RSS by custom against the site's
        # <link>; a local file has only that link to go by.
        base = document
        if feed_link and (base is None or not _string(parsed.get("version")).startswith("atom")):
            base = urljoin(base or "", feed_link)
        for number, entry in enumerate(entries, start=1):
            where = _where(number, entry)
            try:
                fields, warnings = _fields(entry, feed, base, where, self.vocabulary)
                built = build_post(fields, where, self.vocabulary)
            except ItemError as error:
                yield Rejected(where, error.reason)
                continue
            yield built.post
            for message in (*warnings, *built.warnings):
                yield Warned(where, message)


def _same(cursor: Mapping[str, Any], state: Mapping[str, Any]) -> bool:
    return all(cursor.get(key) == value for key, value in state.items())


def _bozo_reason(parsed: Any) -> str:
    if not parsed.get("bozo"):
        return ""
    error = parsed.get("bozo_exception")
    if error is None:
        return "malformed"
    return single_line(str(error)) or type(error).__name__


def _where(number: int, entry: Mapping[str, Any]) -> str:
    """``entry 3 (urn:id)``: the position counts from 1, the id (or link) names it in the feed."""
    name = next((v for v in (entry.get("id"), entry.get("link")) if isinstance(v, str) and v.strip()), "")
    name = single_line(name)
    if len(name) > _WHERE_CHARACTERS:
        name = name[:_WHERE_CHARACTERS] + "…"
    return f"entry {number} ({name})" if name else f"entry {number}"


def _fields(
    entry: Mapping[str, Any], feed: Mapping[str, Any], base: str | None, where: str, vocabulary: Vocabulary
) -> tuple[dict[str, Any], list[str]]:
    """One entry under the JSON Lines field names, and the warnings found on the way."""
    warnings: list[str] = []
    link = _string(entry.get("link"))
    url = urljoin(base, link) if base and link and not is_web_url(link) else link
    contents = entry.get("content") or []
    content_html = _as_html(contents[0]) if contents else ""
    summary_html = _as_html(entry.get("summary_detail")) or _string(entry.get("summary"))
    if not content_html:
        # Only a summary: it is the content, and build_post derives the plain summary from it.
        content_html, summary_html = summary_html, ""
    published, updated = _dates(entry, where, warnings)
    fields: dict[str, Any] = {
        "guid": _string(entry.get("id")) or url,
        "title": _title(entry),
        "url": url,
        "content_html": content_html,
        "summary": html_to_text(summary_html),  # build_post takes the summary as text
        "authors": _authors(entry) or _authors(feed),
        "published": published,
        "updated": updated,
        "themes": _matched(entry, vocabulary.theme_for),
        "regions": _matched(entry, vocabulary.region_for) if vocabulary.regions else [],
        "language": _language(entry, contents, feed),
        "image": _image(entry),
    }
    return fields, warnings


def _string(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _as_html(detail: Any) -> str:
    """A feedparser text construct as HTML: plain text is escaped so that it reads the same."""
    if not isinstance(detail, Mapping):
        return ""
    value = _string(detail.get("value"))
    return value if detail.get("type") in _HTML_TYPES else html.escape(value)


def _title(entry: Mapping[str, Any]) -> str:
    title = _string(entry.get("title"))
    detail = entry.get("title_detail")
    if isinstance(detail, Mapping) and detail.get("type") in _HTML_TYPES:
        return html_to_text(title)
    return title


def _dates(entry: Mapping[str, Any], where: str, warnings: list[str]) -> tuple[datetime | None, datetime | None]:
    """Published and updated in UTC. A date given but not understood refuses the entry; none at all is
    left to build_post, which refuses it as missing."""
    # RSS has only pubDate (and perhaps dc:date, read as "updated"): the first date there is is published.
    key = next((k for k in ("published", "updated") if _string(_own(entry, k)).strip()), None)
    if key is None:
        return None, None
    published = _moment(_own(entry, f"{key}_parsed"))
    if published is None:
        raise ItemError(where, f"unparseable published date {single_line(entry[key])[:80]!r}")
    updated = None
    if _string(_own(entry, "updated")).strip():
        updated = _moment(_own(entry, "updated_parsed"))
        if updated is None:
            warnings.append(f"unparseable updated date {single_line(entry['updated'])[:80]!r} ignored")
    return published, updated


def _own(entry: Mapping[str, Any], key: str) -> Any:
    """``entry[key]`` if the entry has it. feedparser's ``get("updated")`` falls back to the published date
    with a DeprecationWarning; ``in`` asks about the key itself."""
    return entry[key] if key in entry else None  # noqa: SIM401 - get() is the call that warns


def _moment(parsed: Any) -> datetime | None:
    """feedparser's parsed dates are UTC struct_time values."""
    if parsed is None:
        return None
    try:
        return datetime.fromtimestamp(calendar.timegm(parsed), UTC)
    except (TypeError, ValueError, OverflowError):
        return None


def _authors(item: Mapping[str, Any]) -> list[str]:
    names = [_string(a.get("name")) for a in item.get("authors") or [] if isinstance(a, Mapping)]
    names = [name for name in names if name.strip()]
    if not names and _string(item.get("author")).strip():
        names = [item["author"]]
    return names


def _matched(entry: Mapping[str, Any], lookup: Callable[[str], str | None]) -> list[str]:
    """The slugs the entry's categories stand for. Feeds carry many tags of their own: the unmatched ones
    are dropped here, silently, rather than warned about for every entry."""
    slugs: list[str] = []
    for tag in entry.get("tags") or []:
        if not isinstance(tag, Mapping):
            continue
        for term in (tag.get("term"), tag.get("label")):
            slug = lookup(term) if isinstance(term, str) and term.strip() else None
            if slug is not None and slug not in slugs:
                slugs.append(slug)
    return slugs


def _language(entry: Mapping[str, Any], contents: list[Any], feed: Mapping[str, Any]) -> str | None:
    # xml:lang reaches the text constructs; RSS's <language> only the feed.
    details = [*contents[:1], entry.get("title_detail"), entry.get("summary_detail")]
    for detail in details:
        if isinstance(detail, Mapping) and _string(detail.get("language")).strip():
            return str(detail["language"])
    return _string(feed.get("language")).strip() or None


def _image(entry: Mapping[str, Any]) -> dict[str, str] | None:
    """The first image among media:thumbnail, image media:content and image enclosures."""
    for thumbnail in entry.get("media_thumbnail") or []:
        if isinstance(thumbnail, Mapping) and _string(thumbnail.get("url")).strip():
            return {"url": thumbnail["url"]}
    for media in entry.get("media_content") or []:
        if not isinstance(media, Mapping) or not _string(media.get("url")).strip():
            continue
        if media.get("medium") == "image" or _string(media.get("type")).startswith("image/"):
            return {"url": media["url"]}
    for enclosure in entry.get("enclosures") or []:
        if not isinstance(enclosure, Mapping) or not _string(enclosure.get("href")).strip():
            continue
        if _string(enclosure.get("type")).startswith("image/"):
            return {"url": enclosure["href"]}
    return None
