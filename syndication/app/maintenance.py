"""Keeping the store in bounds and safe: pruning what ``[retention]`` no longer keeps, and backing it up.

``prune`` removes, edition by edition (one short transaction each, so senders are never held up long), the
deliveries and attempts of finished editions older than ``[retention] deliveries_days``, and lets go of the
bytes kept of unrecognised inbound messages older than ``inbound_raw_days``, and the audit log's events older
than ``audit_days``. What exactly-once needs stays:
``syndication.store.retention`` says what and why. ``backup`` copies an SQLite store while the service runs; a
PostgreSQL store is backed up with ``pg_dump`` (docs/operations.md), which this refuses to pretend to do.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy.engine import make_url

from syndication.app.service import Service
from syndication.errors import SyndicationError
from syndication.store import audit, backup, database, retention, webhooks


@dataclass
class PruneReport:
    """What ``prune`` removed (with ``dry_run``: would remove), per table, and the cut-offs it used (None: that
    kind is kept for ever)."""

    dry_run: bool
    deliveries_before: datetime | None
    inbound_before: datetime | None
    audit_before: datetime | None = None
    webhooks_before: datetime | None = None
    editions: int = 0
    deliveries: int = 0
    attempts: int = 0
    inbound_bytes: int = 0
    audit_events: int = 0
    webhook_events: int = 0
    webhook_deliveries: int = 0
    webhook_attempts: int = 0

    @property
    def removed(self) -> int:
        """Rows removed or emptied, of every table."""
        webhooks = self.webhook_events + self.webhook_deliveries + self.webhook_attempts
        return self.deliveries + self.attempts + self.inbound_bytes + self.audit_events + webhooks


def prune(service: Service, *, dry_run: bool = False) -> PruneReport:
    """Remove what ``[retention]`` no longer keeps (with ``dry_run``, count it and remove nothing)."""
    settings, now = service.settings.retention, service.clock()
    report = PruneReport(
        dry_run,
        now - timedelta(days=settings.deliveries_days) if settings.deliveries_days else None,
        now - timedelta(days=settings.inbound_raw_days) if settings.inbound_raw_days else None,
        now - timedelta(days=settings.audit_days) if settings.audit_days else None,
        now - timedelta(days=settings.webhooks_days) if settings.webhooks_days else None,
    )
    if report.deliveries_before is not None:
        with database.transaction(service.engine) as session:
            editions = retention.prunable_editions(session, report.deliveries_before)
        for edition_id in editions:
            with database.transaction(service.engine) as session:
                deliveries, attempts = retention.prune_edition(session, edition_id, dry_run=dry_run)
            report.editions += 1 if deliveries else 0
            report.deliveries += deliveries
            report.attempts += attempts
    if report.inbound_before is not None:
        with database.transaction(service.engine) as session:
            report.inbound_bytes = retention.prune_inbound_bytes(session, report.inbound_before, dry_run=dry_run)
    if report.audit_before is not None:
        with database.transaction(service.engine) as session:
            report.audit_events = audit.prune(session, report.audit_before, dry_run=dry_run)
    if report.webhooks_before is not None:
        with database.transaction(service.engine) as session:
            removed = webhooks.prune(session, report.webhooks_before, dry_run=dry_run)
        report.webhook_events, report.webhook_deliveries, report.webhook_attempts = removed
    return report


@dataclass(frozen=True)
class BackupReport:
    """Where the copy went and how large it is."""

    path: Path
    size: int


def pg_dump_command(database_url: str, target: Path) -> str:
    """The ``pg_dump`` command that backs up the PostgreSQL store at ``database_url`` to ``target`` (custom format,
    for ``pg_restore``); the password is left out (give it in ``PGPASSWORD`` or ``~/.pgpass``)."""
    url = make_url(database_url).set(drivername="postgresql", password=None)
    return f"pg_dump --format=custom --file={target} '{url.render_as_string(hide_password=False)}'"


def backup_store(service: Service, target: Path, *, replace: bool = False) -> BackupReport:
    """Copy the store to ``target`` while the service may be running; an existing file only with ``replace``.
    SyndicationError for a PostgreSQL store (naming the ``pg_dump`` command) and for a target that exists."""
    if not backup.is_sqlite(service.engine):
        raise SyndicationError(
            "backup copies SQLite stores only; back this PostgreSQL store up with pg_dump (docs/operations.md,"
            f" 'Backups and restore'): {pg_dump_command(service.settings.database.url, target)}"
        )
    try:
        size = backup.backup_sqlite(service.engine, target, replace=replace)
    except FileExistsError:
        raise SyndicationError(f"{target} exists: give another file, or --force to replace it") from None
    return BackupReport(target, size)
