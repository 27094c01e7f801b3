"""The scheduler: edition windows from crontabs over DST changes, misfires and catch-up, approval holding a send,
and APScheduler's persisted jobs across a restart, driven by an injected clock or time-machine, never by sleeps."""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import time_machine
from pydantic import SecretStr

from syndication.app.digests import compose
from syndication.app.gathering import import_file
from syndication.app.service import Service, init_store
from syndication.app.status import status_report
from syndication.app.subscribers import add_subscriber
from syndication.cli import main
from syndication.config import JsonlSourceSettings, Settings, load_settings
from syndication.core.models import Edition, EditionStatus
from syndication.errors import ConfigError
from syndication.scheduling.cadences import due_windows, latest_fire, next_fire, parse_crontab, window_ending
from syndication.scheduling.runner import Runner
from syndication.store import database, ledger
from tests.smtp_server import SmtpTestServer, smtp_server
from tests.support import poll, post_record, write_config, write_jsonl

BERLIN = ZoneInfo("Europe/Berlin")
DAILY = "0 7 * * *"


def local(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> datetime:
    """A moment given in Berlin time, as UTC."""
    return datetime(year, month, day, hour, minute, second, tzinfo=BERLIN).astimezone(UTC)


# --- Windows from crontabs: pure -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("start", "short_or_long_day", "hours"),
    [
        (local(2026, 3, 25, 12), date(2026, 3, 29), 23),
        (local(2026, 10, 21, 12), date(2026, 10, 25), 25),
    ],
)
def test_daily_windows_over_a_dst_change_skip_and_double_nothing(
    start: datetime, short_or_long_day: date, hours: int
) -> None:
    trigger = parse_crontab(DAILY, "Europe/Berlin")
    fires = [next_fire(trigger, start)]
    for _ in range(8):
        fires.append(next_fire(trigger, fires[-1]))  # type: ignore[arg-type]
    windows = [window_ending(trigger, fire) for fire in fires if fire]
    days = [until.astimezone(BERLIN).date() for _, until in windows]
    assert all(until.astimezone(BERLIN).hour == 7 for _, until in windows)
    assert [(later - earlier).days for earlier, later in itertools.pairwise(days)] == [1] * 8  # none skipped
    for (_, until), (since, _) in itertools.pairwise(windows):
        assert since == until  # each window starts exactly where the one before ended
    lengths = {until.astimezone(BERLIN).date(): until - since for since, until in windows}
    assert lengths[short_or_long_day] == timedelta(hours=hours)
    assert {length for day, length in lengths.items() if day != short_or_long_day} == {timedelta(hours=24)}


def test_weekly_and_monthly_windows_run_between_fire_times() -> None:
    weekly = parse_crontab("0 8 * * mon", "Europe/Berlin")
    monday = latest_fire(weekly, local(2026, 11, 25, 12))  # a Wednesday
    assert monday == local(2026, 11, 23, 8)
    assert window_ending(weekly, monday) == (local(2026, 11, 16, 8), local(2026, 11, 23, 8))
    monthly = parse_crontab("0 8 1 * *", "Europe/Berlin")
    first = latest_fire(monthly, local(2026, 11, 25, 12))
    assert first is not None
    assert window_ending(monthly, first) == (local(2026, 10, 1, 8), local(2026, 11, 1, 8))


def test_a_late_run_covers_the_window_of_its_fire_time_not_of_the_clock() -> None:
    trigger = parse_crontab(DAILY, "Europe/Berlin")
    on_time = due_windows(trigger, local(2026, 6, 2, 7, 0, 1), timedelta(hours=1), local(2026, 6, 1, 7))
    late = due_windows(trigger, local(2026, 6, 2, 7, 55), timedelta(hours=1), local(2026, 6, 1, 7))
    assert on_time == late == [(local(2026, 6, 1, 7), local(2026, 6, 2, 7))]


def test_due_windows_catch_up_within_grace_and_never_repeat() -> None:
    trigger = parse_crontab(DAILY, "Europe/Berlin")
    three_days = timedelta(days=3)
    # Down for two fire times, back within grace: both windows, oldest first, meeting exactly.
    assert due_windows(trigger, local(2026, 6, 3, 9), three_days, local(2026, 6, 1, 7)) == [
        (local(2026, 6, 1, 7), local(2026, 6, 2, 7)),
        (local(2026, 6, 2, 7), local(2026, 6, 3, 7)),
    ]
    assert due_windows(trigger, local(2026, 6, 3, 9), three_days, local(2026, 6, 3, 7)) == []  # already made
    assert due_windows(trigger, local(2026, 6, 3, 9), timedelta(hours=1), local(2026, 6, 1, 7)) == []  # too late
    # A cadence with no edition yet starts with the latest window, not a backlog.
    assert due_windows(trigger, local(2026, 6, 3, 7, 5), three_days, None) == [
        (local(2026, 6, 2, 7), local(2026, 6, 3, 7))
    ]


def test_six_fields_give_seconds_and_wrong_crontabs_are_refused(tmp_path: Path) -> None:
    every_five = parse_crontab("*/5 * * * * *", "UTC")
    assert window_ending(every_five, datetime(2026, 1, 1, 0, 0, 10, tzinfo=UTC)) == (
        datetime(2026, 1, 1, 0, 0, 5, tzinfo=UTC),
        datetime(2026, 1, 1, 0, 0, 10, tzinfo=UTC),
    )
    for body, expected in [
        ('daily = "0 25 * * *"', "schedule.cadences"),
        ('daily = "0 7 * *"', "has 4 fields"),
        ('hourly = "0 * * * *"', "unknown cadence 'hourly'"),
    ]:
        config = write_config(tmp_path, "sqlite:///x.db", f"[schedule.cadences]\n{body}\n")
        with pytest.raises(ConfigError, match=expected.replace("(", r"\(")):
            load_settings(config, environ={})


# --- The jobs, with an injected clock ----------------------------------------------------------------------


class MovableClock:
    """A clock the test sets."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def scheduled_settings(settings: Settings, server: SmtpTestServer | None = None, **digest: object) -> Settings:
    """The fixture settings with a signing key, the test SMTP server and ``digest`` overrides."""
    update: dict[str, object] = {
        "secret_key": SecretStr("scheduler-test-key-" + "x" * 16),
        "digest": settings.digest.model_copy(update=digest),
    }
    if server is not None:
        update["smtp"] = server.settings(timeout_seconds=2.0)
    return settings.model_copy(update=update)


@pytest.fixture
def readers(settings: Settings, tmp_path: Path) -> Settings:
    """An initialised store with posts on 1-2 June 2026 and two confirmed daily subscribers."""
    init_store(settings)
    clock = MovableClock(local(2026, 6, 1, 6))
    with Service.open(settings, clock) as service:
        records = [
            post_record(1, published="2026-06-01T09:00:00Z", title="Heat plan adopted"),
            post_record(2, published="2026-06-02T09:00:00Z", title="Sponge city works begin", themes=["resilience"]),
        ]
        import_file(service, write_jsonl(tmp_path / "posts.jsonl", records))
        for address in ("ana@example.org", "bo@example.org"):
            add_subscriber(service, address, name="", themes=[], cadence="daily", language="en", confirmed=True)
    return settings


@pytest.fixture
def runner_factory() -> Iterator[Callable[[Settings, MovableClock], Runner]]:
    """Runners on an injected clock, shut down after the test."""
    made: list[Runner] = []

    def make(settings: Settings, clock: MovableClock) -> Runner:
        runner = Runner(settings, clock=clock, name=f"test-{len(made)}")
        made.append(runner)
        return runner

    yield make
    for runner in made:
        runner.shutdown()


def editions_of(settings: Settings, cadence: str = "daily") -> list[Edition]:
    """Every edition of ``cadence``, oldest window first."""
    engine = database.open_engine(settings.database.url)
    try:
        with database.transaction(engine) as session:
            return sorted((e for e in ledger.editions(session, limit=1000) if e.cadence == cadence),
                          key=lambda e: e.until)  # fmt: skip
    finally:
        engine.dispose()


def test_each_window_gets_one_edition_whoever_runs_it_and_however_late(
    readers: Settings, runner_factory: Callable[[Settings, MovableClock], Runner]
) -> None:
    clock = MovableClock(local(2026, 6, 2, 7, 0, 2))
    runner = runner_factory(scheduled_settings(readers), clock)
    runner.editions("daily")
    clock.now = local(2026, 6, 2, 7, 40)  # a second run in the same period, and a rival runner: nothing new
    runner.editions("daily")
    runner_factory(scheduled_settings(readers), clock).editions("daily")
    clock.now = local(2026, 6, 3, 7, 30)  # the next day, half an hour late
    runner.editions("daily")
    editions = editions_of(readers)
    assert [(e.since, e.until) for e in editions] == [
        (local(2026, 6, 1, 7), local(2026, 6, 2, 7)),
        (local(2026, 6, 2, 7), local(2026, 6, 3, 7)),
    ]
    assert all(e.status == EditionStatus.SENDING for e in editions)


def test_an_edition_gathers_first_so_a_post_of_its_last_minutes_is_in_it(
    readers: Settings, runner_factory: Callable[[Settings, MovableClock], Runner], tmp_path: Path
) -> None:
    late = post_record(9, published=local(2026, 6, 2, 6, 59).isoformat(), title="Published a minute before seven")
    desk = JsonlSourceSettings(kind="jsonl", name="desk", path=write_jsonl(tmp_path / "desk.jsonl", [late]))
    settings = scheduled_settings(readers).model_copy(update={"sources": (desk,)})
    clock = MovableClock(local(2026, 6, 2, 7, 0, 1))  # the source's own gather has not run since 06:59
    runner_factory(settings, clock).editions("daily")
    (edition,) = editions_of(settings)
    with Service.open(settings, clock) as service:
        digest = compose(service, edition.since, edition.until, None)
    assert digest is not None
    assert "Published a minute before seven" in [
        item.post.title for section in digest.sections for item in section.items
    ]


def test_approval_holds_the_send_until_an_editor_approves(
    readers: Settings, runner_factory: Callable[[Settings, MovableClock], Runner], caplog: pytest.LogCaptureFixture
) -> None:
    with smtp_server() as server:
        settings = scheduled_settings(readers, server, require_approval=True, approval_emails=("ed@example.org",),
                                      approval_timeout_hours=2.0)  # fmt: skip
        clock = MovableClock(local(2026, 6, 2, 7, 0, 1))
        runner = runner_factory(settings, clock)
        runner.editions("daily")
        (draft,) = editions_of(settings)
        assert draft.status == EditionStatus.DRAFT
        (notice,) = server.received_for("ed@example.org")
        body = notice.parsed().get_body(("plain",))
        assert body is not None
        assert f"https://news.example.org/editor/editions/{draft.id}" in body.get_content()
        assert f"syndication editions approve {draft.id}" in body.get_content()

        runner.deliveries()  # a draft is not sent
        assert server.received_for("ana@example.org") == []

        clock.now = local(2026, 6, 2, 9, 30)  # past the approval limit: reported, still not sent
        with caplog.at_level(logging.WARNING, logger="syndication.scheduler"):
            runner.editions("daily")
        assert f"edition {draft.id} (daily" in caplog.text and "not sent until approved" in caplog.text
        with Service.open(settings, clock) as service:
            assert [d.id for d in status_report(service).stale_drafts] == [draft.id]
        runner.deliveries()
        assert server.received_for("ana@example.org") == []

        config = settings.config_path
        assert config is not None
        assert main(["--config", str(config), "editions", "approve", str(draft.id)]) == 0
        runner.deliveries()
        assert len(server.received_for("ana@example.org")) == 1
        assert len(server.received_for("bo@example.org")) == 1
        assert editions_of(settings)[0].status == EditionStatus.SENT


def test_status_shows_each_jobs_last_run_the_queue_and_the_last_editions(
    readers: Settings,
    runner_factory: Callable[[Settings, MovableClock], Runner],
    capsys: pytest.CaptureFixture[str],
) -> None:
    clock = MovableClock(local(2026, 6, 2, 7, 0, 1))
    runner_factory(scheduled_settings(readers), clock).editions("daily")
    config = readers.config_path
    assert config is not None
    assert main(["--config", str(config), "status"]) == 0
    out = capsys.readouterr().out
    assert "edition:daily" in out and "ok, edition 1 created for 2026-06-01 05:00:00 to 2026-06-02 05:00:00 UTC" in out
    assert "queue: 2 deliveries waiting to be sent" in out
    assert "daily    #1 2026-06-01 07:00:00 CEST .. 2026-06-02 07:00:00 CEST sending (2 queued)" in out
    assert "weekly   none yet; next due" in out


# --- APScheduler itself: persisted jobs across a restart, with time-machine -----------------------------------


def run_scheduler_at(settings: Settings, moment: datetime, *, expect_run: bool) -> list[Edition]:
    """Start a leading runner at ``moment`` (time-machine moves every clock), let its due jobs run, stop it.

    When the edition job is not expected to run, the runner waits for the feeds job it starts with instead,
    which shows the scheduler processed its due jobs.
    """
    with time_machine.travel(moment, tick=True):
        runner = Runner(settings, name="restarted")
        try:
            runner.start()
            assert runner.poll_leadership()
            assert poll(lambda: _last_run(settings, "feeds") >= moment, 20.0)
            ran = poll(lambda: _last_run(settings, "edition:daily") >= moment, timeout=1.0 if not expect_run else 20.0)
            assert ran == expect_run
        finally:
            runner.shutdown()
    return editions_of(settings)


def _last_run(settings: Settings, job_id: str) -> datetime:
    with Service.open(settings) as service:
        runs = {job.job_id: job.last for job in status_report(service).jobs}
    last = runs.get(job_id)
    return last.finished_at if last and last.finished_at else datetime.min.replace(tzinfo=UTC)


def test_a_service_down_over_the_send_hour_sends_that_edition_once_when_back_within_grace(readers: Settings) -> None:
    settings = scheduled_settings(readers)
    # First start the evening before: the new job runs once (nothing due: 07:00 is long past the grace time) and
    # the job store keeps it, next run 2 June 07:00.
    assert run_scheduler_at(settings, local(2026, 6, 1, 20), expect_run=True) == []
    # Down over 07:00, back at 07:20 (grace is an hour): the stored job fires once for 1 to 2 June.
    editions = run_scheduler_at(settings, local(2026, 6, 2, 7, 20), expect_run=True)
    assert [(e.since, e.until) for e in editions] == [(local(2026, 6, 1, 7), local(2026, 6, 2, 7))]
    # Restarted again in the same period: the stored next run is tomorrow; nothing runs, no second edition.
    assert run_scheduler_at(settings, local(2026, 6, 2, 7, 40), expect_run=False) == editions
    # Down over the next 07:00 beyond the grace time: APScheduler counts it missed; that window is not sent late.
    assert run_scheduler_at(settings, local(2026, 6, 3, 9, 30), expect_run=False) == editions
    with Service.open(settings) as service:
        (daily,) = [job for job in status_report(service).jobs if job.job_id == "edition:daily"]
    assert daily.next_run == local(2026, 6, 4, 7)


def test_missed_fire_times_within_grace_run_once_coalesced_and_create_every_window(
    readers: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    settings = scheduled_settings(readers)
    settings = settings.model_copy(
        update={"schedule": settings.schedule.model_copy(update={"misfire_grace_seconds": 3 * 86400})}
    )
    first = run_scheduler_at(settings, local(2026, 6, 1, 20), expect_run=True)  # 1 June 07:00 is within grace
    assert [(e.since, e.until) for e in first] == [(local(2026, 5, 31, 7), local(2026, 6, 1, 7))]
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="syndication.scheduler"):
        editions = run_scheduler_at(settings, local(2026, 6, 4, 7, 30), expect_run=True)  # three fire times missed
    runs = [r for r in caplog.records if getattr(r, "job", None) == "edition:daily"]
    assert len(runs) == 1  # coalesced: one run for the three missed fire times
    assert [(e.since, e.until) for e in editions] == [
        (local(2026, 5, 31, 7), local(2026, 6, 1, 7)),
        (local(2026, 6, 1, 7), local(2026, 6, 2, 7)),
        (local(2026, 6, 2, 7), local(2026, 6, 3, 7)),
        (local(2026, 6, 3, 7), local(2026, 6, 4, 7)),
    ]


def test_an_edition_is_created_with_its_deliveries_or_not_at_all(readers: Settings) -> None:
    # On SQLite a savepoint that opened the transaction used to commit on release, publishing the edition before
    # its deliveries were queued: a sender finishing editions in between marked it sent with nothing sent.
    engine = database.open_engine(readers.database.url)
    try:
        with pytest.raises(RuntimeError), database.transaction(engine) as session:
            ledger.create_edition(session, "daily", local(2026, 6, 1, 7), local(2026, 6, 2, 7), local(2026, 6, 2, 7))
            with database.transaction(engine) as other:
                assert ledger.last_edition(other, "daily") is None  # not visible before the outer commit
            raise RuntimeError("queueing failed")
        with database.transaction(engine) as session:
            assert ledger.last_edition(session, "daily") is None  # rolled back with the rest
            first, created = ledger.create_edition(session, "daily", local(2026, 6, 1, 7), local(2026, 6, 2, 7),
                                                   local(2026, 6, 2, 7))  # fmt: skip
            again, created_again = ledger.create_edition(session, "daily", local(2026, 6, 1, 7), local(2026, 6, 2, 7),
                                                         local(2026, 6, 2, 8))  # fmt: skip
        assert created and not created_again and first == again
    finally:
        engine.dispose()


def test_run_refuses_to_start_without_a_signing_key(
    readers: Settings, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("SYNDICATION_SECRET_KEY", raising=False)
    config = readers.config_path
    assert config is not None
    assert main(["--config", str(config), "run", "--no-web"]) == 2  # at once: no scheduler, no lock taken
    assert "no signing key: set SYNDICATION_SECRET_KEY" in capsys.readouterr().err
