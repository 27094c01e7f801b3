"""Issue #16: the delivery ledger under the faults real operation brings, on SQLite and PostgreSQL.

A sender killed (SIGKILL) or stopped (SIGTERM) at random points, again and again, during a 2,000-reader edition and
then run until done: every reader gets it, at most the messages in flight at each SIGKILL go twice, none after a
SIGTERM, and no delivery is set aside as poisoned for a crash it was never being sent in. Three senders whose
leases are shorter than their batches, behind a slow relay: nothing twice. A relay slower than the timeout: each
reader gets at most ``1 + ambiguous_retries`` copies, then the delivery is ``unknown`` (or the edition paused with
the reason), and ``editions retry`` re-queues it once, with the same Message-ID.

The kills use the real command line (``python -m syndication deliver``) in subprocesses against a discarding SMTP
sink, at points drawn from a fixed seed.
"""

from __future__ import annotations

import random
import signal
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, select

from syndication.app.editions import change_edition, deliver, edition_report, plan_edition, retry_deliveries
from syndication.app.service import Service
from syndication.app.subscribers import add_subscriber
from syndication.cli import main
from syndication.cli.output import print_drain
from syndication.clock import fixed_clock
from syndication.core.editions import EditionAction
from syndication.core.models import DeliveryStatus, EditionStatus
from syndication.delivery.sender import DrainReport
from syndication.store import database, ledger
from syndication.store.schema import DeliveryRow, EditionRow
from tests.smtp_server import SmtpTestServer, smtp_server
from tests.test_delivery import SINCE, UNTIL, audience, sending  # noqa: F401  (audience: a fixture)
from tests.test_delivery_crash import deliver_process, prepared_store

pytestmark = pytest.mark.slow

READERS = 2000
CONNECTIONS = 2
LEASE_SECONDS = 2


def _rows(database_url: str) -> list[tuple[str, int, int]]:
    """Every delivery's status, attempts and crashes."""
    engine = create_engine(database_url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(select(DeliveryRow.status, DeliveryRow.attempts, DeliveryRow.crashes)).all()
            return [(status, attempts, crashes) for status, attempts, crashes in rows]
    finally:
        engine.dispose()


def _edition_status(database_url: str) -> tuple[str, str]:
    engine = create_engine(database_url)
    try:
        with engine.connect() as connection:
            status, reason = connection.execute(select(EditionRow.status, EditionRow.status_reason)).one()
            return status, reason or ""
    finally:
        engine.dispose()


def _interrupt(config: Path, server: SmtpTestServer, seed: int, signals: list[signal.Signals]) -> list[str]:
    """Start ``deliver`` and stop it with each of ``signals`` in turn, at a random point after it began to send;
    returns what each stopped run printed. Each signal lands mid-send: the run neither ended first nor sent all."""
    chance = random.Random(seed)
    printed = []
    for number in signals:
        before = server.accepted
        process = deliver_process(config)
        started = time.monotonic()
        while server.accepted == before and process.poll() is None and time.monotonic() - started < 20:
            time.sleep(0.01)  # until it sends: the process's start-up is not what is tested
        time.sleep(chance.uniform(0.05, 0.6))
        process.send_signal(number)
        out, err = process.communicate(timeout=60)
        expected = -signal.SIGKILL if number == signal.SIGKILL else 143
        assert process.returncode == expected, err.decode()
        assert before < server.accepted < READERS
        if number == signal.SIGTERM:  # stopped cleanly: it says what it did, and what it handed back
            assert b"delivered: " in out and b"syndication: terminated" in err, (out, err)
        printed.append(out.decode())
    return printed


def _finish(config: Path, database_url: str) -> None:
    """Run ``deliver`` uninterrupted until the edition is sent (a dead sender's rows wait out its lease)."""
    for _ in range(20):
        process = deliver_process(config)
        _, err = process.communicate(timeout=180)
        assert process.returncode in (0, 1), err.decode()
        if _edition_status(database_url)[0] == EditionStatus.SENT:
            return
        time.sleep(LEASE_SECONDS + 0.2)
    raise AssertionError("the edition never finished")


@pytest.mark.parametrize("mode", ["kill-and-term", "term-only"])
def test_a_sender_killed_and_stopped_at_random_points_loses_nothing(
    tmp_path: Path, database_url: str, mode: str
) -> None:
    delivery = f"connections = {CONNECTIONS}\nlease_seconds = {LEASE_SECONDS}\nbatch_size = 50\n"
    kill_and_term = [signal.SIGKILL, signal.SIGTERM] * 3
    signals = kill_and_term if mode == "kill-and-term" else [signal.SIGTERM] * 5
    with smtp_server(discard=True) as server:
        config = prepared_store(tmp_path, database_url, server, READERS, delivery=delivery)
        printed = _interrupt(config, server, seed=16, signals=signals)
        if mode == "term-only":
            # A stopped sender hands back everything it has not tried at once: nothing waits out a lease.
            assert not [row for row in _rows(database_url) if row[0] == DeliveryStatus.CLAIMED]
            assert any("handed back unsent" in out for out in printed)
        _finish(config, database_url)
        copies = server.copies
    assert set(copies) == {f"reader{n}@example.org" for n in range(READERS)}  # everyone got it
    duplicates = sum(count - 1 for count in copies.values())
    kills = signals.count(signal.SIGKILL)
    assert duplicates <= kills * CONNECTIONS, f"{duplicates} copies; at most those in flight at {kills} kills"
    rows = _rows(database_url)
    assert not [row for row in rows if row[0] == DeliveryStatus.POISONED and row[1] == 0 and row[2] == 0]
    assert not [row for row in rows if row[0] == DeliveryStatus.POISONED]
    assert {row[0] for row in rows} == {DeliveryStatus.SENT}
    if mode == "term-only":
        assert duplicates == 0
        assert all(crashes == 0 for _, _, crashes in rows)  # nobody's crash: every stop was clean
    assert _edition_status(database_url) == (EditionStatus.SENT, "")


def test_three_senders_with_leases_shorter_than_their_batches_send_nothing_twice(
    tmp_path: Path, database_url: str
) -> None:
    if not database_url.startswith("postgresql"):
        pytest.skip("several senders at once need PostgreSQL (SQLite runs one sender)")
    total = 240
    # Each batch of 20 takes 2 s over 2 connections (0.2 s per reply): twice the lease, renewed as it goes.
    delivery = "connections = 2\nlease_seconds = 1\nbatch_size = 20\n"
    with smtp_server(discard=True, data_delay=0.2) as server:
        config = prepared_store(tmp_path, database_url, server, total, delivery=delivery)
        senders = [deliver_process(config) for _ in range(3)]
        outputs = [sender.communicate(timeout=120) for sender in senders]
        assert all(sender.returncode == 0 for sender in senders), [err.decode() for _, err in outputs]
        copies = server.copies
    assert len(copies) == total
    assert max(copies.values()) == 1, [address for address, count in copies.items() if count > 1]
    shares = [int(out.decode().split(" sent")[0].rsplit(" ", 1)[-1]) for out, _ in outputs]
    assert sum(shares) == total and all(share > 0 for share in shares)  # the work really was shared
    assert _edition_status(database_url) == (EditionStatus.SENT, "")


def test_a_sender_that_stopped_renewing_loses_its_claims_without_sending_them_twice(
    audience: Service,  # noqa: F811
) -> None:
    """No heartbeat (as when a sender hangs): its rows are claimed by another sender once the lease runs out; the
    late sender neither sends those nor records over them, and counts the lost leases."""
    if audience.engine.dialect.name != "postgresql":
        pytest.skip("two senders at once need PostgreSQL")
    from syndication.app.editions import open_sender
    from syndication.delivery import sender as sender_module

    for number in range(20):
        add_subscriber(audience, f"extra{number}@example.org", cadence="weekly", confirmed=True)
    with smtp_server(discard=True, data_delay=0.25) as server:
        base = sending(audience, server, lease_seconds=1, batch_size=12, connections=1)
        real = Service(base.settings, base.engine, lambda: datetime.now(UTC))
        plan_edition(real, "weekly", SINCE, UNTIL)
        hung, other = open_sender(real, owner="hung"), open_sender(real, owner="other")
        original = sender_module._Heartbeat.start
        reports: dict[str, DrainReport] = {}
        try:
            sender_module._Heartbeat.start = lambda self: None  # type: ignore[method-assign]
            first = threading.Thread(target=lambda: reports.__setitem__("hung", deliver(real, sender=hung)))
            first.start()
            time.sleep(1.5)  # the hung sender's lease ran out after its first messages
            sender_module._Heartbeat.start = original  # type: ignore[method-assign]
            reports["other"] = deliver(real, sender=other)
            first.join(timeout=60)
        finally:
            sender_module._Heartbeat.start = original  # type: ignore[method-assign]
        copies = server.copies
    assert len(copies) == 23 and max(copies.values()) == 1
    assert reports["hung"].lost_leases > 0
    assert reports["hung"].sent + reports["other"].sent == 23


def _slow(service: Service, server: SmtpTestServer, moment: timedelta = timedelta(0), **delivery: Any) -> Service:
    base = sending(service, server, **delivery)
    smtp = base.settings.smtp.model_copy(update={"timeout_seconds": 0.4})
    return Service(base.settings.model_copy(update={"smtp": smtp}), base.engine, fixed_clock(UNTIL + moment))


def test_a_relay_slower_than_the_timeout_for_some_readers_sends_each_at_most_twice(
    audience: Service,  # noqa: F811
    capsys: pytest.CaptureFixture[str],
) -> None:
    slow_ones = ("bo@example.org", "kita@example.jp")
    with smtp_server(data_delay=1.0, delay_for=slow_ones) as server:
        service = _slow(audience, server, connections=1)
        plan = plan_edition(service, "weekly", SINCE, UNTIL)
        assert plan.edition is not None
        first = deliver(service)
        assert (first.sent, first.deferred, first.unknown) == (1, 2, 0)
        assert deliver(service).handled == 0  # not due yet
        second = deliver(_slow(audience, server, timedelta(seconds=61), connections=1))
        assert (second.sent, second.deferred, second.unknown) == (0, 0, 2)
        assert deliver(_slow(audience, server, timedelta(seconds=600), connections=1)).handled == 0
        assert all(server.copies[address] == 2 for address in slow_ones)  # 1 + ambiguous_retries (1)
        report = edition_report(service, plan.edition.id, with_problems=True)
        assert report.edition.status == EditionStatus.SENT and report.edition.reason == "2 unknown"
        assert {problem.status for problem in report.problems} == {DeliveryStatus.UNKNOWN}
        assert all("not resent" in problem.detail for problem in report.problems)
        first_ids = {address: server.received_for(address)[0].parsed()["Message-ID"] for address in slow_ones}
        # An operator who mended the relay re-queues them, once, with the same Message-ID.
        assert audience.settings.config_path is not None
        config = str(audience.settings.config_path)
        assert main(["--config", config, "editions", "retry", str(plan.edition.id)]) == 2
        assert main(["--config", config, "editions", "retry", str(plan.edition.id), "--unknown"]) == 0
        out = capsys.readouterr().out
        assert "2 deliveries re-queued (2 unknown)" in out and "sent -> sending" in out
        assert main(["--config", config, "editions", "retry", str(plan.edition.id), "--unknown"]) == 0
        assert "0 deliveries re-queued" in capsys.readouterr().out
        server.behaviour.delay_for, server.behaviour.data_delay = (), 0.0
        since_now = datetime.now(UTC) - UNTIL + timedelta(seconds=1)  # the command line re-queued them at "now"
        assert deliver(_slow(audience, server, since_now, connections=1)).sent == 2
        for address in slow_ones:
            assert server.received_for(address)[-1].parsed()["Message-ID"] == first_ids[address]
        report = edition_report(service, plan.edition.id)
        assert report.edition.status == EditionStatus.SENT and report.edition.reason == ""


def test_a_relay_slower_than_the_timeout_for_everyone_pauses_the_edition(audience: Service) -> None:  # noqa: F811
    for number in range(6):
        add_subscriber(audience, f"more{number}@example.org", cadence="weekly", confirmed=True)
    with smtp_server(data_delay=1.0) as server:
        service = _slow(audience, server, connections=1)
        plan = plan_edition(service, "weekly", SINCE, UNTIL)
        assert plan.edition is not None and plan.queued == 9
        report = deliver(service)
        assert (report.deferred, report.sent) == (3, 0) and server.accepted == 3  # then it stopped sending
        reason = report.paused_editions[plan.edition.id]
        assert "did not answer within timeout_seconds (0.4 s) after 3 messages in a row" in reason
        edition = edition_report(service, plan.edition.id).edition
        assert edition.status == EditionStatus.PAUSED and edition.reason == reason
        change_edition(service, plan.edition.id, EditionAction.RESUME, actor="cli:tester")
        again = deliver(_slow(audience, server, timedelta(seconds=61), connections=1))
        assert again.unknown == 3 and plan.edition.id in again.paused_editions  # still slow: paused again
        assert max(server.copies.values()) == 2  # 1 + ambiguous_retries, never more
        counts = edition_report(service, plan.edition.id).deliveries
        assert counts == {DeliveryStatus.UNKNOWN: 3, DeliveryStatus.QUEUED: 6}


def test_retrying_refuses_what_cannot_be_retried(audience: Service) -> None:  # noqa: F811
    from syndication.app.editions import NoSuchEdition
    from syndication.core.editions import EditionRefused
    from syndication.errors import SyndicationError

    with smtp_server() as server:
        service = sending(audience, server)
        plan = plan_edition(service, "weekly", SINCE, UNTIL)
        assert plan.edition is not None
        with pytest.raises(NoSuchEdition):
            retry_deliveries(service, 99, [DeliveryStatus.POISONED], actor="cli:tester")
        with pytest.raises(SyndicationError, match="cannot retry deliveries that are sent"):
            retry_deliveries(service, plan.edition.id, [DeliveryStatus.SENT], actor="cli:tester")
        change_edition(service, plan.edition.id, EditionAction.CANCEL, actor="cli:tester")
        with pytest.raises(EditionRefused, match="cancelled"):
            retry_deliveries(service, plan.edition.id, [DeliveryStatus.POISONED], actor="cli:tester")


def test_a_poisoned_delivery_is_retried_once_and_the_edition_says_what_was_given_up(audience: Service) -> None:  # noqa: F811
    with smtp_server() as server:
        service = sending(audience, server, max_crashes=1)
        plan = plan_edition(service, "weekly", SINCE, UNTIL)
        assert plan.edition is not None
        lease = timedelta(seconds=60)
        with database.transaction(service.engine) as session:  # a sender dies sending one and holding another
            claims, _ = ledger.claim(session, "dead", UNTIL, lease=lease, limit=2, max_crashes=1)
            ledger.begin_attempt(session, claims[0], "dead", UNTIL, lease=lease)
        later = sending(audience, server, UNTIL + timedelta(seconds=61), max_crashes=1)
        report = deliver(later)
        assert (report.poisoned, report.sent) == (1, 2)  # the one merely held was sent, not poisoned
        edition = edition_report(service, plan.edition.id).edition
        assert edition.status == EditionStatus.SENT and edition.reason == "1 poisoned"
        moved = retry_deliveries(
            later, plan.edition.id, [DeliveryStatus.POISONED, DeliveryStatus.UNKNOWN], actor="cli:tester"
        )
        assert moved.requeued == {DeliveryStatus.POISONED: 1} and moved.status == EditionStatus.SENDING
        assert deliver(later).sent == 1
        assert server.accepted == 3 and max(server.copies.values()) == 1
        assert edition_report(service, plan.edition.id).edition.reason == ""


def test_the_summary_line_names_lost_leases_unknown_and_handed_back(capsys: pytest.CaptureFixture[str]) -> None:
    report = DrainReport(sent=5, unknown=1, lost_leases=2, released=7)
    assert print_drain(report) == 1  # an unknown outcome is worth a look
    out = capsys.readouterr().out
    assert "1 unknown" in out and "2 leases lost to another sender" in out and "7 handed back unsent" in out
    assert print_drain(DrainReport(sent=3)) == 0
    out = capsys.readouterr().out
    assert "lost" not in out and "unknown" not in out and "handed back" not in out
