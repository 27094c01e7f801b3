"""Helpers the tests share: configuration files and post records built by code, not copied blobs."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from syndication.app.gathering import list_posts
from syndication.app.service import Service, init_store
from syndication.clock import Clock, fixed_clock
from syndication.config import load_settings
from syndication.core.models import Post

# The fixed "now" of store tests: after every fixture post, before the far-future ones.
NOW = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)

FIXTURE_THEMES = """
[[themes]]
slug = "climate-action"
name = "Climate action"
description = "Cutting emissions."
aliases = ["climate", "low-emission"]

[[themes]]
slug = "resilience"
name = "Resilience"
aliases = ["adaptation"]

[[themes]]
slug = "circular-economy"
name = "Circular economy"
aliases = ["plastics", "waste"]
"""


def write_config(directory: Path, database_url: str, extra: str = "", *, themes: str = FIXTURE_THEMES) -> Path:
    """A config.toml for tests in ``directory``, on ``database_url``, with ``extra`` TOML appended."""
    path = directory / "config.toml"
    path.write_text(
        f"""
[site]
title = "Test Network"
base_url = "https://news.example.org"
language = "en"
timezone = "Europe/Berlin"

[database]
url = {json.dumps(database_url)}
{themes}
{extra}
""",
        encoding="utf-8",
    )
    return path


def post_record(number: int, **overrides: Any) -> dict[str, Any]:
    """A valid JSON Lines post; ``overrides`` replace or (with None) remove fields."""
    record: dict[str, Any] = {
        "guid": f"urn:test:post:{number}",
        "title": f"Post number {number}",
        "url": f"https://news.example.org/posts/{number}",
        "content_html": f"<p>Body of post {number}.</p>",
        "authors": ["Ana Pérez"],
        "published": f"2024-05-{(number % 28) + 1:02d}T10:00:00Z",
        "themes": ["climate-action"],
        "regions": ["europe"],
        "language": "en",
    }
    for key, value in overrides.items():
        if value is None:
            record.pop(key, None)
        else:
            record[key] = value
    return record


def write_jsonl(path: Path, records: Iterable[Mapping[str, Any] | str]) -> Path:
    """Write records (dicts as JSON, strings as they are) one per line."""
    with path.open("w", encoding="utf-8") as handle:
        for record in records:
            handle.write((record if isinstance(record, str) else json.dumps(record, ensure_ascii=False)) + "\n")
    return path


@contextmanager
def opened(config: Path, clock: Clock | None = None) -> Iterator[Service]:
    """The store of ``config``, initialised, with the clock at NOW (or ``clock``); closed on the way out."""
    settings = load_settings(config, environ={})
    init_store(settings)
    service = Service.open(settings, clock or fixed_clock(NOW))
    try:
        yield service
    finally:
        service.close()


def stored(service: Service) -> dict[str, Post]:
    """Every published post of the store, by guid."""
    return {post.guid: post for post in list_posts(service, limit=None)}


T = TypeVar("T")


def poll(condition: Callable[[], T], timeout: float, interval: float = 0.05) -> T:
    """Call ``condition`` until it returns something true or ``timeout`` seconds pass; its last answer.

    For work other threads or processes do while the test waits (a scheduler, a server, a background task).
    """
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)


def wait_for(condition: Callable[[], T | None], what: str, timeout: float = 30.0, interval: float = 0.1) -> T:
    """``poll`` that fails naming ``what`` at the deadline, and returns the true answer."""
    value = poll(condition, timeout, interval)
    if not value:
        raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
    return value
