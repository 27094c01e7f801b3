"""A real feed reader, Debian's ``newsboat``, subscribes to the served feeds and reads back the same titles.

newsboat runs unattended (``-x reload``) with its own config, URL list and cache in a temporary folder; what it
understood is read from its SQLite cache (``rss_feed``, ``rss_item``). CI installs it with apt-get; without it the
test is skipped.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from syndication.config import Settings
from syndication.web.app import create_app
from syndication.web.feeds import gzip_etag
from tests.live_server import LiveServer, live_server
from tests.test_web_feeds import TITLES, build_site, site_posts

NEWSBOAT = shutil.which("newsboat")
pytestmark = pytest.mark.skipif(
    NEWSBOAT is None, reason="newsboat is not installed (apt-get install newsboat); CI installs it"
)
FILLER_TITLES = {f"Post number {n}" for n in range(10, 30)}
# Each feed and the titles its items must have, as the reader shows them (no entity, no markup left over).
EXPECTED = {
    "all.rss": set(TITLES.values()) | FILLER_TITLES,
    "all.atom": set(TITLES.values()) | FILLER_TITLES,
    "themes/resilience.atom": {TITLES[2], TITLES[4]},
    "regions/east-asia.rss": {TITLES[3]},
}


@dataclass
class Recorder:
    """Wraps the app and notes the status of each answer, per path: proof of what the reader was sent."""

    app: ASGIApp
    statuses: dict[str, list[int]] = field(default_factory=dict)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def noting(message: Message) -> None:
            if message["type"] == "http.response.start":
                self.statuses.setdefault(scope["path"], []).append(message["status"])
            await send(message)

        await self.app(scope, receive, noting)


@dataclass
class Served:
    settings: Settings
    server: LiveServer
    recorder: Recorder


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    # Every post in the subscription documents: newsboat reads those, not the archive pages.
    settings = build_site(tmp_path_factory.mktemp("site"), site_posts(), extra="[feeds]\nitems = 50\n")
    recorder = Recorder(create_app(settings))
    with live_server(recorder) as server:
        yield Served(settings, server, recorder)


def reload(folder: Path, url: str) -> None:
    """One unattended newsboat reload of ``url`` with the config, URL list and cache in ``folder``."""
    assert NEWSBOAT is not None
    (folder / "urls").write_text(url + "\n", encoding="utf-8")
    (folder / "config").write_text("download-timeout 10\nreload-threads 1\n", encoding="utf-8")
    # A clean environment: no proxy settings, no real home; a UTF-8 locale so titles are not transliterated.
    environment = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(folder),
        "XDG_CONFIG_HOME": str(folder / "xdg-config"),
        "XDG_DATA_HOME": str(folder / "xdg-data"),
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "TERM": "dumb",
    }
    command = [NEWSBOAT, "-u", str(folder / "urls"), "-c", str(folder / "cache.db"), "-C", str(folder / "config")]
    finished = subprocess.run([*command, "-x", "reload"], env=environment, capture_output=True, timeout=60, check=False)
    assert finished.returncode == 0, finished.stderr.decode(errors="replace")


def cached(folder: Path, url: str) -> tuple[str, str, list[str]]:
    """The feed title, ETag and item titles newsboat keeps for ``url``."""
    with closing(sqlite3.connect(folder / "cache.db")) as cache:
        row = cache.execute("SELECT title, etag FROM rss_feed WHERE rssurl = ?", (url,)).fetchone()
        assert row is not None, f"newsboat stored nothing for {url}"
        titles = [title for (title,) in cache.execute("SELECT title FROM rss_item WHERE feedurl = ?", (url,))]
    return row[0], row[1], titles


@pytest.mark.parametrize("path", sorted(EXPECTED))
def test_newsboat_reads_the_titles_and_polls_with_the_etag(served: Served, tmp_path: Path, path: str) -> None:
    # One cache per feed: newsboat keys items by guid alone, so the same post in two feeds would be one row.
    url = served.server.url(f"/feeds/{path}")
    reload(tmp_path, url)
    feed_title, _, titles = cached(tmp_path, url)
    assert sorted(titles) == sorted(EXPECTED[path])
    assert len(titles) == len(EXPECTED[path])  # no item read twice or lost
    assert feed_title.startswith("Test Network")

    # newsboat 2.21 saves a feed's validators only once the feed's row exists, i.e. from its second reload on;
    # the third reload sends them back and is told nothing changed.
    reload(tmp_path, url)
    etag = cached(tmp_path, url)[1]
    manifest = json.loads((served.settings.feeds.output_dir / "manifest.json").read_text(encoding="utf-8"))
    built = manifest["documents"][path]["etag"]
    assert etag in (built, gzip_etag(built))  # the reader kept the server's validator (of either variant)
    reload(tmp_path, url)
    assert served.recorder.statuses[f"/feeds/{path}"] == [200, 200, 304]
    assert sorted(cached(tmp_path, url)[2]) == sorted(EXPECTED[path])
