"""Posts as the drivers read and write them: timestamps typed by a person, stored posts as JSON Lines records
(the import's field names, so that an export can be imported again), and taking posts out of the store."""

from __future__ import annotations

from collections.abc import Collection, Iterable
from datetime import datetime
from typing import Any

from syndication.app.service import Service
from syndication.core.models import Post
from syndication.sources.jsonl import iso_utc, post_as_record
from syndication.sources.normalise import DateOutOfRange
from syndication.sources.normalise import parse_timestamp as _parse_timestamp
from syndication.store import database
from syndication.store import posts as post_store

__all__ = ["DateOutOfRange", "delete_posts", "iso_time", "parse_timestamp", "post_records"]


def parse_timestamp(text: str) -> datetime:
    """An ISO 8601 date or time in UTC, as posts' dates are read (no offset: UTC).

    Raises ValueError when ``text`` is not one, and its subclass DateOutOfRange when it falls outside years 1 to
    9999 in UTC.
    """
    return _parse_timestamp(text)[0]


def iso_time(moment: datetime) -> str:
    """``2024-05-01T10:00:00Z``: ``moment`` in UTC with the Z suffix, as posts' dates are written."""
    return iso_utc(moment)


def post_records(posts: Iterable[Post]) -> list[dict[str, Any]]:
    """Each post as a JSON Lines record with the import's field names."""
    return [post_as_record(post) for post in posts]


def delete_posts(service: Service, guids: Collection[str]) -> int:
    """Delete the posts with these guids from the store; returns how many there were.

    The next feed build takes them out of every document that held them, and editions not yet made will not
    hold them. A source that still offers a deleted post brings it back at its next gather: delete it at the
    source, or date it in the future there to unpublish it.
    """
    with database.transaction(service.engine) as session:
        return post_store.delete_posts(session, guids, service.clock())
