"""Health and the store's figures, for ``/readyz`` and ``/metrics``: is the store reachable and at this version's
schema, and the counts it keeps (deliveries, editions, subscribers, bounces, the queue, each job's last run).

The figures are read from the store at each scrape, so every process reports the same, whichever answers:
several web workers or ``run`` processes need no shared memory for them.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.exc import SQLAlchemyError

from syndication.app.jobs import LEADER
from syndication.app.service import Service
from syndication.config import Settings
from syndication.core.bounces import Fault
from syndication.core.models import SUBSCRIBER_STATUSES, DeliveryStatus, EditionStatus
from syndication.inbound.classify import MessageKind
from syndication.store import database, ledger
from syndication.store import metrics as store_metrics

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class JobResult:
    """A scheduled job's last run: whether it went well (None while it runs) and when it finished."""

    job_id: str
    ok: bool | None
    finished_at: datetime | None


@dataclass(frozen=True)
class StoreFigures:
    """The counts the store keeps, each by its status (or kind, or fault)."""

    deliveries: dict[str, int]
    editions: dict[str, int]
    subscribers: dict[str, int]
    bounces: dict[str, int]
    inbound: dict[str, int]
    queue_depth: int
    oldest_due_seconds: float  # how long the longest-waiting due delivery has waited; 0 when none is due
    jobs: list[JobResult]  # the scheduled jobs (the leader's own record left out)


def open_health_store(settings: Settings) -> Service:
    """The store for health checks and figures: opened even when its schema is behind, which ``/readyz`` says."""
    return Service.open(settings, require_schema=False)


@functools.cache
def _head_revision() -> str:
    return database.head_revision()


def store_problems(service: Service) -> dict[str, str]:
    """What keeps the store from serving, by check (``database``, ``schema``); empty when it is ready."""
    try:
        revision = database.current_revision(service.engine)
    except SQLAlchemyError as error:
        log.warning("readiness: the store cannot be reached: %s", error, extra={"event": "not-ready"})
        return {"database": "unreachable"}
    head = _head_revision()
    if revision != head:
        at = "not initialised" if revision is None else f"at schema {revision}"
        return {"schema": f"{at}, this version needs {head}: run 'syndication init'"}
    return {}


def store_figures(service: Service) -> StoreFigures:
    """The store's counts now, in one transaction; every known status (kind, fault) is there, with 0 if need be,
    so that an alert on one never finds it missing."""
    now = service.clock()
    with database.transaction(service.engine) as session:
        oldest = store_metrics.oldest_due(session, now)
        return StoreFigures(
            deliveries=_every(DeliveryStatus, store_metrics.deliveries_by_status(session)),
            editions=_every(EditionStatus, store_metrics.editions_by_status(session)),
            subscribers=_every(SUBSCRIBER_STATUSES, store_metrics.subscribers_by_status(session)),
            bounces=_every((Fault.ADDRESS, Fault.MAILBOX), store_metrics.bounces_by_fault(session)),
            inbound=_every(MessageKind, store_metrics.inbound_by_kind(session)),
            queue_depth=ledger.queue_depth(session, now),  # as ``syndication status`` counts it
            oldest_due_seconds=max(0.0, (now - oldest).total_seconds()) if oldest else 0.0,
            jobs=[JobResult(*row) for row in store_metrics.job_results(session) if row[0] != LEADER],
        )


def _every(known: Iterable[str], counts: dict[str, int]) -> dict[str, int]:
    return {**dict.fromkeys(map(str, known), 0), **counts}
