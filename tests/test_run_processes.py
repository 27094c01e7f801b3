"""``syndication run`` as real processes on a seconds-scale schedule, against a real SMTP server.

On SQLite one process gathers, publishes feeds (seen over HTTP) and sends digests; stopped with SIGTERM and
started again, it catches up on the editions it missed without creating or sending any twice. On PostgreSQL
three processes share one store: the leader is killed with SIGKILL, another takes over within seconds, and every
edition of the period is still created once, with no window skipped, and delivered once per subscriber.

Every wait polls a condition against a generous deadline, never a fixed sleep, so a loaded machine is slower
but not flaky.
"""

from __future__ import annotations

import itertools
import json
import re
import threading
import time
import urllib.error
import urllib.request
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from syndication.app.service import Service, init_store
from syndication.app.subscribers import add_subscriber
from syndication.config import load_settings
from syndication.scheduling.cadences import next_fire, parse_crontab
from syndication.store import database
from syndication.store.schema import DeliveryRow, EditionRow, PostRow
from tests.run_process import SECRET, STOP_WITHIN, RunProcess, free_port
from tests.smtp_server import Received, SmtpTestServer, smtp_server
from tests.support import post_record, wait_for, write_config

DAILY = "*/3 * * * * *"  # an edition every three seconds
DAILY_TRIGGER = parse_crontab(DAILY, "Europe/Berlin")
PERIOD = timedelta(seconds=3)
GRACE_SECONDS = 20  # a restart or a takeover on a loaded machine is well within it
TAKEOVER_WITHIN = 8.0  # seconds from the leader's SIGKILL to another process leading
STORED_WELL_BEFORE = timedelta(seconds=1.5)  # a post stored this long before its edition was made is in it
MESSAGE_ID = re.compile(r"<edition-(\d+)\.(\d+)\.[0-9a-f]+@")

# --- The processes --------------------------------------------------------------------------------------------


# --- The store, the source and the schedule ---------------------------------------------------------------------


def service_config(tmp_path: Path, database_url: str, server: SmtpTestServer) -> Path:
    """A config with a jsonl source gathered every second, a daily cadence every three seconds, JSON logs."""
    (tmp_path / "posts.jsonl").write_bytes(b"")
    return write_config(
        tmp_path,
        database_url,
        f"""
[smtp]
host = "127.0.0.1"
port = {server.port}
timeout_seconds = 10

[feeds]
output_dir = "feeds"

[delivery]
connections = 2
lease_seconds = 5
retry_initial_seconds = 1

[schedule]
deliver_interval_seconds = 1
leader_poll_seconds = 0.5
misfire_grace_seconds = {GRACE_SECONDS}
feeds_interval_seconds = 60

[schedule.cadences]
daily = "{DAILY}"
weekly = "off"
monthly = "off"

[logging]
format = "json"

[[sources]]
name = "wire"
kind = "jsonl"
path = "posts.jsonl"
interval_seconds = 1
""",
    )


def prepare_store(config: Path, subscribers: int) -> tuple[Service, dict[int, str]]:
    """Create the store and add ``subscribers`` confirmed daily readers of every theme; the open service and
    their addresses by id."""
    settings = load_settings(config, environ={"SYNDICATION_SECRET_KEY": SECRET})
    init_store(settings)
    service = Service.open(settings)
    readers = {}
    for number in range(subscribers):
        added = add_subscriber(service, f"reader{number}@example.org", cadence="daily", confirmed=True)
        readers[added.subscriber.id] = added.subscriber.email
    return service, readers


@dataclass(frozen=True)
class Appended:
    """A post written to the source file: its number, title and publication time."""

    number: int
    title: str
    published: datetime


def append_post(source: Path, number: int) -> Appended:
    """Append one post published just now (a past time by the time it is gathered) in one write."""
    published = datetime.now(UTC) - timedelta(milliseconds=50)
    title = f"Run test post {number}"
    record = post_record(number, title=title, published=published.isoformat(timespec="milliseconds"))
    with source.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(record) + "\n")
    return Appended(number, title, published)


def next_fire_time() -> datetime:
    fire = next_fire(DAILY_TRIGGER, datetime.now(UTC))
    assert fire is not None
    return fire


def sleep_until(moment: datetime) -> None:
    """Sleep until ``moment``: to line an action up with the schedule, not to wait for something to happen."""
    time.sleep(max(0.0, (moment - datetime.now(UTC)).total_seconds()))


def just_after_next_fire() -> None:
    """Wait until just after the schedule's next fire time: a post published then has a whole window to be
    gathered before its edition is due."""
    sleep_until(next_fire_time() + timedelta(seconds=0.1))


class PostWriter(threading.Thread):
    """Appends a post published "now" every ``every`` seconds until stopped, so most windows hold posts."""

    def __init__(self, source: Path, first: int, every: float = 0.7) -> None:
        super().__init__(name="post-writer", daemon=True)
        self.source, self.next_number, self.every = source, first, every
        self.written: list[Appended] = []
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.is_set():
            self.written.append(append_post(self.source, self.next_number))
            self.next_number += 1
            self.halt.wait(self.every)

    def stop(self) -> None:
        self.halt.set()
        if self.ident is not None:  # started
            self.join(timeout=10)


def editions(service: Service) -> list[EditionRow]:
    """Every edition, by window."""
    with database.transaction(service.engine) as session:
        rows = list(session.scalars(select(EditionRow).order_by(EditionRow.since, EditionRow.id)))
        session.expunge_all()
    return rows


def deliveries(service: Service) -> list[DeliveryRow]:
    """Every delivery row."""
    with database.transaction(service.engine) as session:
        rows = list(session.scalars(select(DeliveryRow).order_by(DeliveryRow.id)))
        session.expunge_all()
    return rows


def posts(service: Service) -> list[PostRow]:
    """Every stored post."""
    with database.transaction(service.engine) as session:
        rows = list(session.scalars(select(PostRow)))
        session.expunge_all()
    return rows


def edition_covering(service: Service, moment: datetime) -> EditionRow | None:
    """The daily edition whose window ``(since, until]`` holds ``moment``, once it exists."""
    return next((e for e in editions(service) if e.cadence == "daily" and e.since < moment <= e.until), None)


def open_deliveries(service: Service) -> list[DeliveryRow]:
    return [row for row in deliveries(service) if row.status != "sent"]


def received_pairs(server: SmtpTestServer) -> dict[tuple[int, int], list[str]]:
    """The Message-IDs received per (edition, subscriber), read from each message's Message-ID header."""
    pairs: dict[tuple[int, int], list[str]] = defaultdict(list)
    for message in server.messages:
        message_id = str(message.parsed()["Message-ID"])
        match = MESSAGE_ID.match(message_id)
        assert match, f"not a digest's Message-ID: {message_id!r}"
        pairs[int(match[1]), int(match[2])].append(message_id)
    return pairs


def digest_text(message: Received) -> str:
    body = message.parsed().get_body(("plain",))
    assert body is not None
    return str(body.get_content())


def check_chain(rows: list[EditionRow]) -> None:
    """Daily windows only, each once, three seconds long, each starting where the one before ended."""
    assert rows, "no edition was created"
    assert {row.cadence for row in rows} == {"daily"}
    windows = [(row.since, row.until) for row in rows]
    assert len(set(windows)) == len(windows), f"a window was created twice: {Counter(windows).most_common(3)}"
    for row in rows:
        assert row.until - row.since == PERIOD, f"edition {row.id} covers {row.since} to {row.until}"
    gaps = [(a.until, b.since) for a, b in itertools.pairwise(rows) if b.since != a.until]
    assert not gaps, f"windows skipped or overlapping between editions: {gaps}"


def check_delivered_once(
    service: Service, server: SmtpTestServer, readers: dict[int, str], *, exactly_once_at_server: bool
) -> set[int]:
    """Every delivery sent, one per (edition, subscriber) and to every subscriber of an edition that has any;
    the server got one Message-ID per (edition, subscriber), the one the store holds. Returns the editions
    that were sent to someone."""
    rows = deliveries(service)
    assert [row for row in rows if row.status != "sent"] == []
    stored = {(row.edition_id, row.subscriber_id): row.message_id for row in rows}
    assert len(stored) == len(rows)  # one row per (edition, subscriber)
    sent_editions = {row.edition_id for row in rows}
    for edition_id in sent_editions:
        assert {s for e, s in stored if e == edition_id} == set(readers), f"edition {edition_id}'s recipients"
    received = received_pairs(server)
    assert set(received) == set(stored), "the server's messages and the store's deliveries differ"
    for (edition_id, subscriber_id), message_ids in received.items():
        assert set(message_ids) == {f"<{stored[edition_id, subscriber_id]}@news.example.org>"}, (
            f"edition {edition_id} reached subscriber {subscriber_id} as {message_ids}"
        )
        if exactly_once_at_server:
            assert len(message_ids) == 1, f"edition {edition_id} reached subscriber {subscriber_id} twice"
    for message in server.messages:
        match = MESSAGE_ID.match(str(message.parsed()["Message-ID"]))
        assert match
        assert message.recipients == (readers[int(match[2])],)
    return sent_editions


def check_posts_reached_their_edition(service: Service, rows: list[EditionRow], sent: set[int]) -> None:
    """An edition created well after a post of its window was stored went out to its subscribers (a post stored
    just before, or after, its edition was made is in no digest: windows are by publication time)."""
    stored = posts(service)
    for row in rows:
        before = row.created_at - STORED_WELL_BEFORE
        known = [p for p in stored if row.since < p.published <= row.until and p.changed_at < before]
        if known:
            assert row.id in sent, f"edition {row.id} was created after {known[0].title!r} was stored, sent nothing"


_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never through a configured proxy


def fetch(url: str) -> str | None:
    """The body at ``url``, or None while the server does not answer (yet) or answers an error."""
    try:
        with _DIRECT.open(url, timeout=5) as response:
            body: bytes = response.read()
            return body.decode("utf-8")
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return None


# --- SQLite: one process, stopped and started again -------------------------------------------------------------


def deliver_a_post(
    service: Service, server: SmtpTestServer, source: Path, feed_url: str | None, first: int, readers: dict[int, str]
) -> EditionRow:
    """Append a post right after a fire time and follow it into the feed and into its edition's digest.

    A post is published "now", so it belongs to the window running; on a very slow machine it may be gathered
    only after that window's edition was made, and then it is in no edition: try again with another post.
    """
    for number in range(first, first + 5):
        just_after_next_fire()
        edition = follow_post(service, server, append_post(source, number), feed_url, readers)
        if edition is not None:
            return edition
    raise AssertionError("five posts in a row were gathered only after their edition was made")


def follow_post(
    service: Service, server: SmtpTestServer, post: Appended, feed_url: str | None, readers: dict[int, str]
) -> EditionRow | None:
    """Wait for ``post`` in the feed and for its edition; that edition's digest to every reader, with the post
    in it, or None if the edition was made before the post was gathered."""
    if feed_url is not None:
        wait_for(lambda: post.title in (fetch(feed_url) or ""), f"{post.title!r} in {feed_url}")
    edition = wait_for(lambda: edition_covering(service, post.published), f"the edition of {post.title!r}")
    if not any(row.edition_id == edition.id for row in deliveries(service)):
        return None
    for subscriber_id in readers:
        prefix = f"<edition-{edition.id}.{subscriber_id}."

        def arrived(prefix: str = prefix) -> list[Received]:
            return [m for m in server.messages if str(m.parsed()["Message-ID"]).startswith(prefix)]

        (message,) = wait_for(arrived, f"edition {edition.id}'s digest to subscriber {subscriber_id}")
        assert post.title in digest_text(message)
    return edition


@pytest.mark.slow
def test_run_gathers_publishes_and_sends_then_catches_up_after_a_restart_without_duplicates(
    tmp_path: Path, launch: Callable[..., RunProcess]
) -> None:
    source = tmp_path / "posts.jsonl"
    with smtp_server() as server:
        config = service_config(tmp_path, f"sqlite:///{tmp_path / 'store.db'}", server)
        service, readers = prepare_store(config, subscribers=1)
        try:
            port = free_port()
            first = launch(config, web_port=port)
            wait_for(lambda: first.leads, "the process to lead")
            feed_url = f"http://127.0.0.1:{port}/feeds/all.atom"
            wait_for(lambda: fetch(feed_url), f"{feed_url} to answer")
            deliver_a_post(service, server, source, feed_url, 1, readers)

            status, seconds = first.terminate()
            stopped_at = datetime.now(UTC)
            assert status == 0, first.log()
            assert seconds < STOP_WITHIN, f"{seconds:.1f} s from SIGTERM to exit"
            assert first.events("stopped"), first.log()
            before = editions(service)
            # Stay down over at least one fire time, so the restart has an edition to catch up on.
            wait_for(lambda: edition_window_ended_after(stopped_at), "a fire time while no process runs")

            second = launch(config)  # no web this time: the feeds were seen over HTTP already
            wait_for(lambda: second.leads, "the restarted process to lead")
            restarted_at = datetime.now(UTC)
            edition = deliver_a_post(service, server, source, None, 10, readers)
            assert edition.created_at > restarted_at
            status, seconds = second.terminate()
            assert status == 0, second.log()
            assert seconds < STOP_WITHIN, f"{seconds:.1f} s from SIGTERM to exit"

            rows = [row for row in editions(service) if row.cadence == "daily"]
            check_chain(rows)
            caught_up = [row for row in rows if stopped_at < row.until <= restarted_at]
            assert caught_up, "no fire time fell while no process ran"
            assert all(row.created_at > stopped_at for row in caught_up)
            assert [row.id for row in rows[: len(before)]] == [row.id for row in before]  # nothing made again
            sent = check_delivered_once(service, server, readers, exactly_once_at_server=True)
            assert len(sent) >= 2  # one edition before the restart, one after
            check_posts_reached_their_edition(service, rows, sent)
        finally:
            service.close()


def edition_window_ended_after(moment: datetime) -> bool:
    """Whether a fire time of the schedule passed after ``moment``."""
    fire = next_fire(DAILY_TRIGGER, moment)
    return fire is not None and datetime.now(UTC) > fire


# --- PostgreSQL: three processes, the leader killed ---------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.postgres
def test_three_processes_on_postgresql_survive_the_leader_being_killed(
    tmp_path: Path, postgres_url: str, launch: Callable[..., RunProcess]
) -> None:
    source = tmp_path / "posts.jsonl"
    with smtp_server() as server:
        config = service_config(tmp_path, postgres_url, server)
        service, readers = prepare_store(config, subscribers=3)
        writer = PostWriter(source, first=1)
        try:
            processes = [launch(config) for _ in range(3)]
            leader = wait_for(lambda: next((p for p in processes if p.leads), None), "a leader among three")
            writer.start()
            # Let it lead until an edition with posts went out to everyone.
            wait_for(lambda: sent_editions_after(service, None), "a first edition sent")
            assert [p for p in processes if p.leads] == [leader]  # one leader only

            # Kill it just before a fire time: that edition falls due while no process leads (unless another
            # process polls for the lock in the few milliseconds left).
            killed_at, killed, fire = kill_just_before_a_fire_time(leader)
            others = [p for p in processes if p is not leader]
            successor = wait_for(
                lambda: next((p for p in others if p.leads), None),
                "another process to lead",
                timeout=TAKEOVER_WITHIN,
                interval=0.05,
            )
            takeover_seconds = time.monotonic() - killed
            taken_over_at = datetime.now(UTC)
            assert [p for p in others if p.leads] == [successor]

            # Keep going: editions the successor makes, sent to everyone, two windows past the takeover.
            wait_for(
                lambda: sent_editions_after(service, taken_over_at + PERIOD),
                "editions of the successor sent",
            )
            writer.stop()
            last = writer.written[-1]
            wait_for(lambda: edition_covering(service, last.published), f"the edition of the last post, {last.title}")
            wait_for(lambda: not open_deliveries(service), "every delivery sent")
            for process in others:
                status, seconds = process.terminate()
                assert status == 0, process.log()
                assert seconds < STOP_WITHIN, f"{seconds:.1f} s from SIGTERM to exit"

            rows = editions(service)
            check_chain(rows)
            assert rows[0].until < killed_at < rows[-1].since  # the chain runs across the takeover
            sent = check_delivered_once(service, server, readers, exactly_once_at_server=False)
            (missed,) = [row for row in rows if row.until == fire]  # due while nobody led, made by the successor
            assert missed.created_at > killed_at
            assert any(row.id in sent and row.created_at > taken_over_at for row in rows)
            check_posts_reached_their_edition(service, rows, sent)
            # No two processes both made an edition: the logs name each edition created once, by a process
            # that led then (the killed leader may have died between making one and saying so).
            created = Counter(edition for process in processes for edition in process.created_editions())
            assert max(created.values()) == 1, created
            assert len({row.id for row in rows} - set(created)) <= 1, (created, [row.id for row in rows])
            assert missed.id in successor.created_editions()
            assert not any(p.events("leader-lost") for p in processes)
            print(
                f"takeover after {takeover_seconds:.2f} s, {(taken_over_at - fire).total_seconds():.2f} s after"
                f" the fire time; {len(rows)} editions, {len(sent)} sent"
            )
        finally:
            writer.stop()
            service.close()


def kill_just_before_a_fire_time(process: RunProcess) -> tuple[datetime, float, datetime]:
    """SIGKILL ``process`` some 50 ms before a fire time; when it was killed (clock and monotonic time), and
    that fire time."""
    while True:
        fire = next_fire_time()
        sleep_until(fire - timedelta(seconds=0.05))
        killed_at, killed = datetime.now(UTC), time.monotonic()
        if killed_at < fire - timedelta(seconds=0.02):  # a loaded machine may oversleep: then take the next one
            process.kill()
            return killed_at, killed, fire


def sent_editions_after(service: Service, moment: datetime | None) -> bool:
    """Whether an edition created after ``moment`` (None: any) has deliveries, all of them sent."""
    by_edition: dict[int, list[str]] = defaultdict(list)
    for row in deliveries(service):  # first: an edition is committed with its deliveries, so it is read after
        by_edition[row.edition_id].append(row.status)
    created = {row.id: row.created_at for row in editions(service)}
    return any(
        statuses and all(status == "sent" for status in statuses)
        for edition_id, statuses in by_edition.items()
        if moment is None or created[edition_id] > moment
    )
