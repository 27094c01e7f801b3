"""The editions commands: ``editions list`` shows the newest editions (a paused one with the reason the sender
paused it for, a sent one with what was given up), each followed, indented to its cadence, by one line per reason
its deliveries did not go (yet) for, with how many ("9 deferred: temporary: cannot connect to ...");
``editions approve|pause|resume|cancel`` changes one as the edition state machine allows, and ``editions retry ID
--poisoned --failed --unknown`` re-queues the deliveries an operator has mended (once, with the same Message-ID)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from syndication.cli.arguments import Commands, add_command, add_group, row_id
from syndication.cli.output import EXIT_OK, EXIT_USAGE, json_ready, print_json, print_reasons, say_error
from syndication.errors import SyndicationError

if TYPE_CHECKING:
    from syndication.config import Settings

_ACTIONS = (
    ("pause", "stop sending an edition for now"),
    ("resume", "send a paused edition again"),
    ("cancel", "never send the rest of an edition"),
    ("approve", "send a draft edition"),
)


def register(commands: Commands, common: argparse.ArgumentParser) -> None:
    """Declare ``editions list`` and one ``editions ACTION ID`` per action on an edition."""
    edition_commands = add_group(commands, "editions", "list and control editions", common)
    listing = add_command(
        edition_commands, "list", _editions_list, "the newest editions with their delivery counts", common
    )
    listing.add_argument(
        "--json", action="store_true", help="a JSON array: each edition with its deliveries per status and reasons"
    )
    for action, text in _ACTIONS:
        controlled = add_command(edition_commands, action, _edition_control, text, common)
        controlled.add_argument("edition_id", type=row_id, metavar="ID", help="the edition (see 'editions list')")
        controlled.set_defaults(action=action)
    retry = add_command(
        edition_commands, "retry", _edition_retry, "re-queue deliveries given up on, once mended (same Message-ID)",
        common,
    )  # fmt: skip
    retry.add_argument("edition_id", type=row_id, metavar="ID", help="the edition (see 'editions list')")
    retry.add_argument("--poisoned", action="store_true", help="those set aside because the sender died sending them")
    retry.add_argument(
        "--failed", action="store_true", help="those that failed (refused, or retried past the deadline)"
    )
    retry.add_argument("--unknown", action="store_true", help="those the relay never answered for (may have gone)")


def _editions_list(args: argparse.Namespace, settings: Settings) -> int:
    from syndication.app.editions import list_editions
    from syndication.app.service import Service

    with Service.open(settings) as service:
        reports = list_editions(service)
    if args.json:
        print_json([json_ready(r.edition) | {"deliveries": r.deliveries, "reasons": r.reasons} for r in reports])
        return EXIT_OK
    for report in reports:
        edition = report.edition
        summary = ", ".join(f"{count} {status}" for status, count in sorted(report.deliveries.items()))
        window = f"{edition.since:%Y-%m-%d %H:%M} .. {edition.until:%Y-%m-%d %H:%M}"
        reason = f"  ({edition.reason})" if edition.reason else ""
        print(
            f"{edition.id:>5}  {edition.cadence:<8} {window}  {edition.status:<9} {summary or 'no deliveries'}{reason}"
        )
        print_reasons(report.reasons, indent=7)  # under the cadence: deeper than any edition's id
    return EXIT_OK


def _edition_control(args: argparse.Namespace, settings: Settings) -> int:
    from syndication.app.audit import command_line_actor
    from syndication.app.editions import NoSuchEdition, change_edition
    from syndication.app.service import Service
    from syndication.core.editions import EditionAction

    with Service.open(settings) as service:
        try:
            edition, after = change_edition(
                service, args.edition_id, EditionAction(args.action), actor=command_line_actor()
            )
        except NoSuchEdition:
            raise SyndicationError(f"no edition {args.edition_id} (see 'syndication editions list')") from None
    print(f"edition {args.edition_id}: {edition.status} -> {after}")
    return EXIT_OK


def _edition_retry(args: argparse.Namespace, settings: Settings) -> int:
    from syndication.app.audit import command_line_actor
    from syndication.app.editions import NoSuchEdition, retry_deliveries
    from syndication.app.service import Service
    from syndication.core.models import DeliveryStatus

    chosen = [status for status in (DeliveryStatus.POISONED, DeliveryStatus.FAILED, DeliveryStatus.UNKNOWN)
              if getattr(args, str(status))]  # fmt: skip
    if not chosen:
        say_error(SyndicationError("say which deliveries to re-queue: --poisoned, --failed and/or --unknown"))
        return EXIT_USAGE
    with Service.open(settings) as service:
        try:
            report = retry_deliveries(service, args.edition_id, chosen, actor=command_line_actor())
        except NoSuchEdition:
            raise SyndicationError(f"no edition {args.edition_id} (see 'syndication editions list')") from None
    which = ", ".join(f"{count} {status}" for status, count in sorted(report.requeued.items()))
    print(f"edition {args.edition_id}: {report.total} deliveries re-queued" + (f" ({which})" if which else ""))
    if report.status != report.edition.status:
        print(f"edition {args.edition_id}: {report.edition.status} -> {report.status}")
    elif report.total and report.status == "paused":
        print(f"edition {args.edition_id} is paused: they go once it is resumed"
              f" ('syndication editions resume {args.edition_id}')")  # fmt: skip
    return EXIT_OK
