"""Retention and backups (issue 20): ``prune`` removes the old finished deliveries and their attempts, keeps the
recent and the open ones, and a re-run of a pruned edition sends nothing again; ``backup`` copies a running
SQLite store, and the copy opened as the store holds the same rows.

SQLite and PostgreSQL (``database_url``; backups on SQLite only), a real SMTP server, the CLI through ``main``.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select, text

from syndication.app.bounces import list_inbound, process_message
from syndication.app.editions import deliver, plan_edition
from syndication.app.maintenance import prune
from syndication.app.service import Service
from syndication.app.status import status_report
from syndication.app.subscribers import add_subscriber
from syndication.cli import main
from syndication.clock import fixed_clock
from syndication.config import load_settings
from syndication.core.models import EditionStatus
from syndication.scheduling.runner import Runner
from syndication.store import database, ledger
from syndication.store.schema import DeliveryAttemptRow, DeliveryRow, EditionRow, PostRow, SubscriberRow
from tests.smtp_server import SmtpTestServer, smtp_server
from tests.support import NOW, post_record, write_config
from tests.test_delivery import sending
from tests.test_late_posts import FIRST, SECOND, THIRD, WEEK, add_posts, at, send

# The default [retention]: deliveries 180 days, inbound bytes 90. At LATER the first week's edition (ended NOW)
# is past 180 days; the second's (ended NOW + 7 days) is not.
LATER = NOW + timedelta(days=183)
NOT_A_BOUNCE = b"From: someone@example.net\r\nTo: bounces@news.example.org\r\nSubject: hello\r\n\r\nJust saying hi.\r\n"


@pytest.fixture
def server() -> Iterator[SmtpTestServer]:
    with smtp_server() as running:
        yield running


@pytest.fixture
def history(service: Service, server: SmtpTestServer, tmp_path: Path) -> dict[str, int]:
    """Two weekly readers; the first and second weeks' editions sent through ``server``, the third's a draft
    (its deliveries queued, open); an unrecognised message received at NOW. Returns the editions' ids."""
    for address in ("ana@example.org", "kita@example.org"):
        add_subscriber(service, address, name="", themes=[], cadence="weekly", language="en", confirmed=True)
    ids = {}
    for name, (window, number, published) in {
        "first": (FIRST, 1, "2024-05-28T10:00:00Z"),
        "second": (SECOND, 2, "2024-06-03T10:00:00Z"),
        "third": (THIRD, 3, "2024-06-10T10:00:00Z"),
    }.items():
        made_at = at(service, window[1] + timedelta(minutes=1))
        add_posts(made_at, tmp_path, post_record(number, themes=["climate-action"], published=published))
        if name == "third":
            plan = plan_edition(sending(made_at, server, clock=made_at.clock()), "weekly", *window, draft=True)
        else:
            plan = send(made_at, server, window)
        assert plan.edition is not None and plan.queued == 2
        ids[name] = plan.edition.id
    assert server.accepted == 4
    process_message(at(service, NOW), NOT_A_BOUNCE)
    assert [message.raw_bytes > 0 for message in list_inbound(service)] == [True]
    return ids


def deliveries_of(service: Service) -> dict[int, int]:
    """How many deliveries each edition has."""
    with database.transaction(service.engine) as session:
        query = select(DeliveryRow.edition_id, func.count()).group_by(DeliveryRow.edition_id)
        return dict(session.execute(query).all())


def attempts(service: Service) -> int:
    """How many delivery attempts are recorded."""
    with database.transaction(service.engine) as session:
        return session.scalar(select(func.count()).select_from(DeliveryAttemptRow)) or 0


def test_prune_removes_old_finished_deliveries_keeps_recent_and_open_ones_and_a_rerun_sends_nothing(
    service: Service, server: SmtpTestServer, history: dict[str, int]
) -> None:
    first, second, third = history["first"], history["second"], history["third"]
    before = {first: 2, second: 2, third: 2}
    assert deliveries_of(service) == before and attempts(service) == 4

    dry = prune(at(service, LATER), dry_run=True)
    assert (dry.editions, dry.deliveries, dry.attempts, dry.inbound_bytes) == (1, 2, 2, 1)
    assert deliveries_of(service) == before and attempts(service) == 4  # a dry run removes nothing
    assert [message.raw_bytes > 0 for message in list_inbound(service)] == [True]

    done = prune(at(service, LATER))
    assert (done.editions, done.deliveries, done.attempts, done.inbound_bytes) == (1, 2, 2, 1)
    assert deliveries_of(service) == {second: 2, third: 2}  # the recent sent one, and the draft's open ones
    assert attempts(service) == 2
    with database.transaction(service.engine) as session:
        first_edition = ledger.edition(session, first)
        assert first_edition is not None and first_edition.status == EditionStatus.SENT  # the edition stays
        assert ledger.progress(session, third) == {"queued": 2}
    (received,) = list_inbound(service)
    assert received.raw_bytes == 0  # its record stays, its bytes are gone
    process_message(at(service, LATER), NOT_A_BOUNCE)  # the same message again changes nothing
    assert len(list_inbound(service)) == 1

    # Exactly once: the pruned edition run again (a late scheduler, `digest send` for its window) queues nobody.
    rerun = send(at(service, LATER), server, FIRST)
    assert rerun.edition is not None and rerun.edition.id == first and not rerun.created
    assert rerun.queued == 0 and rerun.edition.status == EditionStatus.SENT
    deliver(sending(service, server, clock=LATER))
    assert server.accepted == 4
    assert deliveries_of(service) == {second: 2, third: 2}

    again = prune(at(service, LATER))
    assert (again.deliveries, again.attempts, again.inbound_bytes) == (0, 0, 0)


def test_an_edition_retried_recently_or_with_open_deliveries_is_kept(service: Service, history: dict[str, int]) -> None:
    first, second = history["first"], history["second"]
    with database.transaction(service.engine) as session:  # an attempt recorded recently (an operator's retry)
        delivery_id = session.scalar(select(DeliveryRow.id).where(DeliveryRow.edition_id == first).limit(1))
        session.add(DeliveryAttemptRow(delivery_id=delivery_id, at=LATER - timedelta(days=1), outcome="sent"))
        # A sent edition still holding an open delivery (stranded): a re-run sends it, so all of it is kept.
        stranded = session.scalar(select(func.min(DeliveryRow.id)).where(DeliveryRow.edition_id == second))
        session.execute(text("UPDATE deliveries SET status = 'queued' WHERE id = :d"), {"d": stranded})
    report = prune(at(service, LATER + 2 * WEEK))  # both windows are past retention
    assert report.deliveries == 0 and deliveries_of(service)[first] == 2 and deliveries_of(service)[second] == 2


def test_the_command_prunes_and_its_dry_run_removes_nothing(
    service: Service, history: dict[str, int], config_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The command runs at the real time, long after 2024: both sent editions are past retention; the draft is not
    # finished, so its open deliveries stay.
    assert main(["--config", str(config_path), "prune", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "deliveries: would remove 4 (of 2 finished editions" in out
    assert "delivery_attempts: would remove 4" in out and "inbound_messages: would remove" in out
    assert deliveries_of(service) == {history["first"]: 2, history["second"]: 2, history["third"]: 2}

    assert main(["--config", str(config_path), "prune"]) == 0
    out = capsys.readouterr().out
    assert "deliveries: removed 4" in out and "delivery_attempts: removed 4" in out
    assert deliveries_of(service) == {history["third"]: 2} and attempts(service) == 0


def test_the_scheduler_prunes_daily_when_retention_is_on(service: Service, history: dict[str, int]) -> None:
    runner = Runner(service.settings, clock=fixed_clock(LATER), name="prune-test")
    try:
        specs = {spec.id: spec for spec in runner._leader_jobs()}
        assert specs["prune"].trigger.interval == timedelta(days=1)
        runner.prune()
    finally:
        runner.shutdown()
    assert history["first"] not in deliveries_of(service)
    (job,) = [job for job in status_report(service).jobs if job.job_id == "prune"]
    assert job.last is not None and job.last.ok
    assert job.last.summary.startswith("2 deliveries and 2 attempts of 1 editions removed")
    keep_all = service.settings.retention.model_copy(
        update={"deliveries_days": 0, "inbound_raw_days": 0, "audit_days": 0, "webhooks_days": 0}
    )
    runner = Runner(service.settings.model_copy(update={"retention": keep_all}), clock=fixed_clock(LATER))
    try:
        assert "prune" not in {spec.id for spec in runner._leader_jobs()}
    finally:
        runner.shutdown()


def counts(service: Service) -> dict[str, int]:
    """Rows of the tables a restore must bring back."""
    with database.transaction(service.engine) as session:
        return {
            row.__tablename__: session.scalar(select(func.count()).select_from(row)) or 0
            for row in (SubscriberRow, EditionRow, PostRow, DeliveryRow, DeliveryAttemptRow)
        }


def sample(service: Service) -> list[tuple[object, ...]]:
    """A few rows, as they are stored."""
    with database.transaction(service.engine) as session:
        return [
            *session.execute(select(SubscriberRow.email, SubscriberRow.status).order_by(SubscriberRow.id)),
            *session.execute(select(EditionRow.id, EditionRow.status, EditionRow.until).order_by(EditionRow.id)),
            *session.execute(select(PostRow.guid, PostRow.title).order_by(PostRow.id)),
            *session.execute(select(DeliveryRow.message_id, DeliveryRow.status).order_by(DeliveryRow.id)),
        ]


def test_backup_then_restore_gives_the_same_store(
    service: Service, history: dict[str, int], config_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "backup" / "store.db"
    target.parent.mkdir()
    if service.engine.dialect.name != "sqlite":
        assert main(["--config", str(config_path), "backup", str(target)]) == 1
        error = capsys.readouterr().err
        assert "pg_dump --format=custom" in error and "postgresql://" in error and "+psycopg" not in error
        assert not target.exists()
        return
    expected, rows = counts(service), sample(service)
    assert expected["deliveries"] == 6 and len(rows) == 2 + 3 + 3 + 6
    # Taken while a connection holds the store open with a write in progress: the copy is the committed state.
    with service.engine.connect() as busy:
        busy.execute(text("UPDATE posts SET title = 'not committed'"))
        assert main(["--config", str(config_path), "backup", str(target)]) == 0
        busy.rollback()
    assert f"backed up to {target}" in capsys.readouterr().out
    assert main(["--config", str(config_path), "backup", str(target)]) == 1  # never overwritten unasked
    assert "--force" in capsys.readouterr().err
    assert main(["--config", str(config_path), "backup", "--force", str(target)]) == 0
    assert [path.name for path in target.parent.iterdir()] == ["store.db"]  # no partial file left

    # Restore: with the service stopped, copy the file into place and run `init` (a no-op at the same schema).
    service.engine.dispose()
    restored_dir = tmp_path / "restored"
    restored_dir.mkdir()
    shutil.copyfile(target, restored_dir / "store.db")
    restored_config = write_config(restored_dir, f"sqlite:///{restored_dir / 'store.db'}")
    assert main(["--config", str(restored_config), "init"]) == 0
    with Service.open(load_settings(restored_config, environ={})) as restored:
        assert counts(restored) == expected
        assert sample(restored) == rows
