"""Build the feeds of a 100,000-post store (8 themes, 7 regions, 500 authors) and time each kind of build.

Goals (issue 4), on this 2-core machine: every subscription feed in every format built in under 5 s; the first
full archive build reported on its own (full archive pages are never rebuilt afterwards); a rebuild after one
new post under 1 s. For scale the issue measured feedgen at about 2 ms for a 50-item feed; this run measures a
bare 50-item feedgen feed on this machine, and one of our complete documents, to put the figures in proportion.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bench.generate import bench_themes_toml, write_posts
from bench.records import record
from syndication.clock import Clock
from syndication.config import load_settings
from syndication.feeds.catalog import FeedDocument, feeds_of
from syndication.feeds.rss_atom import render_atom
from syndication.pipeline import Service, feed_site, import_file, init_store, publish_feeds
from syndication.store import database
from syndication.store.posts import newest_posts
from tests.support import post_record, write_jsonl

SUBSCRIPTION_GOAL_S = 5.0
REBUILD_GOAL_S = 1.0
ISSUE_BARE_MS = 2.0  # what the issue measured for a bare 50-item feedgen feed when it set the goals


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
            bare_ms = bare_feedgen_ms()
            started = time.perf_counter()
            subscriptions = publish_feeds(service, archives=False)
            subscription_s = time.perf_counter() - started
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
    documents = len(subscriptions.written)
    lines = [
        f"- store: {args.posts:,} posts; {subscriptions.feeds} feeds (site, 8 themes, 7 regions, authors), 3 formats",
        f"- reference, a bare 50-item feedgen Atom feed (id, title, link, date, short summary): median {bare_ms:.2f} ms"
        " (the issue measured ~2 ms)",
        f"- one of our complete 50-item Atom documents (content, authors, categories, enclosure): median "
        f"{render_ms:.2f} ms, {render_ms / bare_ms:.1f}x the bare feed",
        f"- every subscription feed, all formats: {subscription_s:.2f} s for {documents} documents "
        f"(goal < {SUBSCRIPTION_GOAL_S:.0f} s): {'PASS' if subscription_s < SUBSCRIPTION_GOAL_S else 'FAIL'}",
        # The goal was set where feedgen took ~2 ms a bare feed; this shared machine's speed varies day to day.
        f"- the same goal scaled by this run's bare feedgen feed ({bare_ms:.2f} ms vs the issue's 2 ms): "
        f"< {SUBSCRIPTION_GOAL_S * bare_ms / ISSUE_BARE_MS:.1f} s; the build is "
        f"{subscription_s / (SUBSCRIPTION_GOAL_S * bare_ms / ISSUE_BARE_MS):.2f}x that",
        f"- first full archive build: {history_s:.1f} s, {history.archive_pages_written:,} archive documents "
        f"({history.unchanged:,} subscription documents unchanged)",
        f"- rebuild after one new post: {rebuild_s:.3f} s, {len(rebuild.written)} documents rewritten in "
        f"{rebuild.feeds} feeds (goal < {REBUILD_GOAL_S:.0f} s): {'PASS' if rebuild_s < REBUILD_GOAL_S else 'FAIL'}",
    ]
    print("\n".join(lines))
    if args.record:
        record("Feed builds (issue 4)", lines)
    return 0


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


def bare_feedgen_ms(repeats: int = 30) -> float:
    """Median time feedgen takes for a minimal 50-item Atom feed on this machine, right now."""
    from feedgen.feed import FeedGenerator

    start = datetime(2024, 1, 1, tzinfo=UTC)
    samples = []
    for _ in range(repeats):
        began = time.perf_counter()
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
        generator.atom_str()
        samples.append((time.perf_counter() - began) * 1000)
    return statistics.median(samples)


if __name__ == "__main__":
    raise SystemExit(main())
