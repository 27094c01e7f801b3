"""Build the feeds of a 100,000-post store (8 themes, 7 regions, 500 authors) and time each kind of build.

Goals (issue 4), on this 2-core machine: every subscription feed in every format built in under 5 s; the first
full archive build reported on its own; a rebuild after one new post under 1 s. Issue 18 adds: a rebuild after an
edit of a post on the oldest archive page, and after one back-dated post, each under 1 s; and the incremental
builds must leave the same bytes as a full build into an empty folder (the run exits 1 if not).

For scale issue 4 measured feedgen at about 2 ms for a 50-item feed. This machine's speed
varies from run to run, and its two cores are not always equally fast, so the run measures feedgen itself in the
same state, twice: one bare feed in a loop on one core, and a bare build (the same number of bare RSS and Atom
documents over the same two processes, claimed the same way). The machine drifts by tens of percent within
minutes, so the subscription build runs five times, each between two bare builds, and each build is judged against
the goal scaled by the bare builds around it; the verdict is the median of those ratios.
"""

from __future__ import annotations

import argparse
import itertools
import json
import shutil
import statistics
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench.generate import bench_themes_toml, write_posts
from bench.records import record
from syndication.app.gathering import import_file
from syndication.app.publishing import publish_feeds
from syndication.app.service import Service, init_store
from syndication.clock import Clock
from syndication.config import Settings, load_settings
from syndication.feeds.build import FeedBuildReport, feed_site
from syndication.feeds.catalog import FeedDocument, feeds_of
from syndication.feeds.rss_atom import render_atom
from syndication.runtime.workers import worker_context
from syndication.store import database
from syndication.store.posts import newest_posts
from tests.support import post_record, write_jsonl

SUBSCRIPTION_GOAL_S = 5.0
REBUILD_GOAL_S = 1.0
ISSUE_BARE_MS = 2.0  # what the issue measured for a bare 50-item feedgen feed when it set the goals
ROUNDS = 5


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; ``--record`` appends the figures to bench/README.md."""
    parser = argparse.ArgumentParser(prog="python -m bench.build_feeds", description=__doc__)
    parser.add_argument("--posts", type=int, default=100_000)
    parser.add_argument("--record", action="store_true", help="append the figures to bench/README.md")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        config = work / "config.toml"
        config.write_text(
            f'[site]\nbase_url = "https://news.example.org"\n[database]\nurl = "sqlite:///{work / "store.db"}"\n'
            f'[feeds]\noutput_dir = "{work / "feeds"}"\n{bench_themes_toml()}',
            "utf-8",
        )
        settings = load_settings(config, environ={})
        init_store(settings)
        now = datetime(2020, 1, 1, tzinfo=UTC) + timedelta(hours=args.posts)
        with Service.open(settings, ticking_clock(now)) as service:
            import_file(service, write_posts(work / "posts.jsonl", args.posts))
            render_ms = single_render_ms(service, now)
            bare_ms, subscription, bare_around = [], [], []
            warm_up = publish_feeds(service, archives=False)  # reads the store into the page cache, as a server has it
            bare_before = bare_build_s(warm_up.feeds)
            for _ in range(ROUNDS):
                bare_ms.append(bare_feedgen_ms())
                shutil.rmtree(settings.feeds.output_dir, ignore_errors=True)
                started = time.perf_counter()
                subscriptions = publish_feeds(service, archives=False)
                subscription.append(time.perf_counter() - started)
                bare_after = bare_build_s(subscriptions.feeds)
                bare_around.append((bare_before + bare_after) / 2)
                bare_before = bare_after
            started = time.perf_counter()
            history = publish_feeds(service, full=True)
            history_s = time.perf_counter() - started
            later = Service(settings, service.engine, ticking_clock(now + timedelta(minutes=5)))
            newest = (now + timedelta(minutes=1)).isoformat()
            record_one = post_record(10**9, published=newest, themes=["resilience"], regions=["europe"],
                                     authors=["Author 7 Malmö"])  # fmt: skip
            import_file(later, write_jsonl(work / "one.jsonl", [record_one]))
            started = time.perf_counter()
            rebuild = publish_feeds(later)
            rebuild_s = time.perf_counter() - started
            # Issue 18: an edit to the oldest post (on the oldest page of every feed it is in), then a post dated
            # half an hour after it: each rewrites the pages that hold it, not the chain after them.
            oldest = json.loads((work / "posts.jsonl").open(encoding="utf-8").readline())
            edited = oldest | {
                "title": oldest["title"] + " (corrected)",
                "updated": (now + timedelta(minutes=6)).isoformat(),
            }
            edit = timed_rebuild(settings, service, now + timedelta(minutes=10), work / "edit.jsonl", edited)
            back_dated = post_record(10**9 + 1, published=(datetime.fromisoformat(oldest["published"]) +
                                     timedelta(minutes=30)).isoformat(), themes=oldest["themes"],
                                     authors=oldest["authors"])  # fmt: skip
            back = timed_rebuild(settings, service, now + timedelta(minutes=15), work / "back.jsonl", back_dated)
            full_dir = work / "full"
            started = time.perf_counter()
            publish_feeds(Service(settings, service.engine, ticking_clock(now + timedelta(minutes=20))), full_dir,
                          full=True)  # fmt: skip
            full_s = time.perf_counter() - started
            same = _same_documents(settings.feeds.output_dir, full_dir)
    documents = len(subscriptions.written)
    subscription_s, single_ms, bare_s = (statistics.median(values) for values in (subscription, bare_ms, bare_around))
    by_single = SUBSCRIPTION_GOAL_S * single_ms / ISSUE_BARE_MS
    # A bare build does two documents a feed on two processes: its time per document and core, against the issue's
    # 2 ms, scales the goal for the state the machine was in around each build.
    ratios = [
        build / (SUBSCRIPTION_GOAL_S * _per_document_ms(bare, subscriptions.feeds) / ISSUE_BARE_MS)
        for build, bare in zip(subscription, bare_around, strict=True)
    ]
    by_build_ratio = statistics.median(ratios)
    # Issue 18 settled issue 4's goal on scale (b): the goal scaled by one complete 50-item document of ours.
    by_ours = SUBSCRIPTION_GOAL_S * render_ms / ISSUE_BARE_MS
    edit_s, edit_report = edit
    back_s, back_report = back
    bare_doc_ms = _per_document_ms(bare_s, subscriptions.feeds)
    lines = [
        f"- store: {args.posts:,} posts; {subscriptions.feeds} feeds (site, 8 themes, 7 regions, authors), 3 formats",
        f"- every subscription feed, all formats, {documents} documents: median {subscription_s:.2f} s of "
        f"{ROUNDS} builds ({_seconds(subscription)}) (goal < {SUBSCRIPTION_GOAL_S:.0f} s): "
        f"{'PASS' if subscription_s < SUBSCRIPTION_GOAL_S else 'FAIL'}",
        f"- feedgen in this run, one bare 50-item Atom feed (id, title, link, date, short summary) in a loop on one "
        f"core: median {single_ms:.2f} ms ({', '.join(f'{value:.2f}' for value in bare_ms)}; the issue measured "
        f"~2 ms); the goal scaled by it: < {by_single:.1f} s, the build is {subscription_s / by_single:.2f}x that",
        f"- feedgen in this run, a bare build: {subscriptions.feeds} bare 50-item feeds, RSS and Atom each, over "
        f"the same two processes, around each build: median {bare_s:.2f} s ({_seconds(bare_around)}), "
        f"{bare_doc_ms:.2f} ms a document per core; each build against the goal scaled by the bare builds around "
        f"it: {', '.join(f'{ratio:.2f}x' for ratio in ratios)}; median {by_build_ratio:.2f}x "
        f"({'PASS' if by_build_ratio < 1 else 'FAIL'})",
        f"- one of our complete 50-item Atom documents (content, authors, categories, enclosure): median "
        f"{render_ms:.2f} ms, {render_ms / single_ms:.1f}x the bare feed",
        f"- first full archive build: {history_s:.1f} s, {history.archive_pages_written:,} archive documents "
        f"({history.unchanged:,} subscription documents unchanged)",
        f"- the subscription build against the goal scaled by one complete document of ours (issue 18's scale (b)):"
        f" < {by_ours:.1f} s, the build is {subscription_s / by_ours:.2f}x that "
        f"({'PASS' if subscription_s < by_ours else 'FAIL'})",
        f"- rebuild after one new post: {rebuild_s:.3f} s, {len(rebuild.written)} documents rewritten in "
        f"{rebuild.feeds} feeds (goal < {REBUILD_GOAL_S:.0f} s): {'PASS' if rebuild_s < REBUILD_GOAL_S else 'FAIL'}",
        f"- rebuild after an edit of the oldest post (oldest archive page): {edit_s:.3f} s, "
        f"{len(edit_report.written)} documents rewritten ({edit_report.archive_pages_written} archive) in "
        f"{edit_report.feeds} feeds (goal < {REBUILD_GOAL_S:.0f} s): {'PASS' if edit_s < REBUILD_GOAL_S else 'FAIL'}",
        f"- rebuild after one back-dated post (beside the oldest): {back_s:.3f} s, {len(back_report.written)} "
        f"documents rewritten ({back_report.archive_pages_written} archive) in {back_report.feeds} feeds "
        f"(goal < {REBUILD_GOAL_S:.0f} s): {'PASS' if back_s < REBUILD_GOAL_S else 'FAIL'}",
        f"- after those builds, a full build into an empty folder ({full_s:.1f} s) wrote the same bytes as the "
        f"incremental ones: {'yes' if same else 'NO'}",
    ]
    print("\n".join(lines))
    if args.record:
        record("Feed builds (issues 4 and 18)", lines)
    return 0 if same else 1


def timed_rebuild(
    settings: Settings, service: Service, moment: datetime, path: Path, post: dict[str, Any]
) -> tuple[float, FeedBuildReport]:
    """Import one post at ``moment`` and time the incremental build that follows."""
    later = Service(settings, service.engine, ticking_clock(moment))
    import_file(later, write_jsonl(path, [post]))
    started = time.perf_counter()
    report = publish_feeds(later)
    return time.perf_counter() - started, report


def _same_documents(one: Path, other: Path) -> bool:
    """Whether two feed folders hold the same documents with the same bytes (the manifests aside)."""

    def files(root: Path) -> dict[str, bytes]:
        return {path.relative_to(root).as_posix(): path.read_bytes() for path in root.rglob("*")
                if path.is_file() and path.name != "manifest.json"}  # fmt: skip

    return files(one) == files(other)


def ticking_clock(start: datetime) -> Clock:
    """A clock that moves a millisecond each time it is read, as real time does between stored batches."""
    moments = (start + timedelta(milliseconds=tick) for tick in itertools.count())
    return lambda: next(moments)


def single_render_ms(service: Service, now: datetime, repeats: int = 30) -> float:
    """Median time to render one 50-item Atom document, for scale."""
    site = feed_site(service.settings)
    with database.transaction(service.engine) as session:
        posts = newest_posts(session, now=now, limit=50)
    document = FeedDocument(site, feeds_of(site, [])[0], "atom", posts, posts[0].updated)
    samples = []
    for _ in range(repeats):
        started = time.perf_counter()
        render_atom(document)
        samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples)


def _per_document_ms(bare_build: float, feeds: int) -> float:
    return bare_build * 2 / (2 * feeds) * 1000


def _seconds(values: list[float]) -> str:
    return ", ".join(f"{value:.2f}" for value in values)


def bare_feedgen_ms(repeats: int = 300) -> float:
    """Median time feedgen takes for a minimal 50-item Atom feed on this machine, right now."""
    _bare_generator().atom_str()  # the first one pays for imports and caches
    samples = []
    for _ in range(repeats):
        began = time.perf_counter()
        _bare_generator().atom_str()
        samples.append((time.perf_counter() - began) * 1000)
    return statistics.median(samples)


def bare_build_s(feeds: int, batch: int = 4) -> float:
    """Seconds for feedgen to build ``feeds`` bare feeds, RSS and Atom each, over two worker processes.

    The processes take batches of a few feeds as they come free, as the real build claims feeds one by one, so a
    core that is slower in this run does less of the work in both.
    """
    with ProcessPoolExecutor(max_workers=2, mp_context=worker_context()) as pool:
        list(pool.map(_bare_documents, [1, 1]))  # both processes started and warm
        began = time.perf_counter()
        list(pool.map(_bare_documents, [batch] * (feeds // batch) + [feeds % batch]))
        return time.perf_counter() - began


def _bare_documents(feeds: int) -> int:
    for _ in range(feeds):
        generator = _bare_generator()
        generator.rss_str()
        generator.atom_str()
    return feeds


def _bare_generator() -> Any:
    from feedgen.feed import FeedGenerator

    start = datetime(2024, 1, 1, tzinfo=UTC)
    generator = FeedGenerator()
    generator.id("https://example.org/feed")
    generator.title("Bare")
    generator.link(href="https://example.org/", rel="alternate")
    generator.description("A bare feed")
    for number in range(50):
        entry = generator.add_entry(order="append")
        entry.id(f"https://example.org/{number}")
        entry.title(f"Post {number}")
        entry.link(href=f"https://example.org/{number}")
        entry.updated(start + timedelta(hours=number))
        entry.summary("A short summary of the post, about as long as a teaser. " * 3)
    return generator


if __name__ == "__main__":
    raise SystemExit(main())
