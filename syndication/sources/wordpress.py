"""WordPress sites through their REST API: the posts modified since the last pull, page by page."""

from __future__ import annotations

import html
import json
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from syndication.config import WordpressSourceSettings
from syndication.errors import ItemError, SourceError
from syndication.sources.base import CursorMoved, PullEvent, Rejected, Warned
from syndication.sources.cleaning import html_to_text, single_line
from syndication.sources.http import FetchResult, HttpStatusError, fetch
from syndication.sources.normalise import Vocabulary, build_post, parse_timestamp

POSTS_PATH = "/wp-json/wp/v2/posts"
# One pull reads at most this many pages; the cursor then carries the next pull on from where it stopped.
MAX_PAGES_PER_PULL = 100
# WordPress keeps modification times to the second and ``modified_after`` is strict, so a post changed in
# the same second as the last one seen would be missed: ask from one second earlier, skip what was seen.
_OVERLAP = timedelta(seconds=1)


class WordpressSource:
    """A WordPress site. The cursor is the newest ``modified_gmt`` seen and the posts modified in that second."""

    def __init__(self, settings: WordpressSourceSettings, vocabulary: Vocabulary) -> None:
        self.name = settings.name
        self.settings = settings
        self.vocabulary = vocabulary

    def pull(self, cursor: Mapping[str, Any]) -> Iterator[PullEvent]:
        """Yield the posts modified since the cursor, oldest change first.

        Every page is read before anything is yielded: a page that fails fails the whole pull, so the store
        never keeps half of one.
        """
        since = _moment(cursor.get("modified_gmt"))
        seen_then = {str(key) for key in cursor.get("seen", [])} if since is not None else set()
        newest, seen_now = since, set(seen_then)
        events: list[PullEvent] = []
        page = 1
        while True:
            url = self._page_url(page, since)
            answer = self._fetch_page(url)
            if answer is None:
                break
            items, total_pages = answer
            for index, item in enumerate(items, start=1):
                where = _where(page, index, item)
                if not isinstance(item, Mapping):
                    events.append(Rejected(where, f"not a JSON object (got {type(item).__name__})"))
                    continue
                key = _key(item)
                modified = _moment(item.get("modified_gmt"))
                if modified is not None and modified == since and key in seen_then:
                    continue  # read by the last pull: only asked for again because of the overlap
                if modified is not None and (newest is None or modified > newest):
                    newest, seen_now = modified, {key}
                elif modified is not None and modified == newest:
                    seen_now.add(key)
                events.extend(self._read_post(item, where))
            if self._last_page(page, items, total_pages):
                break
            if page >= MAX_PAGES_PER_PULL:
                events.append(Warned(f"page {page}", "page limit of one pull reached; the rest comes next pull"))
                break
            page += 1
        yield from events
        state: dict[str, Any] = dict(cursor)
        if newest is not None:
            state = {"modified_gmt": _iso(newest), "seen": sorted(seen_now)}
        yield CursorMoved(state)

    def _page_url(self, page: int, since: datetime | None) -> str:
        """The API URL of one page of posts, oldest modification first, modified after ``since``."""
        query: dict[str, str | int] = {
            "_embed": 1,
            "per_page": self.settings.per_page,
            "page": page,
            "orderby": "modified",
            "order": "asc",
        }
        if since is not None:
            query["modified_after"] = _iso(since - _OVERLAP)
        return f"{self.settings.url}{POSTS_PATH}?{urlencode(query)}"

    def _last_page(self, page: int, items: list[Any], total_pages: int | None) -> bool:
        # X-WP-TotalPages decides; a site (or proxy) that drops the header ends on a short page.
        if not items:
            return True
        if total_pages is not None:
            return page >= total_pages
        return len(items) < self.settings.per_page

    def _fetch_page(self, url: str) -> tuple[list[Any], int | None] | None:
        """The items of one page and the total page count the site reports; None past the last page."""
        try:
            result = fetch(
                url,
                timeout=self.settings.timeout_seconds,
                max_bytes=self.settings.max_bytes,
                allow_private_networks=self.settings.allow_private_networks,
                accept="application/json",
            )
        except HttpStatusError as error:
            code, message = _api_error(error.body)
            # A page past the end (posts deleted while paging) is how WordPress says "no more".
            if error.status == 400 and code == "rest_post_invalid_page_number":
                return None
            detail = f": {code}: {message}" if code else ""
            hint = " (is the WordPress REST API enabled at this address?)" if error.status == 404 else ""
            raise SourceError(f"{error}{detail}{hint}") from error
        return _items(result), _total_pages(result)

    def _read_post(self, item: Mapping[str, Any], where: str) -> list[PullEvent]:
        try:
            built = build_post(_fields(item, where, self.vocabulary), where, self.vocabulary)
        except ItemError as error:
            return [Rejected(where, error.reason)]
        return [built.post, *(Warned(where, message) for message in built.warnings)]


def _items(result: FetchResult) -> list[Any]:
    try:
        items = json.loads(result.body)
    except ValueError as error:  # malformed, not UTF-8, or a number of more digits than Python converts
        raise SourceError(f"{result.url}: not valid JSON: {error}") from None
    except RecursionError:
        raise SourceError(f"{result.url}: not valid JSON: nested too deeply") from None
    if not isinstance(items, list):
        raise SourceError(f"{result.url}: expected a JSON array of posts, got {type(items).__name__}")
    return items


def _total_pages(result: FetchResult) -> int | None:
    value = result.headers.get("x-wp-totalpages", "").strip()
    # isdigit() alone takes "²" too; more than nine digits is no page count either.
    return int(value) if value.isascii() and value.isdigit() and len(value) <= 9 else None


def _api_error(body: bytes) -> tuple[str, str]:
    """The ``code`` and ``message`` of a WordPress error answer, or empty strings."""
    try:
        answer = json.loads(body)
    except (ValueError, RecursionError):
        return "", ""
    if not isinstance(answer, Mapping):
        return "", ""
    code, message = answer.get("code"), answer.get("message")
    return (
        single_line(code) if isinstance(code, str) else "",
        single_line(message)[:200] if isinstance(message, str) else "",
    )


def _where(page: int, index: int, item: Any) -> str:
    """``post 42 (https://site/hello/)``, or the item's place on its page when it has no id."""
    if isinstance(item, Mapping) and isinstance(item.get("id"), int):
        link = item.get("link")
        return f"post {item['id']} ({single_line(link)[:200]})" if isinstance(link, str) else f"post {item['id']}"
    return f"page {page}, item {index}"


def _key(item: Mapping[str, Any]) -> str:
    for value in (item.get("id"), item.get("link"), _rendered(item.get("guid"))):
        if isinstance(value, int | str) and str(value):
            return str(value)
    return ""


def _moment(value: Any) -> datetime | None:
    """A ``*_gmt`` time: documented as UTC, written without an offset."""
    if not isinstance(value, str) or not value.strip():
        return None
    try:
        return parse_timestamp(value)[0]
    except ValueError:  # unparseable, or out of range once in UTC
        return None


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _rendered(value: Any) -> str:
    """The ``rendered`` text of a WordPress field such as ``{"rendered": "..."}``."""
    if isinstance(value, Mapping):
        value = value.get("rendered")
    return value if isinstance(value, str) else ""


def _fields(item: Mapping[str, Any], where: str, vocabulary: Vocabulary) -> dict[str, Any]:
    """One post under the JSON Lines field names."""
    link = item.get("link") if isinstance(item.get("link"), str) else None
    embedded = item.get("_embedded")
    if not isinstance(embedded, Mapping):
        embedded = {}
    terms = _terms(embedded)
    return {
        # WordPress escapes the guid for HTML (``&#038;``); the guid itself is the unescaped URL.
        "guid": html.unescape(_rendered(item.get("guid"))) or link,
        "title": html_to_text(_rendered(item.get("title"))),
        "url": link,
        "content_html": _rendered(item.get("content")),
        "summary": html_to_text(_rendered(item.get("excerpt"))),  # HTML, and build_post takes text
        "published": _date(item, "date_gmt", "date", "published", where),
        "updated": _date(item, "modified_gmt", "modified", "updated", where),
        # WordPress stores display names HTML-escaped (``Tom &amp; Jerry``): read once, they are the name.
        "authors": [
            html.unescape(author["name"])
            for author in embedded.get("author") or []
            if isinstance(author, Mapping) and isinstance(author.get("name"), str)
        ],
        "themes": _matched(terms, vocabulary.theme_for),
        "regions": _matched(terms, vocabulary.region_for) if vocabulary.regions else [],
        "language": item["lang"] if isinstance(item.get("lang"), str) else None,
        "image": _featured_image(embedded),
    }


def _date(item: Mapping[str, Any], gmt_key: str, local_key: str, label: str, where: str) -> datetime | str | None:
    """The UTC time of ``gmt_key``; without one the site-local time, which build_post warns about."""
    value = item.get(gmt_key)
    if isinstance(value, str) and value.strip():
        moment = _moment(value)
        if moment is None:
            raise ItemError(where, f"unparseable {label} date {single_line(value)[:80]!r}")
        return moment
    local = item.get(local_key)
    return local if isinstance(local, str) else None


def _terms(embedded: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """Every category and tag of the post: ``wp:term`` holds one list per taxonomy."""
    groups = embedded.get("wp:term")
    if not isinstance(groups, list):
        return []
    return [term for group in groups if isinstance(group, list) for term in group if isinstance(term, Mapping)]


def _matched(terms: list[Mapping[str, Any]], lookup: Callable[[str], str | None]) -> list[str]:
    """The slugs the terms stand for, by slug or name. A site's own tags are many: the others are dropped
    silently rather than warned about for every post."""
    slugs: list[str] = []
    for term in terms:
        for value in (term.get("slug"), term.get("name")):
            slug = lookup(html.unescape(value)) if isinstance(value, str) and value.strip() else None
            if slug is not None and slug not in slugs:
                slugs.append(slug)
    return slugs


def _featured_image(embedded: Mapping[str, Any]) -> dict[str, str] | None:
    media = embedded.get("wp:featuredmedia")
    first = media[0] if isinstance(media, list) and media else None
    # Media the site does not show (private, deleted) comes as an error object without source_url.
    if not isinstance(first, Mapping) or not isinstance(first.get("source_url"), str):
        return None
    mime_type = first.get("mime_type")
    if isinstance(mime_type, str) and not mime_type.startswith("image/"):
        return None
    alt = first.get("alt_text")
    return {"url": first["source_url"], "alt": alt if isinstance(alt, str) else ""}
