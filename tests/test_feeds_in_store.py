"""Feeds kept in the store (``[feeds] storage = "database"``): nodes sharing a database serve the same feeds.

The real builder writes into the store (SQLite, and PostgreSQL when SYNDICATION_TEST_POSTGRES_URL is set); two
separate apps, each under its own uvicorn with a working folder of its own and nothing in it, serve the documents
over real HTTP: the same bytes, ETag and Last-Modified on both, at once after every build.
"""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from sqlalchemy import func, select

from syndication.app.gathering import import_file
from syndication.app.publishing import publish_feeds
from syndication.app.service import Service, init_store
from syndication.cli import main
from syndication.clock import fixed_clock
from syndication.config import Settings, load_settings
from syndication.feeds.build import FeedBuildReport
from syndication.feeds.output import FeedOutput, FeedsMovedOn
from syndication.store import database, versions
from syndication.store import feed_documents as stored
from syndication.store.schema import FeedDocumentRow
from syndication.web.app import create_app
from syndication.web.feeds import gzip_etag
from tests.live_server import LiveServer, live_server
from tests.support import NOW, post_record, write_config, write_jsonl
from tests.test_web_feeds import FEEDS_CONFIG, IDENTITY, TITLES, site_posts

STORE_CONFIG = FEEDS_CONFIG + 'storage = "database"\noutput_dir = "feeds"\n'
# Documents of every kind: subscription documents in each format, an archive page, the lists.
PATHS = ["all.atom", "all.rss", "all.json", "themes/resilience.atom", "feeds.opml", "index.html"]


def node_settings(folder: Path, database_url: str) -> Settings:
    """The settings of one node: its own folder (its ``output_dir`` inside), the shared store."""
    folder.mkdir()
    return load_settings(write_config(folder, database_url, STORE_CONFIG), environ={})


def build(settings: Settings, moment: Any = NOW, directory: Path | None = None) -> FeedBuildReport:
    """Build the feeds at ``moment``, into the store (or as files into ``directory``)."""
    with Service.open(settings, fixed_clock(moment)) as service:
        return publish_feeds(service, directory)


def add_posts(settings: Settings, folder: Path, records: list[dict[str, Any]]) -> None:
    """Import ``records`` into the shared store."""
    with Service.open(settings, fixed_clock(NOW)) as service:
        report = import_file(service, write_jsonl(folder / "more.jsonl", records))
    assert report.added == len(records), report


def stored_manifest(settings: Settings) -> dict[str, Any]:
    """The manifest the last build saved in the store."""
    engine = database.open_engine(settings.database.url)
    try:
        with database.transaction(engine) as session:
            body = stored.manifest(session)
    finally:
        engine.dispose()
    assert body is not None
    manifest: dict[str, Any] = orjson.loads(body)
    return manifest


def rows_of(settings: Settings, path: str) -> int:
    """How many stored rows ``path`` has (one per ETag kept)."""
    engine = database.open_engine(settings.database.url)
    try:
        with database.transaction(engine) as session:
            count = session.scalar(select(func.count()).where(FeedDocumentRow.path == path))
    finally:
        engine.dispose()
    return int(count or 0)


@dataclass
class Nodes:
    """The builder's settings and two nodes serving the same store, each with a client of its own."""

    builder: Settings
    folders: list[Path]
    servers: list[LiveServer]
    clients: list[httpx.Client]

    def get(self, url: str, headers: dict[str, str] | None = None) -> list[httpx.Response]:
        """``url`` as each node answers it."""
        return [client.get(url, headers=headers or {}) for client in self.clients]


@pytest.fixture
def nodes(tmp_path: Path, database_url: str) -> Iterator[Nodes]:
    builder = node_settings(tmp_path / "builder", database_url)
    init_store(builder)
    add_posts(builder, tmp_path / "builder", site_posts())
    report = build(builder)
    assert report.directory is None and report.place == "the store" and report.written
    assert not builder.feeds.output_dir.exists()  # nothing went to the builder's disk
    folders = [tmp_path / "node-a", tmp_path / "node-b"]
    with ExitStack() as stack:
        servers = [stack.enter_context(live_server(create_app(node_settings(f, database_url)))) for f in folders]
        clients = [stack.enter_context(httpx.Client(base_url=s.url(), timeout=10)) for s in servers]
        yield Nodes(builder, folders, servers, clients)


def test_two_nodes_serve_the_same_bytes_and_validators_as_the_build_saved(nodes: Nodes) -> None:
    manifest = stored_manifest(nodes.builder)
    archive = next(path for path in manifest["documents"] if path.startswith("archive/"))
    for path in [*PATHS, archive]:
        answers = nodes.get(f"/feeds/{path}", IDENTITY)
        entry = manifest["documents"][path]
        for answer in answers:
            assert answer.status_code == 200, path
            assert answer.headers["etag"] == entry["etag"]
            assert answer.headers["last-modified"] == entry["last_modified"]
            assert answer.headers["content-type"] == entry["content_type"]
            assert answer.headers["cache-control"] == "public, max-age=123"
            assert answer.headers["vary"] == "Accept-Encoding"
            assert "content-encoding" not in answer.headers
        assert answers[0].content == answers[1].content, path
    page = nodes.get("/feeds/", IDENTITY)
    assert page[0].content == page[1].content == nodes.get("/feeds/index.html", IDENTITY)[0].content
    assert "frame-ancestors 'none'" in page[0].headers["content-security-policy"]
    assert TITLES[1] in nodes.get("/feeds/all.atom")[0].text
    for folder in nodes.folders:
        assert not (folder / "feeds").exists()  # served from the store: no node wrote or read a file


def test_conditional_requests_are_answered_304_by_either_node(nodes: Nodes) -> None:
    first = nodes.get("/feeds/all.rss", IDENTITY)[0]
    etag, modified = first.headers["etag"], first.headers["last-modified"]
    for conditional in ({"If-None-Match": etag}, {"If-Modified-Since": modified}, {"If-None-Match": f'"x", {etag}'}):
        for answer in nodes.get("/feeds/all.rss", {**IDENTITY, **conditional}):
            assert answer.status_code == 304, conditional
            assert answer.content == b""
            assert answer.headers["etag"] == etag
            assert answer.headers["last-modified"] == modified
    for answer in nodes.get("/feeds/all.rss", {**IDENTITY, "If-None-Match": '"something-else"'}):
        assert answer.status_code == 200


def test_the_gzip_variant_is_the_same_on_both_nodes(nodes: Nodes) -> None:
    identity = nodes.get("/feeds/themes/climate-action.atom", IDENTITY)[0]
    # httpx would decompress: read the raw bytes as they came.
    raw = []
    for client in nodes.clients:
        with client.stream("GET", "/feeds/themes/climate-action.atom", headers={"Accept-Encoding": "gzip"}) as answer:
            assert answer.status_code == 200
            assert answer.headers["content-encoding"] == "gzip"
            assert answer.headers["etag"] == gzip_etag(identity.headers["etag"])
            raw.append(b"".join(answer.iter_raw()))
    assert raw[0] == raw[1]
    assert gzip.decompress(raw[0]) == identity.content
    conditional = {"Accept-Encoding": "gzip", "If-None-Match": gzip_etag(identity.headers["etag"])}
    for answer in nodes.get("/feeds/themes/climate-action.atom", conditional):
        assert answer.status_code == 304


def test_a_rebuild_is_served_by_every_node_as_soon_as_it_commits(nodes: Nodes, tmp_path: Path) -> None:
    before = {path: nodes.get(f"/feeds/{path}", IDENTITY)[0] for path in ("all.atom", "themes/resilience.atom")}
    untouched = nodes.get("/feeds/themes/circular-economy.atom", IDENTITY)[0]
    title = "Lisbon turns a car park into a flood garden"
    add_posts(nodes.builder, tmp_path, [post_record(90, title=title, themes=["resilience"],
                                                    published="2024-05-31T10:00:00Z")])  # fmt: skip
    report = build(nodes.builder, NOW + timedelta(minutes=5))
    assert "all.atom" in report.written and "themes/resilience.atom" in report.written
    manifest = stored_manifest(nodes.builder)
    for path, old in before.items():  # no wait, no poll: the first request after the commit sees it
        answers = nodes.get(f"/feeds/{path}", {**IDENTITY, "If-None-Match": old.headers["etag"]})
        for answer in answers:
            assert answer.status_code == 200, path
            assert answer.headers["etag"] != old.headers["etag"]
            assert answer.headers["etag"] == manifest["documents"][path]["etag"]
            assert answer.headers["last-modified"] == manifest["documents"][path]["last_modified"]
            assert title in answer.text
        assert answers[0].content == answers[1].content
        assert rows_of(nodes.builder, path) == 1  # the replaced bytes are gone from the store
    for answer in nodes.get("/feeds/themes/circular-economy.atom", {"If-None-Match": untouched.headers["etag"]}):
        assert answer.status_code == 304  # a document the build did not change keeps its validators


def test_unknown_paths_and_paths_outside_the_feeds_are_not_found(nodes: Nodes) -> None:
    for url in (
        "/feeds/nothing.atom",
        "/feeds/manifest.json",
        "/feeds/%2e%2e/config.toml",
        "/feeds/..%2fconfig.toml",
        "/feeds/themes/",
    ):
        for answer in nodes.get(url):
            assert answer.status_code == 404, url
            assert b"<feed" not in answer.content


def test_a_static_export_writes_files_from_a_site_that_keeps_its_feeds_in_the_store(
    nodes: Nodes, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = stored_manifest(nodes.builder)
    out = tmp_path / "export"
    config = nodes.builder.config_path
    assert config is not None
    assert main(["--config", str(config), "feeds", "build", "--out", str(out)]) == 0
    assert f"into {out}" in capsys.readouterr().out
    exported = orjson.loads((out / "manifest.json").read_bytes())["documents"]
    assert exported.keys() == manifest["documents"].keys()
    served = nodes.get("/feeds/all.json", IDENTITY)[0]
    assert (out / "all.json").read_bytes() == served.content
    assert exported["all.json"]["etag"] == served.headers["etag"]
    assert stored_manifest(nodes.builder) == manifest  # the export left the store's feeds alone
    assert main(["--config", str(config), "feeds", "build"]) == 0
    assert "into the store: 0 documents written" in capsys.readouterr().out


def test_a_build_split_over_two_processes_stores_what_one_process_writes(
    tmp_path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import syndication.feeds.build as feed_build

    settings = node_settings(tmp_path / "site", database_url)
    init_store(settings)
    add_posts(settings, tmp_path / "site", site_posts())
    monkeypatch.setattr(feed_build, "_PARALLEL_FROM_FEEDS", 2)  # this store's feeds count as many
    report = build(settings)
    folder = tmp_path / "serial"
    monkeypatch.setattr(feed_build, "_PARALLEL_FROM_FEEDS", 10_000)
    build(settings, directory=folder)
    documents = stored_manifest(settings)["documents"]
    files = orjson.loads((folder / "manifest.json").read_bytes())["documents"]
    assert documents == files and {*report.written, "feeds.opml", "index.html"} == set(files)
    engine = database.open_engine(settings.database.url)
    try:
        with database.transaction(engine) as session:
            for path, entry in documents.items():
                assert stored.document_body(session, path, entry["etag"]) == (folder / path).read_bytes(), path
    finally:
        engine.dispose()


def test_a_build_that_another_saved_before_is_not_saved_and_the_next_starts_from_it(
    tmp_path: Path, database_url: str
) -> None:
    settings = node_settings(tmp_path / "site", database_url)
    init_store(settings)
    engine = database.open_engine(settings.database.url)
    try:
        with FeedOutput(None, engine=engine) as first, FeedOutput(None, engine=engine) as second:
            second.write("a.atom", b"<second/>", "application/atom+xml", NOW)
            second.save({"by": "second"}, NOW)
            first.write("a.atom", b"<first/>", "application/atom+xml", NOW)
            with pytest.raises(FeedsMovedOn):
                first.save({"by": "first"}, NOW)
        with FeedOutput(None, engine=engine) as third:
            assert third.state == {"by": "second"}
            assert third.knows("a.atom") and not third.knows("b.atom")
            with database.transaction(engine) as session:
                etag = third.documents["a.atom"]["etag"]
                assert stored.document_body(session, "a.atom", etag) == b"<second/>"
                assert versions.versions(session) == {versions.FEEDS: 1}
            third.write("a.atom", b"<third/>", "application/atom+xml", NOW)
            third.save({"by": "third"}, NOW, sweep=True)
        with database.transaction(engine) as session:
            assert versions.version(session, versions.FEEDS) == 2
            # The sweep removed the unsaved build's row too: only the bytes the manifest names are left.
            assert session.scalar(select(func.count()).select_from(FeedDocumentRow)) == 1
    finally:
        engine.dispose()


def test_versions_count_from_one_per_name(tmp_path: Path, database_url: str) -> None:
    settings = node_settings(tmp_path / "site", database_url)
    init_store(settings)
    engine = database.open_engine(settings.database.url)
    try:
        with database.transaction(engine) as session:
            assert versions.versions(session) == {}
            assert versions.version(session, "editions") == 0
            assert versions.bump(session, "editions") == 1
            assert versions.bump(session, "editions") == 2
            assert versions.bump(session, "feeds") == 1
        with pytest.raises(RuntimeError), database.transaction(engine) as session:
            versions.bump(session, "feeds")
            raise RuntimeError("rolled back: the version stays")
        with database.transaction(engine) as session:
            assert versions.versions(session) == {"editions": 2, "feeds": 1}
    finally:
        engine.dispose()
