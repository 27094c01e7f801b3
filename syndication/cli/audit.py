"""``audit``: who did what, and when (the audit log), newest first, as lines or JSON."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from syndication.cli.arguments import Commands, add_command, timestamp
from syndication.cli.output import EXIT_OK, print_json

if TYPE_CHECKING:
    from syndication.config import Settings


def register(commands: Commands, common: argparse.ArgumentParser) -> None:
    """Declare ``audit``."""
    auditing = add_command(
        commands, "audit", _audit, "who approved, paused, cancelled or edited an edition, erased a subscriber...",
        common,
    )  # fmt: skip
    auditing.add_argument("--since", type=timestamp, metavar="DATE", help="only events at or after DATE (ISO 8601)")
    auditing.add_argument("--limit", type=_limit, default=50, metavar="N", help="at most N events (1 to 1000; 50)")
    auditing.add_argument("--json", action="store_true", help="a JSON array, as /editor/audit.json gives it")


def _limit(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number") from None
    if not 1 <= number <= 1000:
        raise argparse.ArgumentTypeError(f"a limit is 1 to 1,000, not {value}")
    return number


def _audit(args: argparse.Namespace, settings: Settings) -> int:
    import json

    from syndication.app.audit import audit_events
    from syndication.app.service import Service

    with Service.open(settings) as service:
        events = audit_events(service, since=args.since, limit=args.limit)
    if args.json:
        print_json([event.as_json() for event in events])
        return EXIT_OK
    for event in events:
        subject = f"{event.subject_kind} {event.subject_id}" if event.subject_id is not None else event.subject_kind
        details = json.dumps(event.details, ensure_ascii=False, sort_keys=True) if event.details else ""
        print(f"{event.at:%Y-%m-%d %H:%M:%S} UTC  {event.actor}  {event.action}  {subject}  {details}".rstrip())
    return EXIT_OK
