"""The digest commands: ``digest preview`` renders one without sending, ``digest send`` makes a window's edition
and sends it, ``deliver`` sends whatever is due.

When the relay refuses our side (the sender, the content, relaying, the credentials, its own trouble), the
breaker trips or the relay is slower than the timeout, the edition is paused: ``digest send`` and ``deliver``
then print one error line per paused edition, naming the reason, and exit 1.

SIGTERM or Ctrl-C while they send stops the sender cleanly: the messages in flight finish and are recorded, the
claims not tried go back to the queue at once, the summary is printed, and the exit status is 143 (130).
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from syndication.cli.arguments import Commands, add_command, add_group, path, timestamp
from syndication.cli.output import (
    EXIT_FAILED,
    EXIT_OK,
    UsageError,
    print_drain,
    say_error,
    stopping_on_signals,
)
from syndication.cli.progress import progress_for
from syndication.core.models import CADENCES, EditionStatus
from syndication.errors import SyndicationError

if TYPE_CHECKING:
    from syndication.config import Settings


def register(commands: Commands, common: argparse.ArgumentParser) -> None:
    """Declare ``digest preview``, ``digest send`` and ``deliver``."""
    digest_commands = add_group(commands, "digest", "preview (and later send) the email digests", common)
    preview = add_command(
        digest_commands, "preview", _digest_preview, "render a digest without sending anything", common
    )
    preview.add_argument("--themes", metavar="A,B", help="the followed themes (default: everything)")
    preview.add_argument(
        "--subscriber",
        metavar="EMAIL",
        help="preview as this subscriber sees it (their themes, language and cadence)",
    )
    preview.add_argument(
        "--cadence",
        choices=CADENCES,
        help="preview this cadence's edition of the window: what it holds if it was made, else what it would hold"
        " now, posts gathered after their own window's edition included (default with --subscriber: theirs)",
    )
    preview.add_argument(
        "--since",
        metavar="ISO",
        type=timestamp,
        help="window start (default: where the cadence's last edition ended, else 7 days ago)",
    )
    preview.add_argument("--until", metavar="ISO", type=timestamp, help="window end (default: now)")
    preview.add_argument("--language", metavar="L", help="the reader's language (default: site.language)")
    preview.add_argument("--intro", metavar="TEXT", help="an editor's note at the top")
    preview.add_argument("--format", choices=("html", "text", "eml"), default="html", help="what to write")
    preview.add_argument("--out", type=path, metavar="FILE", help="write to FILE (default: standard output)")
    preview.add_argument("--open", action="store_true", help="open the written file in a browser or mail program")

    send = add_command(digest_commands, "send", _digest_send, "create the edition of a window and deliver it", common)
    send.add_argument("--cadence", required=True, choices=CADENCES, help="which digest")
    send.add_argument(
        "--since", metavar="ISO", type=timestamp, help="window start (default: the fire time before the last)"
    )
    send.add_argument(
        "--until", metavar="ISO", type=timestamp, help="window end (default: the cadence's last fire time)"
    )
    send.add_argument("--dry-run", action="store_true", help="send nothing; report what would be sent")
    send.add_argument(
        "--approve",
        action="store_true",
        help="with [digest] require_approval, approve the edition as the operator and send it at once",
    )

    add_command(
        commands, "deliver", _deliver, "send every due delivery, retries included, without creating an edition", common
    )


def _digest_preview(args: argparse.Namespace, settings: Settings) -> int:
    from datetime import timedelta

    from syndication.app.digests import preview_digest
    from syndication.app.jobs import last_until
    from syndication.app.service import Service
    from syndication.app.subscribers import parse_themes

    try:  # slugs or aliases; None: everything; an unknown one is a wrong argument (exit 2)
        followed = parse_themes(settings, args.themes) if args.themes else None
    except SyndicationError as error:
        raise UsageError(f"--themes: {error}") from None
    with Service.open(settings) as service:
        if args.subscriber:
            from syndication.app.subscribers import find_subscriber

            subscriber = find_subscriber(service, args.subscriber)
            if subscriber is None:
                raise SyndicationError(f"no subscriber {args.subscriber!r} (see 'syndication subscribers list')")
            followed = subscriber.themes
            args.language = args.language or subscriber.language
            args.cadence = args.cadence or subscriber.cadence
        until = args.until or service.clock()
        # A cadence's next edition starts where its last one ended.
        since = args.since or (last_until(service, args.cadence) if args.cadence else None) or until - timedelta(days=7)
        if since >= until:
            raise SyndicationError(f"--since ({since.isoformat()}) must be before --until ({until.isoformat()})")
        preview = preview_digest(
            service, since=since, until=until, followed=followed, language=args.language, intro=args.intro,
            cadence=args.cadence or "preview",
        )  # fmt: skip
    if preview is None:
        what = f"the {args.cadence} edition holds nothing new" if args.cadence else "nothing was published"
        print(f"no digest: {what} between {since.isoformat()} and {until.isoformat()}"
              + (f" on {', '.join(sorted(followed))}" if followed else ""), file=sys.stderr)  # fmt: skip
        return EXIT_OK
    body = {"html": preview.email.html.encode("utf-8"), "text": preview.email.text.encode("utf-8"),
            "eml": preview.message}[args.format]  # fmt: skip
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_bytes(body)
    else:
        sys.stdout.buffer.write(body)
        sys.stdout.flush()
    digest = preview.digest
    # Late posts: published before the window, gathered (or out of embargo) after its cadence's edition was made.
    late = f", {digest.late} late (published before {since.isoformat()})" if digest.late else ""
    print(
        f"digest: {preview.email.subject!r}: {digest.post_count} posts in {len(digest.sections)} sections"
        f" ({digest.shown_count} shown, {digest.held_back_count} held back){late},"
        f" HTML {len(preview.email.html.encode('utf-8')):,} bytes" + (f", written to {args.out}" if args.out else ""),
        file=sys.stderr,
    )
    for problem in preview.email.problems:
        print(f"warning: {problem}", file=sys.stderr)
    if args.open and args.out:
        import webbrowser

        webbrowser.open(args.out.resolve().as_uri())
    return EXIT_OK


def _digest_send(args: argparse.Namespace, settings: Settings) -> int:
    from syndication.app.audit import command_line_actor
    from syndication.app.editions import (
        check_sending,
        default_window,
        deliver,
        notify_editors,
        open_sender,
        plan_edition,
    )
    from syndication.app.service import Service

    if not args.dry_run:
        check_sending(settings)  # before any edition is made
    with Service.open(settings) as service:
        since, until = default_window(service, args.cadence)
        since, until = args.since or since, args.until or until
        draft = settings.digest.require_approval and not args.approve
        plan = plan_edition(
            service,
            args.cadence,
            since,
            until,
            dry_run=args.dry_run,
            draft=draft,
            approve=args.approve,
            actor=command_line_actor(),
        )
        window = f"{since.isoformat()} to {until.isoformat()}"
        if args.dry_run:
            state = f"edition {plan.edition.id} exists ({plan.edition.status})" if plan.edition else "no edition yet"
            print(
                f"dry run, {args.cadence} {window}: {state}; {plan.recipients} active subscribers,"
                f" {plan.recipients - plan.nothing_new} would get a digest, {plan.nothing_new} have nothing new;"
                f" {len(plan.variants)} variants; up to {plan.posts} posts; nothing sent"
            )
            return EXIT_OK
        edition = plan.edition
        assert edition is not None
        if plan.empty:
            print(f"edition {edition.id} ({args.cadence}, {window}): nothing new in this window;"
                  " nothing to send, nothing published")  # fmt: skip
            return EXIT_OK
        made = "created" if plan.created else "already existed"
        print(f"edition {edition.id} ({args.cadence}, {window}) {made}: {plan.queued} deliveries queued,"
              f" {plan.nothing_new} subscribers with nothing new")  # fmt: skip
        if plan.approved:
            print(f"edition {edition.id} approved by the operator (--approve)")
        if plan.draft:
            if plan.created:
                for problem in notify_editors(service, plan):
                    say_error(SyndicationError(f"could not email an editor about draft {edition.id}: {problem}"))
            print(f"edition {edition.id} is a draft: approve it with 'syndication editions approve {edition.id}'"
                  " or the editor's page")  # fmt: skip
            return EXIT_OK
        if edition.status in (EditionStatus.SENT, EditionStatus.CANCELLED):
            print(f"edition {edition.id} is {edition.status}: nothing more of it is sent")
            return EXIT_OK
        sender = open_sender(service)
        with stopping_on_signals(sender.stop) as stopped:
            report = deliver(service, edition_id=edition.id, sender=sender, progress=progress_for(args))
    status = _print_paused(report.paused_editions, print_drain(report))
    stopped.raise_it()
    return status


def _deliver(args: argparse.Namespace, settings: Settings) -> int:
    from syndication.app.editions import deliver, open_sender
    from syndication.app.service import Service

    with Service.open(settings) as service:
        sender = open_sender(service)
        with stopping_on_signals(sender.stop) as stopped:
            report = deliver(service, sender=sender, progress=progress_for(args))
    status = _print_paused(report.paused_editions, print_drain(report))
    stopped.raise_it()
    return status


def _print_paused(paused: dict[int, str], status: int) -> int:
    """One error line per edition the run paused, naming the reason; the exit status is EXIT_FAILED if any."""
    for edition_id, reason in paused.items():
        say_error(
            SyndicationError(
                f"edition {edition_id} paused, no subscriber marked: {reason}"
                f" (resume it with 'syndication editions resume {edition_id}' once this is mended)"
            )
        )
    return EXIT_FAILED if paused else status
