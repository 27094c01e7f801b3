"""What the scheduler's jobs need of the store: who leads, the shared job table, the record of each run, the
windows that are due and the drafts that wait too long. The scheduler (``syndication.scheduling.runner``) calls
these and holds no rules of its own."""

from __future__ import annotations

from datetime import datetime, timedelta

from syndication.app.service import Service
from syndication.core.models import Edition
from syndication.scheduling.cadences import due_windows, parse_crontab
from syndication.store import database, job_runs, ledger
from syndication.store.leadership import Leadership, SharedJobStore, leadership_for

# The job id under which the leading process records itself.
LEADER = "leader"

__all__ = ["LEADER", "Leadership", "SharedJobStore", "open_leadership", "open_shared_job_store"]


def open_leadership(service: Service) -> Leadership:
    """The leader election that fits the store: an advisory lock on PostgreSQL, a file lock on SQLite."""
    return leadership_for(service.engine)


def open_shared_job_store(service: Service) -> SharedJobStore:
    """APScheduler's job store in the service's database, on an engine of its own."""
    return SharedJobStore(service.settings.database.url)


def note_leader(service: Service, runner: str) -> None:
    """Record that ``runner`` now schedules."""
    with database.transaction(service.engine) as session:
        now = service.clock()
        job_runs.started(session, LEADER, now, runner)
        job_runs.finished(session, LEADER, now, True, f"{runner} schedules")


def note_started(service: Service, job_id: str, runner: str) -> None:
    """Record that ``runner`` started ``job_id`` now."""
    with database.transaction(service.engine) as session:
        job_runs.started(session, job_id, service.clock(), runner)


def note_finished(service: Service, job_id: str, ok: bool, summary: str) -> None:
    """Record how ``job_id`` ended."""
    with database.transaction(service.engine) as session:
        job_runs.finished(session, job_id, service.clock(), ok, summary)


def windows_due(service: Service, cadence: str, now: datetime) -> list[tuple[datetime, datetime]]:
    """The windows of ``cadence`` whose edition is due at ``now``, oldest first, from the store's record of the
    last edition made and the cadence's crontab, never from when the scheduler last ran: none ends after
    ``now``, none is made twice, nothing is due while ``now`` is before the last edition's end (the clock moved
    back), and the first starts where the last edition ended (``cadences.due_windows`` holds the rules)."""
    settings = service.settings
    trigger = parse_crontab(settings.schedule.cadences[cadence], settings.site.timezone)
    grace = timedelta(seconds=settings.schedule.misfire_grace_seconds)
    return due_windows(trigger, now, grace, last_until(service, cadence))


def last_until(service: Service, cadence: str) -> datetime | None:
    """The end of the last edition of ``cadence`` (the window that ends last), None before the first."""
    with database.transaction(service.engine) as session:
        last = ledger.last_edition(session, cadence)
    return last.until if last else None


def stale_drafts(service: Service, now: datetime) -> list[Edition]:
    """Drafts that have waited for approval longer than ``[digest] approval_timeout_hours``, oldest first."""
    limit = timedelta(hours=service.settings.digest.approval_timeout_hours)
    with database.transaction(service.engine) as session:
        return ledger.drafts_created_before(session, now - limit)
