"""Status: each scheduled job's last and next run, the queue, and the last edition of each cadence."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from syndication.app.editions import group_reasons
from syndication.app.jobs import LEADER
from syndication.app.service import Service
from syndication.core.models import Edition
from syndication.scheduling.cadences import next_fire, parse_crontab
from syndication.store import database, job_runs, leadership, ledger
from syndication.store.job_runs import JobRun


@dataclass(frozen=True)
class JobStatus:
    """One job as ``syndication status`` shows it."""

    job_id: str
    last: JobRun | None
    next_run: datetime | None


@dataclass(frozen=True)
class CadenceStatus:
    """The last edition of a cadence with its deliveries per status (``last.reason``: why the sender paused it,
    if it did), and when the next one is due."""

    cadence: str
    last: Edition | None
    deliveries: dict[str, int]
    next_due: datetime | None
    reasons: dict[str, dict[str, int]] = field(default_factory=dict)  # status → why (normalised) → how many


@dataclass(frozen=True)
class StatusReport:
    """What ``syndication status`` shows."""

    leader: JobRun | None
    jobs: list[JobStatus]
    queue_depth: int
    editions: list[CadenceStatus]
    stale_drafts: list[Edition]


def status_report(service: Service) -> StatusReport:
    """Each job's last run and next run, the queue depth, and the last edition of each cadence."""
    settings, now = service.settings, service.clock()
    next_runs = leadership.stored_next_runs(service.engine)
    with database.transaction(service.engine) as session:
        runs = {run.job_id: run for run in job_runs.all_runs(session)}
        editions = []
        for cadence, crontab in settings.schedule.cadences.items():
            last = ledger.last_edition(session, cadence)
            due = None if crontab == "off" else next_fire(parse_crontab(crontab, settings.site.timezone), now)
            progress = ledger.progress(session, last.id) if last else {}
            reasons = group_reasons(ledger.problem_details(session, last.id)) if last else {}
            editions.append(CadenceStatus(cadence, last, progress, due, reasons))
        depth = ledger.queue_depth(session, now)
        stale = ledger.drafts_created_before(session, now - timedelta(hours=settings.digest.approval_timeout_hours))
    job_ids = sorted((set(runs) | set(next_runs)) - {LEADER})
    jobs = [JobStatus(job_id, runs.get(job_id), next_runs.get(job_id)) for job_id in job_ids]
    return StatusReport(runs.get(LEADER), jobs, depth, editions, stale)
