"""``webhooks``: the owner's outgoing webhooks: add (the secret is shown once), list, remove, attempts, deliver."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from syndication.cli.arguments import Commands, add_command, add_group, count, path, row_id
from syndication.cli.output import EXIT_FAILED, EXIT_OK, print_json
from syndication.errors import SyndicationError

if TYPE_CHECKING:
    from syndication.config import Settings

# The event types, for --help only (core.webhooks.EVENT_TYPES is the rule; a test holds the two equal).
EVENTS_HELP = (
    "subscriber.confirmed, subscriber.unsubscribed, subscriber.bounced, subscriber.complained, edition.approved,"
    " edition.sent, post.published"
)


def register(commands: Commands, common: argparse.ArgumentParser) -> None:
    """Declare ``webhooks add|list|remove|attempts|deliver``."""
    group = add_group(commands, "webhooks", "URLs told of events, signed (Standard Webhooks), retried", common)
    adding = add_command(group, "add", _add, "register a URL for some events; prints its new secret once", common)
    adding.add_argument("url", help="the http(s) URL each event is POSTed to")
    adding.add_argument("--events", required=True, metavar="A,B", help=f"comma-separated, of: {EVENTS_HELP}")
    adding.add_argument(
        "--secret-file", type=path, metavar="FILE", help="sign with the secret in FILE (whsec_ and base64 of 24 to"
        " 64 bytes) instead of a new one",
    )  # fmt: skip
    listing = add_command(group, "list", _list, "the endpoints, their events and deliveries (secrets masked)", common)
    listing.add_argument("--json", action="store_true", help="a JSON array")
    removing = add_command(group, "remove", _remove, "remove an endpoint, its deliveries and attempts", common)
    removing.add_argument("id", type=row_id, help="the endpoint's id (webhooks list)")
    showing = add_command(group, "attempts", _attempts, "an endpoint's last attempts, newest first", common)
    showing.add_argument("id", type=row_id, help="the endpoint's id (webhooks list)")
    showing.add_argument("--limit", type=count, default=20, metavar="N", help="at most N attempts (20)")
    showing.add_argument("--json", action="store_true", help="a JSON array")
    add_command(group, "deliver", _deliver, "post every due webhook delivery now, retries included", common)


def _add(args: argparse.Namespace, settings: Settings) -> int:
    from syndication.app.audit import command_line_actor
    from syndication.app.service import Service
    from syndication.app.webhooks import add_endpoint

    secret = None
    if args.secret_file is not None:
        try:
            secret = args.secret_file.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeError) as error:
            raise SyndicationError(f"{args.secret_file}: cannot read the secret ({error})") from None
    with Service.open(settings) as service:
        endpoint, made = add_endpoint(
            service, args.url, args.events.split(","), secret=secret, actor=command_line_actor()
        )
    print(f"webhook {endpoint.id}: {endpoint.url} ({', '.join(endpoint.events)})", file=sys.stderr)
    if made is not None:
        print("its secret, shown this once (receivers verify signatures with it):", file=sys.stderr)
        print(made)
    return EXIT_OK


def _list(args: argparse.Namespace, settings: Settings) -> int:
    from syndication.app.service import Service
    from syndication.app.webhooks import list_endpoints

    with Service.open(settings) as service:
        views = list_endpoints(service)
    if args.json:
        print_json([view.as_json() for view in views])
        return EXIT_OK
    for view in views:
        e = view.endpoint
        counts = ", ".join(f"{n} {status}" for status, n in sorted(view.deliveries.items())) or "no deliveries"
        state = "" if e.active else " (inactive)"
        print(f"{e.id}  {e.url}{state}  {','.join(e.events)}  secret {view.as_json()['secret']}  {counts}")
    return EXIT_OK


def _remove(args: argparse.Namespace, settings: Settings) -> int:
    from syndication.app.audit import command_line_actor
    from syndication.app.service import Service
    from syndication.app.webhooks import remove_endpoint

    with Service.open(settings) as service:
        remove_endpoint(service, args.id, actor=command_line_actor())
    print(f"webhook {args.id} removed", file=sys.stderr)
    return EXIT_OK


def _attempts(args: argparse.Namespace, settings: Settings) -> int:
    from syndication.app.service import Service
    from syndication.app.webhooks import endpoint_attempts

    with Service.open(settings) as service:
        _endpoint, attempts = endpoint_attempts(service, args.id, args.limit)
    if args.json:
        print_json([attempt.as_json() for attempt in attempts])
        return EXIT_OK
    for a in attempts:
        answer = "delivered" if a.delivered else "failed"
        code = f"HTTP {a.status_code}" if a.status_code is not None else "no answer"
        error = f"  {a.error}" if a.error and not a.delivered else ""
        print(f"{a.at:%Y-%m-%d %H:%M:%S} UTC  {a.event_type}  {a.event_id}  try {a.attempt}  {code}  {answer}{error}")
    return EXIT_OK


def _deliver(_args: argparse.Namespace, settings: Settings) -> int:
    from syndication.app.service import Service
    from syndication.app.webhooks import deliver_webhooks

    with Service.open(settings) as service:
        report = deliver_webhooks(service)
    for error in report.errors:
        print(error, file=sys.stderr)
    print(f"webhooks: {report.summary}", file=sys.stderr)
    return EXIT_FAILED if report.errors else EXIT_OK
