"""Content sources: each turns one outside format into Posts, Rejections and a new cursor.

``SOURCES`` is the registry: one opener per ``kind`` of ``[[sources]]`` entry (``syndication.config.SOURCE_KINDS``
lists the same kinds with their settings). A new kind of source is one module here, one entry in each list.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

from syndication.config import SourceSettings
from syndication.sources.base import Source
from syndication.sources.normalise import Vocabulary


def _jsonl(settings: Any, vocabulary: Vocabulary) -> Source:
    from syndication.sources.jsonl import JsonlSource

    return JsonlSource(settings.name, settings.path, vocabulary)


def _feed(settings: Any, vocabulary: Vocabulary) -> Source:
    from syndication.sources.feed import FeedSource

    return FeedSource(settings, vocabulary)


def _wordpress(settings: Any, vocabulary: Vocabulary) -> Source:
    from syndication.sources.wordpress import WordpressSource

    return WordpressSource(settings, vocabulary)


# Each kind's adapter is imported when a source of that kind is opened (HTTP clients, feedparser: not before).
SOURCES: Final[dict[str, Callable[[Any, Vocabulary], Source]]] = {
    "jsonl": _jsonl,
    "feed": _feed,
    "wordpress": _wordpress,
}


def open_source(settings: SourceSettings, vocabulary: Vocabulary) -> Source:
    """The source adapter for one ``[[sources]]`` entry."""
    return SOURCES[settings.kind](settings, vocabulary)
