"""The upkeep commands: ``prune`` removes what ``[retention]`` no longer keeps, ``backup`` copies the store."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from syndication.cli.arguments import Commands, add_command, path
from syndication.cli.output import EXIT_OK

if TYPE_CHECKING:
    from syndication.config import Settings


def register(commands: Commands, common: argparse.ArgumentParser) -> None:
    """Declare ``prune`` and ``backup``."""
    pruning = add_command(
        commands, "prune", _prune, "remove old finished deliveries and attempts as [retention] says", common
    )
    pruning.add_argument("--dry-run", action="store_true", help="say what would be removed, remove nothing")

    backing_up = add_command(
        commands, "backup", _backup, "copy the SQLite store to FILE while the service runs (PostgreSQL: pg_dump)",
        common,
    )  # fmt: skip
    backing_up.add_argument("file", type=path, metavar="FILE", help="where the copy goes")
    backing_up.add_argument("--force", action="store_true", help="replace FILE if it exists")


def _prune(args: argparse.Namespace, settings: Settings) -> int:
    from syndication.app.maintenance import prune
    from syndication.app.service import Service

    with Service.open(settings) as service:
        report = prune(service, dry_run=args.dry_run)
    verb = "would remove" if report.dry_run else "removed"
    if report.deliveries_before is None:
        print("deliveries, delivery_attempts: kept for ever ([retention] deliveries_days = 0)")
    else:
        print(f"deliveries: {verb} {report.deliveries} (of {report.editions} finished editions whose window ended"
              f" before {report.deliveries_before:%Y-%m-%d %H:%M} UTC)")  # fmt: skip
        print(f"delivery_attempts: {verb} {report.attempts}")
    if report.inbound_before is None:
        print("inbound_messages: kept for ever ([retention] inbound_raw_days = 0)")
    else:
        print(f"inbound_messages: {verb} the kept bytes of {report.inbound_bytes} received before"
              f" {report.inbound_before:%Y-%m-%d %H:%M} UTC (their records stay)")  # fmt: skip
    if report.audit_before is None:
        print("audit_events: kept for ever ([retention] audit_days = 0)")
    else:
        print(f"audit_events: {verb} {report.audit_events} recorded before {report.audit_before:%Y-%m-%d %H:%M} UTC")
    if report.webhooks_before is None:
        print("webhook_events, webhook_deliveries, webhook_attempts: kept for ever ([retention] webhooks_days = 0)")
    else:
        print(f"webhook_events: {verb} {report.webhook_events} over and recorded before"
              f" {report.webhooks_before:%Y-%m-%d %H:%M} UTC, with {report.webhook_deliveries} deliveries and"
              f" {report.webhook_attempts} attempts")  # fmt: skip
    return EXIT_OK


def _backup(args: argparse.Namespace, settings: Settings) -> int:
    from syndication.app.maintenance import backup_store
    from syndication.app.service import Service

    with Service.open(settings) as service:
        report = backup_store(service, args.file, replace=args.force)
    print(f"backed up to {report.path} ({report.size:,} bytes)")
    return EXIT_OK
