"""``syndication run``: gather, publish feeds, create editions and drain the delivery queue on schedule.

Every process drains the shared delivery queue. Exactly one process at a time, the leader, schedules the rest
(gathering, feed rebuilds, edition creation) from APScheduler's SQLAlchemy job store in the service's own
database: APScheduler's FAQ forbids sharing a job store between schedulers. On PostgreSQL the leader holds an
advisory lock on a connection of its own for its whole life; when it dies the lock goes with its connection and
a waiting process takes over within ``[schedule] leader_poll_seconds``. SQLite is for one process: a file lock
beside the database keeps a second ``run`` from scheduling too.

APScheduler 3's defaults are wrong here, so every job is coalesced, runs one instance at a time and keeps
``misfire_grace_seconds`` of grace (its default of one second would silently skip a digest delayed a second).
An edition's window comes from the schedule (``syndication.scheduling.cadences``), never from the clock at run time, and
the store's unique window makes creating it twice impossible, whoever tries.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any, Protocol
from zoneinfo import ZoneInfo

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.jobstores.memory import MemoryJobStore
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.interval import IntervalTrigger
from sqlalchemy import Connection, Engine, inspect, text
from sqlalchemy.engine import make_url

from syndication.app.editions import deliver, notify_editors, plan_edition
from syndication.app.gathering import gather
from syndication.app.publishing import publish_feeds
from syndication.app.service import Service
from syndication.clock import Clock, system_clock
from syndication.config import Settings
from syndication.delivery.sender import Sender, SenderBusy, TransportFactory
from syndication.errors import SyndicationError
from syndication.scheduling.cadences import due_windows, next_fire, parse_crontab
from syndication.store import database, job_runs, ledger

log = logging.getLogger("syndication.scheduler")

JOBSTORE_TABLE = "scheduler_jobs"
# The advisory lock only the scheduling process holds: "syndic" read as a number, unlikely to meet another app's.
LEADER_LOCK_KEY = 0x73796E646963
LEADER = "leader"

# APScheduler's stored jobs name module-level functions; those find the process's runner here.
_current: Runner | None = None


def run_gather(source: str) -> None:
    """Job: pull one source, and rebuild the feeds when it stored something."""
    _runner().gather(source)


def run_feeds() -> None:
    """Job: the safety-net feed rebuild."""
    _runner().feeds()


def run_edition(cadence: str) -> None:
    """Job: create the editions of ``cadence`` that are due."""
    _runner().editions(cadence)


def run_deliveries() -> None:
    """Job: drain the delivery queue."""
    _runner().deliveries()


def _runner() -> Runner:
    if _current is None:
        raise RuntimeError("no scheduler runs in this process")
    return _current


class Leadership(Protocol):
    """Who schedules: at most one holder at a time."""

    def try_acquire(self) -> bool: ...

    def holds(self) -> bool: ...

    def release(self) -> None: ...


class AdvisoryLock:
    """PostgreSQL: a session advisory lock on a dedicated connection, held for the leader's life."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._connection: Connection | None = None

    def try_acquire(self) -> bool:
        connection = self.engine.connect()
        try:
            got = bool(connection.scalar(text("SELECT pg_try_advisory_lock(:key)"), {"key": LEADER_LOCK_KEY}))
            connection.commit()
        except Exception:
            connection.close()
            raise
        if not got:
            connection.close()
            return False
        self._connection = connection
        return True

    def holds(self) -> bool:
        # The lock lives as long as its connection: a connection that no longer answers has lost it.
        if self._connection is None:
            return False
        try:
            self._connection.scalar(text("SELECT 1"))
            self._connection.commit()
        except Exception:  # any failure means the lock may be gone: stop scheduling, a poll may win it back
            log.exception("the scheduler's lock connection failed")
            self._discard()
            return False
        return True

    def release(self) -> None:
        if self._connection is None:
            return
        with contextlib.suppress(Exception):  # closing the connection releases the lock anyway
            self._connection.scalar(text("SELECT pg_advisory_unlock(:key)"), {"key": LEADER_LOCK_KEY})
            self._connection.commit()
        self._discard()

    def _discard(self) -> None:
        if self._connection is not None:
            with contextlib.suppress(Exception):
                self._connection.close()
            self._connection = None


class FileLock:
    """SQLite: an exclusive lock on a file beside the database, released when the process ends."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: IO[bytes] | None = None

    def try_acquire(self) -> bool:
        handle = self.path.open("ab")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            return False
        self._file = handle
        return True

    def holds(self) -> bool:
        return self._file is not None

    def release(self) -> None:
        if self._file is not None:
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None


def leadership_for(engine: Engine) -> Leadership:
    """The leader election that fits the store: an advisory lock on PostgreSQL, a file lock on SQLite."""
    if engine.dialect.name == "postgresql":
        return AdvisoryLock(engine)
    database_path = make_url(str(engine.url)).database or "memory"
    return FileLock(Path(f"{database_path}.scheduler.lock"))


@dataclass(frozen=True)
class _JobSpec:
    id: str
    func: Callable[..., None]
    trigger: BaseTrigger
    args: tuple[str, ...] = ()
    run_at_start: bool = False


class Runner:
    """One ``syndication run`` process: drains the queue always, schedules the other jobs while it leads."""

    def __init__(
        self,
        settings: Settings,
        transport: TransportFactory,
        *,
        clock: Clock = system_clock,
        name: str | None = None,
        leadership: Leadership | None = None,
    ) -> None:
        self.settings = settings
        self.service = Service.open(settings, clock)
        self.clock = clock
        self.name = name or f"{socket.gethostname()}:{os.getpid()}"
        self.transport = transport
        self.stop = threading.Event()  # set it (SIGTERM) to stop after the work in flight
        self.sender = Sender(settings, self.service.engine, clock, transport, owner=self.name)
        self.leadership = leadership or leadership_for(self.service.engine)
        self.leading = False
        self.zone = ZoneInfo(settings.site.timezone)
        self._feeds_lock = threading.Lock()  # a gather's rebuild and the safety net never build at once
        self._store_engine: Engine | None = None
        self._source_locks: dict[str, threading.Lock] = {}
        grace = settings.schedule.misfire_grace_seconds
        self.scheduler = BackgroundScheduler(
            timezone=self.zone,
            jobstores={"local": MemoryJobStore()},
            executors={"default": ThreadPoolExecutor(4)},
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": grace},
        )

    # --- Life cycle -----------------------------------------------------------------------------------------

    def start(self) -> None:
        """Start draining the queue; call ``poll_leadership`` to take part in scheduling."""
        global _current
        _current = self
        self.scheduler.start()
        every = IntervalTrigger(seconds=self.settings.schedule.deliver_interval_seconds, timezone=self.zone)
        self.scheduler.add_job(run_deliveries, every, id="deliver", jobstore="local", next_run_time=self._now())

    def poll_leadership(self) -> bool:
        """Become the leader if nobody is, notice if this process stopped being one; True while leading."""
        if self.leading and not self.leadership.holds():
            log.error("lost the scheduler lock: this process stops scheduling", extra={"event": "leader-lost"})
            self._stop_leading()
        elif not self.leading and not self.stop.is_set() and self.leadership.try_acquire():
            self._start_leading()
        return self.leading

    def run_until_stopped(self) -> None:
        """Run until ``stop`` is set, then finish or release the work in flight and let go of the lock."""
        self.start()
        try:
            while not self.stop.is_set():
                self.poll_leadership()
                self.stop.wait(self.settings.schedule.leader_poll_seconds)
        finally:
            self.shutdown()

    def shutdown(self) -> None:
        """Stop: the sender finishes the messages in flight and releases the rest of its claim."""
        global _current
        self.stop.set()
        self.sender.stop.set()
        if self.scheduler.running:
            self.scheduler.shutdown(wait=True)
        self._dispose_store_engine()
        if self.leading:
            self.leading = False
            self.leadership.release()
        self.service.close()
        if _current is self:
            _current = None
        log.info("stopped", extra={"event": "stopped", "runner": self.name})

    def wake_deliveries(self) -> None:
        """Drain the queue now rather than at the next interval (an edition was just queued)."""
        with contextlib.suppress(Exception):  # the scheduler may be shutting down; the interval will do it
            self.scheduler.modify_job("deliver", jobstore="local", next_run_time=self._now())

    def _now(self) -> datetime:
        return self.clock().astimezone(self.zone)

    # --- Leadership -----------------------------------------------------------------------------------------

    def _start_leading(self) -> None:
        self.leading = True
        with database.transaction(self.service.engine) as session:
            now = self.clock()
            job_runs.started(session, LEADER, now, self.name)
            job_runs.finished(session, LEADER, now, True, f"{self.name} schedules")
        log.info("this process is now the scheduler", extra={"event": "leader", "runner": self.name})
        # An engine of its own: the store disposes of its engine when it shuts down, which would orphan the
        # connections this process still holds (the advisory lock's among them).
        self._store_engine = database.open_engine(self.settings.database.url)
        store = SQLAlchemyJobStore(engine=self._store_engine, tablename=JOBSTORE_TABLE)
        # Stored jobs whose time passed while no process scheduled run now, once (coalesced), if within grace.
        self.scheduler.add_jobstore(store, "shared")
        wanted = self._leader_jobs()
        for spec in wanted:
            existing = self.scheduler.get_job(spec.id, jobstore="shared")
            timing: dict[str, Any] = {}
            if existing is not None and repr(existing.trigger) == repr(spec.trigger):
                # Keep the stored next run time: replacing the job would move a missed 07:00 to tomorrow.
                timing["next_run_time"] = existing.next_run_time
                if spec.func is run_edition and self._due_windows(spec.args[0], self.clock()):
                    # APScheduler stores the next fire time as it starts a run: a leader that died during the
                    # run left tomorrow's time stored and today's edition unmade. Make it now (within grace).
                    timing["next_run_time"] = self._now()
            elif spec.run_at_start:
                # Gathering and feeds at once; an edition job that is new (or whose crontab changed) too, so
                # that an edition due within the grace time is not missed: it works out which windows are due.
                timing["next_run_time"] = self._now()
            self.scheduler.add_job(spec.func, spec.trigger, args=spec.args, id=spec.id, name=spec.id,
                                   jobstore="shared", replace_existing=True, **timing)  # fmt: skip
        for job in self.scheduler.get_jobs(jobstore="shared"):
            if job.id not in {spec.id for spec in wanted}:
                job.remove()  # a source or cadence no longer configured

    def _due_windows(self, cadence: str, now: datetime) -> list[tuple[datetime, datetime]]:
        """The windows of ``cadence`` whose edition is due at ``now``: fire times within grace with no edition."""
        trigger = parse_crontab(self.settings.schedule.cadences[cadence], self.settings.site.timezone)
        grace = timedelta(seconds=self.settings.schedule.misfire_grace_seconds)
        with database.transaction(self.service.engine) as session:
            last = ledger.last_edition(session, cadence)
        return due_windows(trigger, now, grace, last.until if last else None)

    def _stop_leading(self) -> None:
        self.leading = False
        with contextlib.suppress(KeyError):
            self.scheduler.remove_jobstore("shared", shutdown=True)
        self._dispose_store_engine()
        self.leadership.release()

    def _dispose_store_engine(self) -> None:
        # Again after the store's own dispose: the scheduler's thread may have returned a connection since.
        if self._store_engine is not None:
            self._store_engine.dispose()
            self._store_engine = None

    def _leader_jobs(self) -> list[_JobSpec]:
        schedule = self.settings.schedule
        specs = []
        for source in self.settings.sources:
            every = source.interval_seconds or schedule.gather_interval_seconds
            trigger = IntervalTrigger(seconds=every, timezone=self.zone)
            specs.append(_JobSpec(f"gather:{source.name}", run_gather, trigger, (source.name,), run_at_start=True))
        feeds_every = IntervalTrigger(seconds=schedule.feeds_interval_seconds, timezone=self.zone)
        specs.append(_JobSpec("feeds", run_feeds, feeds_every, run_at_start=True))
        for cadence, crontab in schedule.cadences.items():
            if crontab != "off":
                trigger = parse_crontab(crontab, self.settings.site.timezone)
                specs.append(_JobSpec(f"edition:{cadence}", run_edition, trigger, (cadence,), run_at_start=True))
        return specs

    # --- Jobs -----------------------------------------------------------------------------------------------

    def gather(self, source: str) -> None:
        """Pull ``source``; rebuild the feeds right away when it stored new or changed posts."""
        stored = False
        # One pull of a source at a time: its scheduled job and an edition's last-minute gather may meet.
        with self._source_locks.setdefault(source, threading.Lock()), self._job(f"gather:{source}") as outcome:
            (report,) = gather(self.service, [source])
            stored = bool(report.added or report.updated)
            outcome.ok = report.failure is None
            outcome.fields = {"added": report.added, "updated": report.updated, "rejected": len(report.rejections)}
            outcome.summary = (
                f"{report.added} new, {report.updated} updated, {report.unchanged} unchanged,"
                f" {len(report.rejections)} refused" + (f"; failed: {report.failure}" if report.failure else "")
            )
        if stored:
            self.feeds()

    def feeds(self) -> None:
        """Rebuild the feeds that changed."""
        with self._job("feeds") as outcome, self._feeds_lock:
            report = publish_feeds(self.service)
            outcome.fields = {"written": len(report.written), "feeds": report.feeds}
            outcome.summary = f"{len(report.written)} documents rewritten in {report.feeds} feeds"
            if report.hub_refused:
                outcome.summary += f"; the WebSub hub refused {len(report.hub_refused)} pings"

    def editions(self, cadence: str) -> None:
        """Gather every source, then create each due edition of ``cadence`` (as a draft when approval is required)
        and queue it.

        Gathering first puts a post published just before the fire time in its edition: otherwise it would wait
        for the next gather, after the edition was made, and be in no edition of its window at all.
        """
        digest = self.settings.digest
        queued = 0
        with self._job(f"edition:{cadence}") as outcome:
            now = self.clock()
            windows = self._due_windows(cadence, now)
            if windows:
                for source in self.settings.sources:
                    self.gather(source.name)
            lines = []
            for since, until in windows:
                plan = plan_edition(self.service, cadence, since, until, draft=digest.require_approval)
                assert plan.edition is not None
                state = "created" if plan.created else "existed"
                window = f"{since:%Y-%m-%d %H:%M:%S} to {until:%Y-%m-%d %H:%M:%S} UTC"
                edition = plan.edition
                lines.append(f"edition {edition.id} {state} for {window} ({edition.status}, {plan.queued} queued)")
                queued += plan.queued
                if plan.created and plan.edition.status == ledger.DRAFT:
                    for problem in notify_editors(self.service, plan):
                        log.warning("could not email an editor about draft %s: %s", plan.edition.id, problem)
            outcome.summary = "; ".join(lines) or "no edition due"
            outcome.fields = {"cadence": cadence, "editions": len(lines), "queued": queued}
            self._report_stale_drafts(now)
        if queued and not digest.require_approval:
            self.wake_deliveries()

    def deliveries(self) -> None:
        """Send every due delivery of sending editions (retries included)."""
        with self._job("deliver", quiet_when_idle=True) as outcome:
            try:
                report = deliver(self.service, self.transport, sender=self.sender)
            except SenderBusy as busy:
                outcome.summary = f"skipped: {busy}"
                return
            outcome.ok = not (report.failed or report.poisoned)
            outcome.idle = report.handled == 0 and not report.finished_editions
            outcome.fields = {"sent": report.sent, "deferred": report.deferred, "failed": report.failed,
                              "bounced": report.bounced}  # fmt: skip
            outcome.summary = (
                f"{report.sent} sent, {report.deferred} deferred, {report.failed} failed, {report.bounced} bounced"
            )
            if report.finished_editions:
                outcome.summary += f"; editions finished: {', '.join(map(str, report.finished_editions))}"

    def _report_stale_drafts(self, now: datetime) -> None:
        limit = timedelta(hours=self.settings.digest.approval_timeout_hours)
        with database.transaction(self.service.engine) as session:
            stale = ledger.drafts_created_before(session, now - limit)
        for draft in stale:
            log.warning(
                "edition %s (%s, %s to %s) has waited for approval since %s: it is not sent until approved",
                draft.id, draft.cadence, f"{draft.since:%Y-%m-%d %H:%M}", f"{draft.until:%Y-%m-%d %H:%M}",
                f"{draft.created_at:%Y-%m-%d %H:%M} UTC", extra={"event": "stale-draft", "edition": draft.id},
            )  # fmt: skip

    @contextlib.contextmanager
    def _job(self, job_id: str, *, quiet_when_idle: bool = False) -> Iterator[_Outcome]:
        """Record the run in ``job_runs`` and log one line with what it did; a failure is logged, not raised."""
        outcome = _Outcome()
        started = time.monotonic()
        if not quiet_when_idle:
            self._note(job_runs.started, job_id, self.clock(), self.name)
        try:
            yield outcome
        except SyndicationError as error:
            outcome.ok, outcome.summary = False, f"failed: {error}"
        except Exception as error:  # the job's thread must survive; the traceback goes to the log
            log.exception("job %s crashed", job_id, extra={"job": job_id})
            outcome.ok, outcome.summary = False, f"crashed: {type(error).__name__}: {error}"
        seconds = time.monotonic() - started
        level = logging.INFO if outcome.ok else logging.ERROR
        if quiet_when_idle and outcome.idle and outcome.ok:
            level = logging.DEBUG  # a drain that found nothing, every minute in every process, is noise
        else:
            if quiet_when_idle:
                self._note(job_runs.started, job_id, self.clock(), self.name)
            self._note(job_runs.finished, job_id, self.clock(), outcome.ok, outcome.summary)
        log.log(level, "%s: %s", job_id, outcome.summary,
                extra={"job": job_id, "ok": outcome.ok, "seconds": round(seconds, 3), **outcome.fields})  # fmt: skip

    def _note(self, write: Callable[..., None], *args: Any) -> None:
        try:
            with database.transaction(self.service.engine) as session:
                write(session, *args)
        except Exception:  # status bookkeeping must never stop the job itself
            log.exception("could not record a job run")


@dataclass
class _Outcome:
    ok: bool = True
    summary: str = "done"
    idle: bool = False
    fields: dict[str, Any] = field(default_factory=dict)


# --- Status ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class JobStatus:
    """One job as ``syndication status`` shows it."""

    job_id: str
    last: job_runs.JobRun | None
    next_run: datetime | None


@dataclass(frozen=True)
class EditionStatus:
    """The last edition of a cadence with its deliveries per status, and when the next one is due."""

    cadence: str
    last: ledger.Edition | None
    deliveries: dict[str, int]
    next_due: datetime | None


@dataclass(frozen=True)
class StatusReport:
    """What ``syndication status`` shows."""

    leader: job_runs.JobRun | None
    jobs: list[JobStatus]
    queue_depth: int
    editions: list[EditionStatus]
    stale_drafts: list[ledger.Edition]


def status_report(service: Service) -> StatusReport:
    """Each job's last run and next run, the queue depth, and the last edition of each cadence."""
    settings, now = service.settings, service.clock()
    next_runs = _stored_next_runs(service.engine)
    with database.transaction(service.engine) as session:
        runs = {run.job_id: run for run in job_runs.all_runs(session)}
        editions = []
        for cadence, crontab in settings.schedule.cadences.items():
            last = ledger.last_edition(session, cadence)
            due = None if crontab == "off" else next_fire(parse_crontab(crontab, settings.site.timezone), now)
            editions.append(EditionStatus(cadence, last, ledger.progress(session, last.id) if last else {}, due))
        depth = ledger.queue_depth(session, now)
        stale = ledger.drafts_created_before(session, now - timedelta(hours=settings.digest.approval_timeout_hours))
    job_ids = sorted((set(runs) | set(next_runs)) - {LEADER})
    jobs = [JobStatus(job_id, runs.get(job_id), next_runs.get(job_id)) for job_id in job_ids]
    return StatusReport(runs.get(LEADER), jobs, depth, editions, stale)


def _stored_next_runs(engine: Engine) -> dict[str, datetime | None]:
    """Next run times from APScheduler's job store table, read directly: no scheduler is started to read it."""
    if not inspect(engine).has_table(JOBSTORE_TABLE):
        return {}
    with engine.connect() as connection:
        rows = connection.execute(text(f"SELECT id, next_run_time FROM {JOBSTORE_TABLE}"))  # noqa: S608 (a constant)
        return {job_id: datetime.fromtimestamp(stamp, UTC) if stamp is not None else None for job_id, stamp in rows}
