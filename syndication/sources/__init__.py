"""Content sources: each turns one outside format into Posts, Rejections and a new cursor."""

from __future__ import annotations

from syndication.config import (
    FeedSourceSettings,
    JsonlSourceSettings,
    SourceSettings,
    WordpressSourceSettings,
)
from syndication.sources.base import Source
from syndication.sources.normalise import Vocabulary


def open_source(settings: SourceSettings, vocabulary: Vocabulary) -> Source:
    """The source adapter for one ``[[sources]]`` entry."""
    if isinstance(settings, JsonlSourceSettings):
        from syndication.sources.jsonl import JsonlSource

        return JsonlSource(settings.name, settings.path, vocabulary)
    if isinstance(settings, FeedSourceSettings):
        from syndication.sources.feed import FeedSource

        return FeedSource(settings, vocabulary)
    if isinstance(settings, WordpressSourceSettings):
        from syndication.sources.wordpress import WordpressSource

        return WordpressSource(settings, vocabulary)
    raise TypeError(f"unknown source settings {type(settings).__name__}")
