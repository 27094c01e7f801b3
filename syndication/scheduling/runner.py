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

Time goes forward only, whatever the wall clock does. The edition job works out what is due from the store's
record of the last edition made and the crontab (``jobs.windows_due``), never from when it last ran: no window
that has not ended, each missing window once and oldest first after a jump forward, nothing while the clock is
behind the last edition's end (it waits, then goes on), and each edition starts where the last one ended, so
the posts of a fire time skipped beyond the grace time go in the next edition. APScheduler 3 times its jobs by
the wall clock and sleeps until the next run time it computed: after a jump back it would sleep for the whole
jump (an hour back, nothing for an hour). So every process watches the wall clock against the monotonic one
every ``[schedule] leader_poll_seconds``; when it moved back, every job is run now, once, and keeps its
trigger's rhythm from the new time; when it moved forward, the scheduler wakes at once to run what became due
(coalesced, within the grace time).

With ``[bounces] listen`` set, every process also runs the bounce receiver for its whole life (each message is
processed once, whichever process gets it); with ``[bounces.mailbox]`` the leader reads that mailbox on schedule.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.jobstores.base import BaseJobStore, JobLookupError
from apscheduler.jobstores.memory import MemoryJobStore
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.interval import IntervalTrigger

from syndication.app import jobs
from syndication.app.bounces import Stoppable, poll_mailbox_once, start_receiver
from syndication.app.editions import deliver, notify_editors, open_sender, plan_edition
from syndication.app.gathering import gather
from syndication.app.maintenance import prune
from syndication.app.notices import drain_notices
from syndication.app.publishing import publish_feeds
from syndication.app.service import Service
from syndication.app.webhooks import deliver_webhooks
from syndication.clock import Clock, system_clock
from syndication.config import Settings
from syndication.errors import SenderBusy, SyndicationError
from syndication.runtime import metrics
from syndication.scheduling.cadences import parse_crontab

log = logging.getLogger("syndication.scheduler")

# How far the wall clock may move against the monotonic clock between two looks before it counts as a jump
# (NTP slews it by far less; a step is a jump).
_JUMP_SECONDS = 1.0

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


def run_webhooks() -> None:
    """Job: post the due webhook deliveries."""
    _runner().webhooks()


def run_mailbox() -> None:
    """Job: read the bounce mailbox ([bounces.mailbox])."""
    _runner().mailbox()


def run_prune() -> None:
    """Job: remove what [retention] no longer keeps."""
    _runner().prune()


def _runner() -> Runner:
    if _current is None:
        raise RuntimeError("no scheduler runs in this process")
    return _current


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
        *,
        clock: Clock = system_clock,
        name: str | None = None,
        leadership: jobs.Leadership | None = None,
    ) -> None:
        self.settings = settings
        self.service = Service.open(settings, clock)
        self.clock = clock
        self.name = name or f"{socket.gethostname()}:{os.getpid()}"
        self.stop = threading.Event()  # set it (SIGTERM) to stop after the work in flight
        self.sender = open_sender(self.service, owner=self.name)  # through the service's Mailer
        self.leadership = leadership or jobs.open_leadership(self.service)
        self.leading = False
        self.zone = ZoneInfo(settings.site.timezone)
        self._feeds_lock = threading.Lock()  # a gather's rebuild and the safety net never build at once
        self._job_store: jobs.SharedJobStore | None = None
        self._source_locks: dict[str, threading.Lock] = {}
        self.receiver: Stoppable | None = None  # the bounce receiver, while [bounces] listen is set
        self._clock_watch: threading.Thread | None = None
        grace = settings.schedule.misfire_grace_seconds
        self.scheduler = BackgroundScheduler(
            timezone=self.zone,
            jobstores={"local": MemoryJobStore()},
            executors={"default": ThreadPoolExecutor(4)},
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": grace},
        )

    # --- Life cycle -----------------------------------------------------------------------------------------

    def start(self) -> None:
        """Start draining the queue (and receiving bounces, when ``[bounces] listen`` is set); call
        ``poll_leadership`` to take part in scheduling."""
        global _current
        _current = self
        metrics.register_scheduler(self.state)
        if self.settings.bounces.listen is not None and self.receiver is None:
            # Every process may receive: the MTA can be given several, and each message is processed once.
            self.receiver = start_receiver(self.service)
            log.info("receiving bounces on %s", self.settings.bounces.listen,
                     extra={"event": "bounce-receiver", "listen": self.settings.bounces.listen})  # fmt: skip
        self.scheduler.start()
        every = IntervalTrigger(seconds=self.settings.schedule.deliver_interval_seconds, timezone=self.zone)
        self.scheduler.add_job(run_deliveries, every, id="deliver", jobstore="local", next_run_time=self._now())
        # Every process drains the webhook queue too: each delivery is claimed under a fencing token.
        hooks = IntervalTrigger(seconds=self.settings.webhooks.interval_seconds, timezone=self.zone)
        self.scheduler.add_job(run_webhooks, hooks, id="webhooks", jobstore="local", next_run_time=self._now())
        if self._clock_watch is None:
            self._clock_watch = threading.Thread(target=self._watch_clock, name="clock-watch", daemon=True)
            self._clock_watch.start()

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
        if self.receiver is not None:
            self.receiver.stop()
            self.receiver = None
        if self._clock_watch is not None:
            self._clock_watch.join()  # it looks every leader_poll_seconds, and stops as soon as ``stop`` is set
            self._clock_watch = None
        if self.scheduler.running:
            self.scheduler.shutdown(wait=True)
        self._dispose_store_engine()
        if self.leading:
            self.leading = False
            self.leadership.release()
        self.service.close()
        if _current is self:
            _current = None
        metrics.unregister_scheduler(self.state)
        log.info("stopped", extra={"event": "stopped", "runner": self.name})

    def state(self) -> str:
        """``stopping`` once asked to stop, else ``leader`` while this process schedules, else ``standby``."""
        return "stopping" if self.stop.is_set() else "leader" if self.leading else "standby"

    def wake_deliveries(self) -> None:
        """Drain the queue now rather than at the next interval (an edition was just queued)."""
        with contextlib.suppress(Exception):  # the scheduler may be shutting down; the interval will do it
            self.scheduler.modify_job("deliver", jobstore="local", next_run_time=self._now())

    def _now(self) -> datetime:
        return self.clock().astimezone(self.zone)

    # --- Wall-clock jumps -----------------------------------------------------------------------------------

    def _watch_clock(self) -> None:
        """Until ``stop``: every ``leader_poll_seconds``, compare the wall clock (the one APScheduler times its
        jobs by) with the monotonic one; a jump back makes every job due now, a jump forward wakes the scheduler.
        """
        offset = _wall_offset()
        while not self.stop.wait(self.settings.schedule.leader_poll_seconds):
            now_offset = _wall_offset()
            moved, offset = now_offset - offset, now_offset
            if moved < -_JUMP_SECONDS:
                log.warning("the wall clock moved back %.0f seconds: every job runs now and keeps its rhythm from "
                            "there; no edition is made until the clock passes the last one's end", -moved,
                            extra={"event": "clock-jump", "seconds": round(moved, 3)})  # fmt: skip
                self._run_every_job_now()
            elif moved > _JUMP_SECONDS:
                log.warning("the wall clock moved forward %.0f seconds: what became due runs now", moved,
                            extra={"event": "clock-jump", "seconds": round(moved, 3)})  # fmt: skip
                with contextlib.suppress(Exception):  # the scheduler may be shutting down
                    self.scheduler.wakeup()

    def _run_every_job_now(self) -> None:
        """Move every job whose next run is after now (as APScheduler's wall clock reads it) to now: computed
        before the clock moved back, those times would hold each job back for as long as the jump."""
        now = system_clock().astimezone(self.zone)
        try:
            scheduled = self.scheduler.get_jobs()
        except Exception:  # the scheduler may be shutting down, or losing its shared store
            log.exception("could not reschedule the jobs after the clock moved back")
            return
        for job in scheduled:
            if job.next_run_time is not None and job.next_run_time > now:
                with contextlib.suppress(JobLookupError):  # removed meanwhile (leadership lost)
                    job.modify(next_run_time=now)

    # --- Leadership -----------------------------------------------------------------------------------------

    def _start_leading(self) -> None:
        self.leading = True
        jobs.note_leader(self.service, self.name)
        log.info("this process is now the scheduler", extra={"event": "leader", "runner": self.name})
        self._job_store = jobs.open_shared_job_store(self.service)
        store = self._job_store.jobstore
        # Paused while the stored jobs are looked at and set: a running scheduler processes a job store as soon as
        # it is added, and would make an edition that the check below then makes again.
        self.scheduler.pause()
        try:
            self._add_leader_jobs(store)
        finally:
            self.scheduler.resume()

    def _add_leader_jobs(self, store: BaseJobStore) -> None:
        # Stored jobs whose time passed while no process scheduled run once resumed (coalesced), if within grace.
        self.scheduler.add_jobstore(store, "shared")
        wanted = self._leader_jobs()
        for spec in wanted:
            existing = self.scheduler.get_job(spec.id, jobstore="shared")
            timing: dict[str, Any] = {}
            if existing is not None and repr(existing.trigger) == repr(spec.trigger):
                # Keep the stored next run time: replacing the job would move a missed 07:00 to tomorrow. But no
                # later than the trigger's next fire time from now: a time stored while the clock was ahead
                # would hold the job back for as long as the clock was.
                stored, first = existing.next_run_time, spec.trigger.get_next_fire_time(None, self._now())
                timing["next_run_time"] = min(stored, first) if stored and first else stored
                if spec.func is run_edition and jobs.windows_due(self.service, spec.args[0], self.clock()):
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

    def _stop_leading(self) -> None:
        self.leading = False
        with contextlib.suppress(KeyError):
            self.scheduler.remove_jobstore("shared", shutdown=True)
        self._dispose_store_engine()
        self.leadership.release()

    def _dispose_store_engine(self) -> None:
        if self._job_store is not None:
            self._job_store.dispose()
            self._job_store = None

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
        mailbox = self.settings.bounces.mailbox
        if mailbox is not None:
            every = IntervalTrigger(seconds=mailbox.poll_seconds, timezone=self.zone)
            specs.append(_JobSpec("bounces:mailbox", run_mailbox, every, run_at_start=True))
        retention = self.settings.retention
        if retention.deliveries_days or retention.inbound_raw_days or retention.audit_days or retention.webhooks_days:
            specs.append(_JobSpec("prune", run_prune, IntervalTrigger(days=1, timezone=self.zone)))
        return specs

    # --- Jobs -----------------------------------------------------------------------------------------------

    def gather(self, source: str) -> None:
        """Pull ``source``; rebuild the feeds right away when it stored new or changed posts."""
        stored = False
        # One pull of a source at a time: its scheduled job and an edition's last-minute gather may meet.
        with self._source_locks.setdefault(source, threading.Lock()), self._job(f"gather:{source}") as outcome:
            try:
                (report,) = gather(self.service, [source])
            except Exception:
                metrics.observe_gather(source, False)
                raise
            stored = bool(report.added or report.updated)
            outcome.ok = report.failure is None
            metrics.observe_gather(source, outcome.ok, report.added, report.updated, len(report.rejections))
            outcome.fields = {
                "source": source,
                "added": report.added,
                "updated": report.updated,
                "rejected": len(report.rejections),
            }
            outcome.summary = (
                f"{report.added} new, {report.updated} updated, {report.unchanged} unchanged,"
                f" {len(report.rejections)} refused" + (f"; failed: {report.failure}" if report.failure else "")
            )
        if stored:
            self.feeds()

    def feeds(self) -> None:
        """Rebuild the feeds that changed."""
        with self._job("feeds") as outcome, self._feeds_lock:
            started, written = time.monotonic(), None
            try:
                report = publish_feeds(self.service)
                written = len(report.written)
            finally:
                metrics.observe_feed_build(time.monotonic() - started, written)
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
            windows = jobs.windows_due(self.service, cadence, now)
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
                if plan.empty:
                    lines.append(f"edition {edition.id} {state} for {window} (empty: nothing new, not published)")
                    continue
                lines.append(f"edition {edition.id} {state} for {window} ({edition.status}, {plan.queued} queued)")
                queued += plan.queued
                if plan.created and plan.draft:
                    for problem in notify_editors(self.service, plan):
                        log.warning("could not email an editor about draft %s: %s", plan.edition.id, problem)
            outcome.summary = "; ".join(lines) or "no edition due"
            if not windows:
                ended = jobs.last_until(self.service, cadence)
                if ended is not None and now < ended:  # the clock moved back: wait, then go on
                    outcome.summary += (f": the clock ({now:%Y-%m-%d %H:%M:%S} UTC) is before the end of the last"
                                        f" edition ({ended:%Y-%m-%d %H:%M:%S} UTC); waiting for it")  # fmt: skip
            outcome.fields = {"cadence": cadence, "editions": len(lines), "queued": queued}
            self._report_stale_drafts(now)
        if queued and not digest.require_approval:
            self.wake_deliveries()

    def deliveries(self) -> None:
        """Send the queued notices (confirmations, preference changes), then every due delivery of sending
        editions (retries included)."""
        with self._job("deliver", quiet_when_idle=True) as outcome:
            notices = drain_notices(self.service)  # first: a busy sender below must not hold back a confirmation
            try:
                report = deliver(self.service, sender=self.sender)
            except SenderBusy as busy:
                outcome.summary = f"skipped: {busy}; notices: {notices.summary}"
                return
            outcome.ok = not (report.failed or report.poisoned)
            outcome.idle = report.handled == 0 and not report.finished_editions and notices.handled == 0
            outcome.fields = {"sent": report.sent, "deferred": report.deferred, "failed": report.failed,
                              "bounced": report.bounced}  # fmt: skip
            outcome.summary = (
                f"{report.sent} sent, {report.deferred} deferred, {report.failed} failed, {report.bounced} bounced"
            )
            if report.finished_editions:
                outcome.summary += f"; editions finished: {', '.join(map(str, report.finished_editions))}"
            if notices.handled:
                outcome.summary += f"; notices: {notices.summary}"

    def webhooks(self) -> None:
        """Post the due webhook deliveries (retries included)."""
        with self._job("webhooks", quiet_when_idle=True) as outcome:
            report = deliver_webhooks(self.service)
            outcome.idle = report.handled == 0
            outcome.fields = {"delivered": report.delivered, "retrying": report.retrying, "failed": report.failed}
            outcome.summary = report.summary

    def mailbox(self) -> None:
        """Process the new messages of the bounce mailbox."""
        with self._job("bounces:mailbox", quiet_when_idle=True) as outcome:
            handled, failed = poll_mailbox_once(self.service)
            outcome.ok = not failed
            outcome.idle = handled == 0 and failed == 0
            outcome.fields = {"handled": handled, "failed": failed}
            outcome.summary = f"{handled} messages processed" + (f", {failed} failed (kept for the next poll)"
                                                                 if failed else "")  # fmt: skip

    def prune(self) -> None:
        """Remove the old finished deliveries and attempts, and old inbound bytes, [retention] no longer keeps."""
        with self._job("prune") as outcome:
            report = prune(self.service)
            outcome.fields = {"deliveries": report.deliveries, "attempts": report.attempts,
                              "inbound": report.inbound_bytes}  # fmt: skip
            outcome.summary = (f"{report.deliveries} deliveries and {report.attempts} attempts of"
                               f" {report.editions} editions removed, {report.inbound_bytes} inbound messages'"
                               " bytes let go")  # fmt: skip

    def _report_stale_drafts(self, now: datetime) -> None:
        stale = jobs.stale_drafts(self.service, now)
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
            self._note(jobs.note_started, self.service, job_id, self.name)
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
                self._note(jobs.note_started, self.service, job_id, self.name)
            self._note(jobs.note_finished, self.service, job_id, outcome.ok, outcome.summary)
        log.log(level, "%s: %s", job_id, outcome.summary,
                extra={"job": job_id, "ok": outcome.ok, "seconds": round(seconds, 3), **outcome.fields})  # fmt: skip

    def _note(self, write: Callable[..., None], *args: Any) -> None:
        try:
            write(*args)
        except Exception:  # status bookkeeping must never stop the job itself
            log.exception("could not record a job run")


def _wall_offset() -> float:
    """The wall clock less the monotonic one, in seconds: constant while neither jumps.

    Read between two monotonic readings, taken again when the thread was held up between them (a busy machine),
    so that a pause of this thread never reads as a jump of the clock.
    """
    for _ in range(5):
        before = time.monotonic()
        wall = system_clock().timestamp()
        after = time.monotonic()
        if after - before < 0.01:
            break
    return wall - (before + after) / 2


@dataclass
class _Outcome:
    ok: bool = True
    summary: str = "done"
    idle: bool = False
    fields: dict[str, Any] = field(default_factory=dict)
