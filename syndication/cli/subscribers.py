"""The subscribers commands: ``subscribers add``, ``import``, ``list``, ``export`` and ``remove``."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from syndication.cli.arguments import Commands, Handler, add_command, add_group, path
from syndication.cli.output import EXIT_FAILED, EXIT_OK, EXIT_USAGE, print_json, say_error
from syndication.cli.progress import progress_for
from syndication.core.models import CADENCES, SUBSCRIBER_STATUSES
from syndication.errors import SyndicationError

if TYPE_CHECKING:
    from syndication.config import Settings


def register(commands: Commands, common: argparse.ArgumentParser) -> None:
    """Declare ``subscribers add|import|list|export|remove``."""
    subscriber_commands = add_group(commands, "subscribers", "manage the people who receive digests", common)

    def command(name: str, handler: Handler, help_text: str) -> argparse.ArgumentParser:
        return add_command(subscriber_commands, name, handler, help_text, common)

    adding = command("add", _subscribers_add, "add a subscriber (or change one with --update)")
    adding.description = (
        "Add a subscriber. Without --confirmed they are pending and are sent a confirmation email whose link (valid"
        " 7 days) makes them active; only active subscribers get digests. An address that exists already is left as"
        " it is (exit 1) unless --update (change the preferences given) or --confirmed (a pending address becomes"
        " active); a pending one is sent its confirmation email again. An unsubscribed, bounced or complained"
        " address is never made active again by --confirmed alone: that takes --confirmed --reactivate --reason"
        " TEXT, which records who did it and why (the person can also subscribe again through the subscribe form)."
        " A removed address is refused unless --confirmed --resubscribe."
    )
    adding.add_argument("email", help="their email address")
    adding.add_argument("--name", metavar="NAME", help="their name, on one line")
    adding.add_argument("--themes", metavar="A,B", help="theme slugs to follow (default or '': every theme)")
    adding.add_argument("--cadence", choices=CADENCES, help="how often they get a digest (default: weekly)")
    adding.add_argument("--language", metavar="L", help="language of their digests (default: site.language)")
    adding.add_argument(
        "--confirmed", action="store_true", help="their consent is confirmed: active at once, no confirmation email"
    )
    adding.add_argument("--update", action="store_true", help="if the address exists, change the preferences given")
    adding.add_argument(
        "--resubscribe", action="store_true", help="with --confirmed: add again an address that was removed"
    )
    _reactivation_arguments(adding, "make an unsubscribed, bounced or complained address active again")
    importing_subscribers = command("import", _subscribers_import, "add the subscribers of a CSV file")
    importing_subscribers.description = (
        "Add the subscribers of a CSV file with a header row naming columns among email,name,themes,cadence,language,"
        "reads,language_choice,status,consent_at,consent_method,consent_source (only email is required; themes"
        " separated by ';' or ','; an empty themes cell means every theme); what 'subscribers export' writes imports"
        " as it is (its id and dates are ignored). A row's status is the most it becomes: an unsubscribed, bounced"
        " or complained row is added so and never makes anyone active, a pending one is sent a confirmation email."
        " With --confirmed a new subscriber's consent is the row's consent_* cells when given. Each row"
        " is checked on its own: bad rows are reported with their line number and the good ones are kept (exit 1 if"
        " any row was refused). New subscribers are pending and sent a confirmation email, or active with"
        " --confirmed. Existing subscribers are left as they are unless --update (the row's cells replace their"
        " preferences; empty cadence or language cells keep theirs) or --confirmed (pending ones become active)."
        " Unsubscribed, bounced or complained subscribers are refused unless --confirmed --reactivate --reason TEXT,"
        " which records who did it and why. Removed addresses are always refused."
    )
    importing_subscribers.add_argument("file", type=path, help="CSV file, UTF-8, with a header row")
    importing_subscribers.add_argument(
        "--confirmed", action="store_true", help="every row's consent is confirmed: active at once, no emails"
    )
    importing_subscribers.add_argument(
        "--update", action="store_true", help="change the preferences of existing subscribers to the file's"
    )
    _reactivation_arguments(
        importing_subscribers, "make the file's unsubscribed, bounced or complained subscribers active again"
    )
    subscriber_listing = command("list", _subscribers_list, "list subscribers, oldest first")
    subscriber_listing.add_argument("--status", choices=SUBSCRIBER_STATUSES, help="only subscribers of this status")
    subscriber_listing.add_argument("--cadence", choices=CADENCES, help="only subscribers of this cadence")
    subscriber_listing.add_argument("--json", action="store_true", help="a JSON array")
    command("export", _subscribers_export, "write everything held on every subscriber as CSV")
    removing = command(
        "remove", _subscribers_remove, "erase a subscriber and keep their address from being added again"
    )
    removing.description = (
        "Erase everything held on an address (their deliveries stay, without them) and keep only its SHA-256, so"
        " that no import or add brings it back unless 'add --confirmed --resubscribe'. Removing an address that is"
        " not subscribed suppresses it all the same."
    )
    removing.add_argument("email", help="their email address")


def _reactivation_arguments(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument(
        "--reactivate", action="store_true", help=f"with --confirmed and --reason: {what} (their consent is renewed)"
    )
    parser.add_argument(
        "--reason", metavar="TEXT", help="with --reactivate: why (recorded in their consent with your user name)"
    )


def _reactivation_refused(args: argparse.Namespace) -> bool:
    """Say what is wrong with --reactivate/--reason, if anything; True when the command must stop (exit 2)."""
    problem = None
    if args.reactivate and not args.confirmed:
        problem = "--reactivate needs --confirmed: only their renewed consent brings them back"
    elif args.reactivate and not (args.reason or "").strip():
        problem = "--reactivate needs --reason TEXT: why their renewed consent is known (it is recorded)"
    elif args.reason is not None and not args.reactivate:
        problem = "--reason goes with --reactivate"
    if problem is not None:
        say_error(SyndicationError(problem))
    return problem is not None


def _subscribers_add(args: argparse.Namespace, settings: Settings) -> int:
    from syndication.app.service import Service
    from syndication.app.subscribers import add_subscriber

    if args.resubscribe and not args.confirmed:
        say_error(SyndicationError("--resubscribe needs --confirmed: only their renewed consent brings them back"))
        return EXIT_USAGE
    if _reactivation_refused(args):
        return EXIT_USAGE
    with Service.open(settings) as service:
        outcome = add_subscriber(
            service,
            args.email,
            name=args.name,
            themes=args.themes,
            cadence=args.cadence,
            language=args.language,
            confirmed=args.confirmed,
            update=args.update,
            resubscribe=args.resubscribe,
            reactivate=args.reactivate,
            reason=args.reason,
        )
    subscriber = outcome.subscriber
    email, status = subscriber.email, subscriber.status
    said = {
        "added": f"added {email} ({status})",
        "resubscribed": f"added {email} again ({status}); its suppression is lifted",
        "confirmed": f"confirmed {email} ({status})",
        "reactivated": f"{email} is {status} again",
        "updated": f"updated the preferences of {email} ({status})",
        "unchanged": f"{email} already has these preferences ({status})",
        "exists": f"{email} is already subscribed ({status}); nothing changed (--update changes preferences)",
    }[outcome.action]
    if outcome.action == "exists" and status == "pending":
        said = f"{email} is already subscribed and pending (not confirmed yet)"
    if outcome.confirmation_sent:
        said += "; confirmation email sent" + (" again" if outcome.action != "added" else "")
    print(said)
    if outcome.confirmation_error:
        print(f"syndication: error: the confirmation email to {email} was not sent: {outcome.confirmation_error}"
              " (add the address again to resend it)", file=sys.stderr)  # fmt: skip
        return EXIT_FAILED
    return EXIT_FAILED if outcome.action == "exists" and not outcome.confirmation_sent else EXIT_OK


def _subscribers_import(args: argparse.Namespace, settings: Settings) -> int:
    from syndication.app.service import Service
    from syndication.app.subscribers import import_subscribers

    if _reactivation_refused(args):
        return EXIT_USAGE
    with Service.open(settings) as service:
        report = import_subscribers(
            service,
            args.file,
            confirmed=args.confirmed,
            update=args.update,
            reactivate=args.reactivate,
            reason=args.reason,
            progress=progress_for(args),
        )
    for notice in report.refused:
        print(f"refused: {notice}", file=sys.stderr)
    for notice in report.send_failures:
        print(f"not sent: {notice}", file=sys.stderr)
    print(
        f"{report.source}: {report.read} rows read, {report.added} added, {report.activated} activated,"
        f" {report.updated} updated, {report.unchanged} unchanged, {len(report.refused)} refused;"
        f" {report.confirmations_sent} confirmation emails sent"
        + (f", {len(report.send_failures)} not sent" if report.send_failures else "")
    )
    return EXIT_OK if report.ok else EXIT_FAILED


def _subscribers_list(args: argparse.Namespace, settings: Settings) -> int:
    from syndication.app.service import Service
    from syndication.app.subscribers import list_subscribers

    with Service.open(settings) as service:
        found = list_subscribers(service, status=args.status, cadence=args.cadence)
    if args.json:
        print_json([
            {"id": s.id, "email": s.email, "name": s.name, "language": s.language, "themes": s.themes,
             "cadence": s.cadence, "status": s.status, "consent": s.consent, "created_at": s.created_at,
             "confirmed_at": s.confirmed_at, "reads": s.reads, "language_choice": s.language_choice}
            for s in found
        ])  # fmt: skip
        return EXIT_OK
    for s in found:
        themes = ",".join(s.themes) if s.themes is not None else "(every theme)"
        print(f"{s.id:>6}  {s.email}  {s.status}  {s.cadence}  {s.language}  {themes}  {s.name}".rstrip())
    print(f"{len(found)} subscriber{'s' if len(found) != 1 else ''}", file=sys.stderr)
    return EXIT_OK


def _subscribers_export(args: argparse.Namespace, settings: Settings) -> int:
    from syndication.app.service import Service
    from syndication.app.subscribers import export_subscribers

    with Service.open(settings) as service:
        count = export_subscribers(service, sys.stdout)
    sys.stdout.flush()
    print(f"{count} subscriber{'s' if count != 1 else ''} exported", file=sys.stderr)
    return EXIT_OK


def _subscribers_remove(args: argparse.Namespace, settings: Settings) -> int:
    from syndication.app.audit import command_line_actor
    from syndication.app.service import Service
    from syndication.app.subscribers import normalise_email, remove_subscriber

    with Service.open(settings) as service:
        done = remove_subscriber(service, args.email, actor=command_line_actor())
    email = normalise_email(args.email)
    print({
        "removed": f"removed {email}: erased, and suppressed so that it is not added again",
        "suppressed": f"{email} was not subscribed; suppressed so that it is not added",
        "already removed": f"{email} was removed before; nothing else is held on it",
    }[done])  # fmt: skip
    return EXIT_OK
