"""Wall-clock jumps: time goes forward only for the scheduler.

Windows come from the store's record of the last edition and the crontab, so a clock moved forward makes each
missing window once (none ending after the clock), a clock moved back makes nothing until it passes the last
edition's end and then goes on, and the posts of a fire time skipped beyond the grace time go in the next
edition. Driven by the runner's injected clock, and (for APScheduler itself, which reads the wall clock) by
time-machine, with a crontab in seconds: no sleeps beyond a few scheduler ticks.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import time_machine

from syndication.app.digests import compose
from syndication.app.editions import list_editions, public_copy
from syndication.app.gathering import import_file
from syndication.app.service import Service, init_store
from syndication.app.status import status_report
from syndication.app.subscribers import add_subscriber
from syndication.config import JsonlSourceSettings, Settings, SourceSettings
from syndication.core.models import Edition
from syndication.scheduling.cadences import due_windows, parse_crontab
from syndication.scheduling.runner import Runner
from syndication.store.job_runs import JobRun
from tests.smtp_server import SmtpTestServer, smtp_server
from tests.support import poll, post_record, write_jsonl
from tests.test_scheduler import MovableClock, editions_of, local, scheduled_settings

EVERY_TEN = "*/10 * * * * *"  # an edition every ten seconds
T = datetime(2026, 6, 2, 9, 0, 0, tzinfo=UTC)
READERS = ("ana@example.org", "bo@example.org")


def at(seconds: float) -> datetime:
    """``seconds`` after 2 June 2026 09:00:00 UTC (a fire time of every crontab here)."""
    return T + timedelta(seconds=seconds)


def clock_settings(
    settings: Settings,
    *,
    crontab: str = EVERY_TEN,
    grace: int = 3600,
    server: SmtpTestServer | None = None,
    sources: tuple[SourceSettings, ...] = (),
) -> Settings:
    """The fixture settings with ``crontab`` for the daily cadence, ``grace`` seconds of misfire grace and a
    scheduler that looks at the clock five times a second."""
    base = scheduled_settings(settings, server)
    cadences = {**base.schedule.cadences, "daily": crontab}
    update = {"cadences": cadences, "misfire_grace_seconds": grace, "leader_poll_seconds": 0.2}
    schedule = base.schedule.model_copy(update=update)
    return base.model_copy(update={"schedule": schedule, "sources": sources})


def publish(settings: Settings, path: Path, records: Sequence[dict[str, Any]], now: datetime) -> None:
    """Store ``records`` as posts, imported at ``now``."""
    with Service.open(settings, MovableClock(now)) as service:
        report = import_file(service, write_jsonl(path, records))
    assert report.failure is None and report.added == len(records)


def windows(editions: Sequence[Edition]) -> list[tuple[datetime, datetime]]:
    return [(e.since, e.until) for e in editions]


def assert_consecutive(editions: Sequence[Edition]) -> None:
    """Each window starts where the one before ended: none twice, no gap between them."""
    for before, after in itertools.pairwise(editions):
        assert after.since == before.until, (before, after)


def last_run(settings: Settings, job_id: str) -> JobRun | None:
    with Service.open(settings) as service:
        return {job.job_id: job.last for job in status_report(service).jobs}.get(job_id)


@pytest.fixture
def subscribed(settings: Settings) -> Settings:
    """An initialised store with two confirmed daily readers of everything, and no posts yet."""
    init_store(settings)
    with Service.open(settings, MovableClock(at(-3600))) as service:
        for address in READERS:
            add_subscriber(service, address, name="", themes=[], cadence="daily", language="en", confirmed=True)
    return settings


@pytest.fixture
def runners() -> Iterator[Callable[[Settings, MovableClock], Runner]]:
    """Runners on an injected clock, shut down after the test."""
    made: list[Runner] = []

    def make(settings: Settings, clock: MovableClock) -> Runner:
        runner = Runner(settings, clock=clock, name=f"clock-test-{len(made)}")
        made.append(runner)
        return runner

    yield make
    for runner in made:
        runner.shutdown()


# --- The rule: pure ------------------------------------------------------------------------------------------


def test_due_windows_follow_the_last_edition_whichever_way_the_clock_jumps() -> None:
    trigger = parse_crontab(EVERY_TEN, "Europe/Berlin")
    hour = timedelta(hours=1)
    # Forward over three fire times, within grace: each missing window once, oldest first, none ahead of now.
    assert due_windows(trigger, at(34), hour, at(0)) == [(at(0), at(10)), (at(10), at(20)), (at(20), at(30))]
    assert due_windows(trigger, at(34), hour, at(30)) == []  # made: nothing twice
    # Back behind the last edition's end, by a second or by a year: nothing, until the clock passes it.
    for behind in (at(29), at(21), at(-3600), at(-365 * 86400)):
        assert due_windows(trigger, behind, hour, at(30)) == []
    assert due_windows(trigger, at(30.5), hour, at(30)) == []  # past it, but the next window has not ended
    assert due_windows(trigger, at(40), hour, at(30)) == [(at(30), at(40))]
    # Forward past the grace time: the skipped fire times get no late edition of their own, and the next edition
    # reaches back to the last one, so their posts are in it.
    five = timedelta(seconds=5)
    assert due_windows(trigger, at(127), five, at(0)) == []
    assert due_windows(trigger, at(131), five, at(0)) == [(at(0), at(130))]
    # Within the grace time of two fire times after a skipped one: the first window reaches back, the next follows.
    assert due_windows(trigger, at(131), timedelta(seconds=15), at(0)) == [(at(0), at(120)), (at(120), at(130))]


# --- The jobs, with the runner's injected clock ---------------------------------------------------------------


def test_a_jump_forward_over_three_windows_makes_each_once_and_none_ahead_of_the_clock(
    subscribed: Settings, runners: Callable[[Settings, MovableClock], Runner], tmp_path: Path
) -> None:
    with smtp_server() as server:
        settings = clock_settings(subscribed, server=server)
        posts = [
            post_record(1, published=at(-5).isoformat(), title="Before the jump"),
            post_record(2, published=at(12).isoformat(), title="In the second window"),
            post_record(3, published=at(33).isoformat(), title="After the last window made"),
        ]
        publish(settings, tmp_path / "posts.jsonl", posts, at(-10))
        clock = MovableClock(at(1))
        runner = runners(settings, clock)
        runner.editions("daily")
        assert windows(editions_of(settings)) == [(at(-10), at(0))]

        clock.now = at(34)  # three fire times passed at once
        runner.editions("daily")
        runner.editions("daily")  # again, and a rival runner: nothing twice
        runners(settings, clock).editions("daily")
        made = editions_of(settings)
        assert windows(made) == [(at(-10), at(0)), (at(0), at(10)), (at(10), at(20)), (at(20), at(30))]
        assert all(e.until <= clock.now for e in made)

        runner.deliveries()
        assert server.wait_for(2 * len(READERS))
        with Service.open(settings, clock) as service:
            deliveries = {report.edition.until: report.deliveries for report in list_editions(service)}
            copies = {e.until: public_copy(service, e) for e in made}
        # The project's rule for an empty window: nothing new for a reader, no digest at all; so nobody was sent
        # the two empty windows and they have no public copy.
        assert deliveries == {at(0): {"sent": 2}, at(10): {}, at(20): {"sent": 2}, at(30): {}}
        assert copies[at(10)] is None and copies[at(30)] is None
        for address in READERS:
            assert len(server.received_for(address)) == 2

        clock.now = at(41)  # the next window, once it has ended, with the post of second 33
        runner.editions("daily")
        made = editions_of(settings)
        assert windows(made)[-1] == (at(30), at(40))
        assert_consecutive(made)
        with Service.open(settings, clock) as service:
            digest = compose(service, at(30), at(40), None)
        assert digest is not None
        assert [item.post.title for s in digest.sections for item in s.items] == ["After the last window made"]


def test_a_jump_back_makes_nothing_until_the_clock_passes_the_last_edition_then_goes_on(
    subscribed: Settings, runners: Callable[[Settings, MovableClock], Runner]
) -> None:
    settings = clock_settings(subscribed)
    clock = MovableClock(at(1))
    runner = runners(settings, clock)
    runner.editions("daily")
    clock.now = at(21)
    runner.editions("daily")
    made = editions_of(settings)
    assert windows(made) == [(at(-10), at(0)), (at(0), at(10)), (at(10), at(20))]

    clock.now = at(21) - timedelta(hours=1)  # the clock moves back an hour
    runner.editions("daily")
    run = last_run(settings, "edition:daily")
    assert run is not None and run.ok, run
    assert "no edition due: the clock (2026-06-02 08:00:21 UTC) is before the end of the last edition" in run.summary
    for moment in (at(19), at(20.5)):  # catching up; then past the last edition's end, but nothing new ended
        clock.now = moment
        runner.editions("daily")
        assert editions_of(settings) == made

    clock.now = at(30.5)
    runner.editions("daily")
    runner.editions("daily")
    after = editions_of(settings)
    assert windows(after) == [*windows(made), (at(20), at(30))]  # the next one, once
    assert_consecutive(after)


def test_posts_of_windows_skipped_by_a_jump_beyond_grace_are_in_the_next_edition(
    subscribed: Settings, runners: Callable[[Settings, MovableClock], Runner], tmp_path: Path
) -> None:
    desk = tmp_path / "desk.jsonl"
    write_jsonl(desk, [])
    source = JsonlSourceSettings(kind="jsonl", name="desk", path=desk)
    settings = clock_settings(subscribed, crontab="0 7 * * *", grace=3600, sources=(source,))
    clock = MovableClock(local(2026, 6, 2, 7, 0, 2))
    runner = runners(settings, clock)
    runner.editions("daily")
    (first,) = editions_of(settings)
    assert first.until == local(2026, 6, 2, 7)

    # The clock jumps to 09:30 the next day: the 07:00 fire time is beyond the hour of grace, so no late edition.
    clock.now = local(2026, 6, 3, 9, 30)
    titles = {"Noon on the 2nd": local(2026, 6, 2, 12), "Before seven on the 3rd": local(2026, 6, 3, 6, 59),
              "Just after seven on the 3rd": local(2026, 6, 3, 7, 1)}  # fmt: skip
    records = [post_record(n, published=moment.isoformat(), title=title)
               for n, (title, moment) in enumerate(titles.items(), start=10)]  # fmt: skip
    write_jsonl(desk, records)
    runner.editions("daily")
    assert editions_of(settings) == [first]

    # The next fire time: one edition, from where the last one ended, with every post since (gathered first).
    clock.now = local(2026, 6, 4, 7, 0, 3)
    runner.editions("daily")
    (_, following) = editions_of(settings)
    assert (following.since, following.until) == (local(2026, 6, 2, 7), local(2026, 6, 4, 7))
    with Service.open(settings, clock) as service:
        digest = compose(service, following.since, following.until, None)
        (report,) = [r for r in list_editions(service) if r.edition.id == following.id]
    assert digest is not None
    assert sorted(item.post.title for s in digest.sections for item in s.items) == sorted(titles)
    assert report.deliveries == {"queued": len(READERS)}


# --- APScheduler itself, which times its jobs by the wall clock: time-machine moves it -------------------------


def test_the_running_scheduler_goes_on_after_the_wall_clock_moves_back(subscribed: Settings) -> None:
    settings = clock_settings(subscribed, crontab="*/2 * * * * *")
    with time_machine.travel(local(2026, 6, 2, 7), tick=True) as traveller:
        runner = Runner(settings, name="jumpy")
        try:
            runner.start()
            assert runner.poll_leadership()
            assert poll(lambda: len(editions_of(settings)) >= 2, 20.0)
            wall, mono = datetime.now(UTC), time.monotonic()
            traveller.move_to(wall - timedelta(hours=1))
            back = datetime.now(UTC)

            def ran_while_back(job_id: str) -> bool:
                run = last_run(settings, job_id)
                return bool(run and run.finished_at and back <= run.started_at < back + timedelta(minutes=5))

            # Without a restart, the edition job (cron) and the feeds job (hourly) run in the hour that came back;
            # the edition job makes nothing and says it waits.
            assert poll(lambda: ran_while_back("edition:daily") and ran_while_back("feeds"), 10.0)
            run = last_run(settings, "edition:daily")
            assert run is not None and run.ok and "waiting for it" in run.summary, run
            before = editions_of(settings)
            assert all(e.until <= wall for e in before)
            started = run.started_at
            assert poll(lambda: (r := last_run(settings, "edition:daily")) and r.started_at > started, 10.0)
            assert editions_of(settings) == before  # its next run (two seconds on, by the clock moved back): nothing

            # The clock comes back to the true time: the windows that ended meanwhile are made, each once.
            traveller.move_to(wall + timedelta(seconds=time.monotonic() - mono))
            assert poll(lambda: len(editions_of(settings)) > len(before), 10.0)
            time.sleep(0.5)  # let a run in flight finish
            after = editions_of(settings)
            now = datetime.now(UTC)
        finally:
            runner.shutdown()
    assert after[: len(before)] == before
    assert_consecutive(after)
    assert all(e.until <= now for e in after)


def test_a_restart_after_the_clock_moved_back_does_not_keep_a_next_run_from_the_clock_that_was_ahead(
    subscribed: Settings,
) -> None:
    settings = clock_settings(subscribed, crontab="0 7 * * *")

    def start_at(moment: datetime) -> datetime | None:
        with time_machine.travel(moment, tick=True):
            runner = Runner(settings, name="restarted")
            try:
                runner.start()
                assert runner.poll_leadership()

                def next_run() -> datetime | None:  # once the run at start (if due now) has moved it on
                    with Service.open(settings) as service:
                        runs = {job.job_id: job.next_run for job in status_report(service).jobs}
                    stored = runs.get("edition:daily")
                    return stored if stored and stored > moment + timedelta(minutes=1) else None

                return poll(next_run, 10.0)
            finally:
                runner.shutdown()

    assert start_at(local(2026, 6, 2, 7, 20)) == local(2026, 6, 3, 7)  # stored: tomorrow at seven
    # Restarted with the clock a day and a half behind: the job waits for the next seven o'clock by this clock,
    # not for the one stored by the clock that was ahead.
    assert start_at(local(2026, 6, 1, 20)) == local(2026, 6, 2, 7)
