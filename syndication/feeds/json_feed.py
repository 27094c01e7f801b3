"""JSON Feed 1.1 documents (https://www.jsonfeed.org/version/1.1/)."""

from __future__ import annotations

from typing import Any

import orjson

from syndication.core.models import Post
from syndication.feeds.catalog import FeedDocument

VERSION = "https://jsonfeed.org/version/1.1"


def render_json(document: FeedDocument) -> bytes:
    """The JSON Feed document; an archive page links to the older page through ``next_url``."""
    site, feed = document.site, document.feed
    data: dict[str, Any] = {
        "version": VERSION,
        "title": feed.title,
        "home_page_url": document.home_url,
        "feed_url": document.self_url,
        "description": feed.description,
        "language": document.language,
        "authors": [{"name": site.title, "url": site.base_url + "/"}],
    }
    if document.prev_archive_url:
        # JSON Feed pages towards older items with next_url; the RFC 5005 archive pages are those items.
        data["next_url"] = document.prev_archive_url
    if site.hub:
        data["hubs"] = [{"type": "WebSub", "url": site.hub}]
    data["items"] = [_item(document, post) for post in document.posts]
    return orjson.dumps(data, option=orjson.OPT_INDENT_2) + b"\n"


def _item(document: FeedDocument, post: Post) -> dict[str, Any]:
    site = document.site
    item: dict[str, Any] = {"id": post.guid, "url": post.url, "title": post.title}
    if site.full_content and post.content_html:
        item["content_html"] = post.content_html
    else:
        item["content_text"] = post.summary
    if post.summary:
        item["summary"] = post.summary
    if post.image:
        item["image"] = post.image.url
    item["date_published"] = _rfc3339(post)
    item["date_modified"] = post.updated.isoformat().replace("+00:00", "Z")
    if post.authors:
        item["authors"] = [{"name": author.name} for author in post.authors]
    if post.themes:
        # Labelled as the Atom and RSS documents label their categories: a language's own feed in that language.
        item["tags"] = [site.theme_name(slug, document.language) for slug in post.themes]
    item["language"] = post.language
    return item


def _rfc3339(post: Post) -> str:
    return post.published.isoformat().replace("+00:00", "Z")
