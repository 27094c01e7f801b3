"""What each scheduled job did last: written by whichever process ran it, read by ``syndication status``."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from syndication.store.schema import JobRunRow


@dataclass(frozen=True, slots=True)
class JobRun:
    """The last run of one job; ``ok`` is None while it runs."""

    job_id: str
    started_at: datetime
    finished_at: datetime | None
    ok: bool | None
    summary: str
    runner: str


def started(session: Session, job_id: str, at: datetime, runner: str) -> None:
    """Note that ``runner`` started ``job_id`` at ``at``."""
    values = {"started_at": at, "finished_at": None, "ok": None, "summary": "running", "runner": runner}
    result = session.execute(update(JobRunRow).where(JobRunRow.job_id == job_id).values(**values))
    if getattr(result, "rowcount", 0):
        return
    try:
        with session.begin_nested():
            session.add(JobRunRow(job_id=job_id, **values))
    except IntegrityError:  # another process inserted it first: the row exists now
        session.execute(update(JobRunRow).where(JobRunRow.job_id == job_id).values(**values))


def finished(session: Session, job_id: str, at: datetime, ok: bool, summary: str) -> None:
    """Note how ``job_id``'s run ended."""
    session.execute(
        update(JobRunRow).where(JobRunRow.job_id == job_id).values(finished_at=at, ok=ok, summary=summary[:2000])
    )


def all_runs(session: Session) -> list[JobRun]:
    """The last run of every job that ever ran, by job id."""
    rows = session.scalars(select(JobRunRow).order_by(JobRunRow.job_id))
    return [JobRun(r.job_id, r.started_at, r.finished_at, r.ok, r.summary, r.runner) for r in rows]
