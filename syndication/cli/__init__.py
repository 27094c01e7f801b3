"""The ``syndication`` command: thin subcommands that call the pipeline and print what it did.

Exit status: 0 when all went well, 1 when something was refused or failed, 2 for a wrong configuration
or wrong arguments.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from syndication.config import Settings, config_path_from, load_settings
from syndication.errors import ConfigError, SyndicationError

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2

Handler = Callable[[argparse.Namespace, Settings], int]


class _Terminated(BaseException):
    """SIGTERM arrived (``timeout``, ``systemctl stop``): unwind as Ctrl-C does, so that open transactions roll
    back and worker processes are shut down, instead of dying at once and leaving them behind."""


def _terminate(_signum: int, _frame: object) -> None:
    raise _Terminated


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    previous = signal.signal(signal.SIGTERM, _terminate)  # `run` and `serve` put their own in place
    try:
        settings = load_settings(config_path_from(getattr(args, "config", None)))
        status: int = args.handler(args, settings)
        return status
    except _Terminated:
        print("syndication: terminated", file=sys.stderr)
        return 143  # 128 + SIGTERM, as a shell reports it
    except ConfigError as error:
        _say_error(error)
        return EXIT_USAGE
    except SyndicationError as error:
        _say_error(error)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("syndication: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # Whoever read our output stopped (``| head``): not an error to report. Later writes (the interpreter
        # flushing stdout at exit) go nowhere instead of raising again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # what a shell reports for a process that SIGPIPE ended
    except OSError as error:  # a file or folder the command was given, or the configuration names
        where = f"{error.filename}: " if error.filename is not None else ""
        _say_error(Exception(f"{where}{error.strerror or error}"))
        return EXIT_FAILED
    except Exception as error:  # the last guard: a user sees one line, a developer can ask for the traceback
        if os.environ.get("SYNDICATION_DEBUG"):
            raise
        print(
            f"syndication: internal error: {type(error).__name__}: {error} (set SYNDICATION_DEBUG=1 for the traceback)",
            file=sys.stderr,
        )
        return EXIT_FAILED
    finally:
        signal.signal(signal.SIGTERM, previous)


def _say_error(error: Exception) -> None:
    print(f"syndication: error: {error}", file=sys.stderr)


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config",
        metavar="PATH",
        default=argparse.SUPPRESS,
        help="configuration file (default: $SYNDICATION_CONFIG, else ./config.toml)",
    )
    parser = argparse.ArgumentParser(
        prog="syndication",
        description="Gather posts, publish feeds and send themed email digests.",
        parents=[common],
    )
    parser.set_defaults(handler=None)  # not config: parents share one --config action and its default
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")

    def command(
        name: str,
        handler: Handler,
        help_text: str,
        into: argparse._SubParsersAction[argparse.ArgumentParser] = commands,
    ) -> argparse.ArgumentParser:
        sub = into.add_parser(name, help=help_text, description=help_text, parents=[common])
        sub.set_defaults(handler=handler)
        return sub

    command("init", _init, "create the store, or upgrade it to this version's schema")

    importing = command("import", _import, "import one JSON Lines file of posts")
    importing.add_argument("file", type=_path, help="JSON Lines file, one post per line")

    gathering = command("gather", _gather, "pull new posts from every configured source")
    gathering.add_argument("--source", action="append", metavar="NAME", help="only this source (repeatable)")

    posts = commands.add_parser("posts", help="show stored posts", parents=[common])
    post_commands = posts.add_subparsers(title="commands", metavar="COMMAND")
    listing = command("list", _posts_list, "list published posts, newest first", post_commands)
    listing.add_argument("--theme", metavar="SLUG", help="only posts on this theme")
    listing.add_argument("--region", metavar="SLUG", help="only posts about this region")
    listing.add_argument("--since", metavar="ISO", type=_timestamp, help="only posts published after this")
    listing.add_argument("--limit", type=_count, metavar="N", help="at most N posts")
    listing.add_argument("--json", action="store_true", help="a JSON array in the JSON Lines field names")

    feeds = commands.add_parser("feeds", help="build the RSS, Atom and JSON feeds", parents=[common])
    feed_commands = feeds.add_subparsers(title="commands", metavar="COMMAND")
    building = command("build", _feeds_build, "write every feed that changed (or --full: all of them)", feed_commands)
    building.add_argument("--out", type=_path, metavar="DIR", help="folder to write to (default: [feeds] output_dir)")
    building.add_argument("--full", action="store_true", help="rebuild every document, archive pages included")

    serving = command("serve", _serve, "serve the feeds and the web pages over HTTP")
    serving.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    serving.add_argument("--port", type=_port, default=8000, help="port to listen on (default 8000)")

    running = command("run", _run, "run the service: scheduled gathering, feeds, editions and sending, and the web app")
    running.add_argument("--no-web", action="store_true", help="do not serve the web app from this process")
    running.add_argument("--host", default="127.0.0.1", help="address the web app listens on (default 127.0.0.1)")
    running.add_argument("--port", type=_port, default=8000, help="port the web app listens on (default 8000)")

    command("status", _status, "show each scheduled job's last and next run, the queue and the last editions")

    digest = commands.add_parser("digest", help="preview (and later send) the email digests", parents=[common])
    digest_commands = digest.add_subparsers(title="commands", metavar="COMMAND")
    preview = command("preview", _digest_preview, "render a digest without sending anything", digest_commands)
    preview.add_argument("--themes", metavar="A,B", help="the followed themes (default: everything)")
    preview.add_argument(
        "--subscriber", metavar="EMAIL", help="preview as this subscriber sees it (their themes and language)"
    )
    preview.add_argument("--since", metavar="ISO", type=_timestamp, help="window start (default: 7 days ago)")
    preview.add_argument("--until", metavar="ISO", type=_timestamp, help="window end (default: now)")
    preview.add_argument("--language", metavar="L", help="the reader's language (default: site.language)")
    preview.add_argument("--intro", metavar="TEXT", help="an editor's note at the top")
    preview.add_argument("--format", choices=("html", "text", "eml"), default="html", help="what to write")
    preview.add_argument("--out", type=_path, metavar="FILE", help="write to FILE (default: standard output)")
    preview.add_argument("--open", action="store_true", help="open the written file in a browser or mail program")

    send = command("send", _digest_send, "create the edition of a window and deliver it", digest_commands)
    send.add_argument("--cadence", required=True, choices=("daily", "weekly", "monthly"), help="which digest")
    send.add_argument(
        "--since", metavar="ISO", type=_timestamp, help="window start (default: the fire time before the last)"
    )
    send.add_argument(
        "--until", metavar="ISO", type=_timestamp, help="window end (default: the cadence's last fire time)"
    )
    send.add_argument("--dry-run", action="store_true", help="send nothing; report what would be sent")

    command("deliver", _deliver, "send every due delivery, retries included, without creating an edition")

    sink = command("mail-sink", _mail_sink, "a local SMTP server keeping every message as an .eml file (demo)")
    sink.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    sink.add_argument("--port", type=_port, default=8025, help="port to listen on (default 8025)")
    sink.add_argument("--outbox", type=_path, default=Path("var/outbox"), help="folder for the messages")

    editions = commands.add_parser("editions", help="list and control editions", parents=[common])
    edition_commands = editions.add_subparsers(title="commands", metavar="COMMAND")
    command("list", _editions_list, "the newest editions with their delivery counts", edition_commands)
    for action, text in (
        ("pause", "stop sending an edition for now"),
        ("resume", "send a paused edition again"),
        ("cancel", "never send the rest of an edition"),
        ("approve", "send a draft edition"),
    ):
        controlled = command(action, _edition_control, text, edition_commands)
        controlled.add_argument("edition_id", type=_row_id, metavar="ID", help="the edition (see 'editions list')")
        controlled.set_defaults(action=action)

    themes = commands.add_parser("themes", help="show configured themes", parents=[common])
    theme_commands = themes.add_subparsers(title="commands", metavar="COMMAND")
    theme_listing = command("list", _themes_list, "list the configured themes with their post counts", theme_commands)
    theme_listing.add_argument("--json", action="store_true", help="a JSON array")

    from syndication.core.models import CADENCES, SUBSCRIBER_STATUSES

    subscribers = commands.add_parser("subscribers", help="manage the people who receive digests", parents=[common])
    subscriber_commands = subscribers.add_subparsers(title="commands", metavar="COMMAND")
    adding = command("add", _subscribers_add, "add a subscriber (or change one with --update)", subscriber_commands)
    adding.description = (
        "Add a subscriber. Without --confirmed they are pending and are sent a confirmation email whose link (valid"
        " 7 days) makes them active; only active subscribers get digests. An address that exists already is left as"
        " it is (exit 1) unless --update (change the preferences given) or --confirmed (a pending, unsubscribed,"
        " bounced or complained address becomes active); a pending one is sent its confirmation email again."
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
    importing_subscribers = command(
        "import", _subscribers_import, "add the subscribers of a CSV file", subscriber_commands
    )
    importing_subscribers.description = (
        "Add the subscribers of a CSV file with a header row naming columns among email,name,themes,cadence,language"
        " (only email is required; themes separated by ';' or ','; an empty themes cell means every theme). Each row"
        " is checked on its own: bad rows are reported with their line number and the good ones are kept (exit 1 if"
        " any row was refused). New subscribers are pending and sent a confirmation email, or active with"
        " --confirmed. Existing subscribers are left as they are unless --update (the row's cells replace their"
        " preferences; empty cadence or language cells keep theirs) or --confirmed (pending, unsubscribed, bounced"
        " or complained become active). Removed addresses are always refused."
    )
    importing_subscribers.add_argument("file", type=_path, help="CSV file, UTF-8, with a header row")
    importing_subscribers.add_argument(
        "--confirmed", action="store_true", help="every row's consent is confirmed: active at once, no emails"
    )
    importing_subscribers.add_argument(
        "--update", action="store_true", help="change the preferences of existing subscribers to the file's"
    )
    subscriber_listing = command("list", _subscribers_list, "list subscribers, oldest first", subscriber_commands)
    subscriber_listing.add_argument("--status", choices=SUBSCRIBER_STATUSES, help="only subscribers of this status")
    subscriber_listing.add_argument("--cadence", choices=CADENCES, help="only subscribers of this cadence")
    subscriber_listing.add_argument("--json", action="store_true", help="a JSON array")
    command("export", _subscribers_export, "write everything held on every subscriber as CSV", subscriber_commands)
    removing = command(
        "remove", _subscribers_remove, "erase a subscriber and keep their address from being added again",
        subscriber_commands,
    )  # fmt: skip
    removing.description = (
        "Erase everything held on an address (their deliveries stay, without them) and keep only its SHA-256, so"
        " that no import or add brings it back unless 'add --confirmed --resubscribe'. Removing an address that is"
        " not subscribed suppresses it all the same."
    )
    removing.add_argument("email", help="their email address")

    editors = commands.add_parser("editors", help="the people who sign in to the editor pages", parents=[common])
    editor_commands = editors.add_subparsers(title="commands", metavar="COMMAND")
    adding_editor = command("add", _editors_add, "make the password hash of an editor", editor_commands)
    adding_editor.description = (
        "Ask for a new editor's password (twice; at least 12 characters) and print its scrypt hash as a line for"
        " [editors.passwords] in the configuration file and as a SYNDICATION_EDITORS value. Nothing is written:"
        " put the line where the service reads it. There is no default password: without one, nobody signs in."
    )
    adding_editor.add_argument("name", help="the editor's sign-in name (letters, digits, '.', '_', '@', '+', '-')")
    adding_editor.add_argument(
        "--password-stdin", action="store_true", help="read the password from the first line of standard input"
    )
    return parser


def _path(value: str) -> Path:
    if not value.strip():
        raise argparse.ArgumentTypeError("an empty path names nothing")  # Path("") would be the current folder
    return Path(value)


def _bounded_int(value: str, lowest: int, highest: int, what: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number") from None
    if not lowest <= number <= highest:
        raise argparse.ArgumentTypeError(f"{what} is {lowest:,} to {highest:,}, not {value}")
    return number


def _count(value: str) -> int:
    return _bounded_int(value, 1, 1_000_000, "a count")


def _port(value: str) -> int:
    return _bounded_int(value, 1, 65_535, "a TCP port")


def _row_id(value: str) -> int:
    return _bounded_int(value, 1, 2**63 - 1, "an id")


def _timestamp(value: str) -> datetime:
    from syndication.sources.normalise import DateOutOfRange, parse_timestamp

    try:
        return parse_timestamp(value)[0]
    except DateOutOfRange:
        raise argparse.ArgumentTypeError(f"{value!r} is out of range (years 1 to 9999 in UTC)") from None
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not an ISO 8601 date or time") from None


def _init(args: argparse.Namespace, settings: Settings) -> int:
    from syndication.app.service import init_store

    revision = init_store(settings)
    print(f"store ready at {_safe_url(settings)} (schema {revision})")
    return EXIT_OK


def _import(args: argparse.Namespace, settings: Settings) -> int:
    from syndication.app.gathering import import_file
    from syndication.app.service import Service

    with Service.open(settings) as service:
        return _print_reports([import_file(service, args.file)])


def _gather(args: argparse.Namespace, settings: Settings) -> int:
    from syndication.app.gathering import gather
    from syndication.app.service import Service

    if not settings.sources:
        print("no sources configured ([[sources]] in the configuration file)", file=sys.stderr)
        return EXIT_OK
    with Service.open(settings) as service:
        return _print_reports(gather(service, args.source))


def _print_reports(reports: Sequence[object]) -> int:
    from syndication.core.models import GatherReport

    out, err = sys.stdout, sys.stderr
    status = EXIT_OK
    for report in reports:
        assert isinstance(report, GatherReport)
        for warning in report.warnings:
            print(f"warning: {warning}", file=err)
        for rejection in report.rejections:
            print(f"rejected: {rejection}", file=err)
        if report.failure:
            print(f"failed: {report.source}: {report.failure}", file=err)
        print(
            f"{report.source}: {report.seen} read, {report.added} added, {report.updated} updated,"
            f" {report.unchanged} unchanged, {len(report.rejections)} rejected"
            + (", source failed" if report.failure else ""),
            file=out,
        )
        if not report.ok:
            status = EXIT_FAILED
    return status


def _posts_list(args: argparse.Namespace, settings: Settings) -> int:
    from syndication.app.gathering import list_posts
    from syndication.app.service import Service
    from syndication.sources.jsonl import iso_utc, post_as_record

    if args.theme and args.theme not in {t.slug for t in settings.themes}:
        raise SyndicationError(f"unknown theme {args.theme!r} (see 'syndication themes list')")
    if args.region and settings.regions and args.region not in {r.slug for r in settings.regions}:
        raise SyndicationError(f"unknown region {args.region!r} (see [[regions]] in the configuration)")
    with Service.open(settings) as service:
        posts = list_posts(service, theme=args.theme, region=args.region, since=args.since, limit=args.limit)
    if args.json:
        json.dump([post_as_record(p) for p in posts], sys.stdout, ensure_ascii=False, indent=2)
        print()
        return EXIT_OK
    for post in posts:
        themes = ",".join(post.themes) or "-"
        print(f"{iso_utc(post.published)}  {post.title}  [{themes}]  {post.url}")
    print(f"{len(posts)} post{'s' if len(posts) != 1 else ''}", file=sys.stderr)
    return EXIT_OK


def _feeds_build(args: argparse.Namespace, settings: Settings) -> int:
    from syndication.app.publishing import publish_feeds
    from syndication.app.service import Service

    with Service.open(settings) as service:
        report = publish_feeds(service, args.out, full=args.full)
    kind = "full build" if report.full else "incremental build"
    print(
        f"feeds: {kind} of {report.feeds} feeds into {report.directory}: {len(report.written)} documents written"
        f" ({report.archive_pages_written} archive pages), {report.unchanged} unchanged"
    )
    for url in report.hub_refused:
        print(f"warning: the WebSub hub did not accept {url}", file=sys.stderr)
    return EXIT_OK


def _serve(args: argparse.Namespace, settings: Settings) -> int:
    from syndication.app.publishing import publish_feeds
    from syndication.app.service import Service
    from syndication.web.app import serve

    with Service.open(settings) as service:
        report = publish_feeds(service)  # serve current feeds from the first request on
    print(f"feeds ready in {report.directory}; serving on http://{args.host}:{args.port}/feeds/", file=sys.stderr)
    if settings.secret_key is None:
        print("warning: SYNDICATION_SECRET_KEY is not set: unsubscribe links cannot be checked (answered 503)",
              file=sys.stderr)  # fmt: skip
    here = f"http://{args.host}:{args.port}"
    print(f"pages: {here}/subscribe, {here}/editions/, {here}/themes/; editors sign in at {here}/editor/",
          file=sys.stderr)  # fmt: skip
    if not settings.editors.passwords:
        print("warning: no editor is configured: nobody can sign in (syndication editors add NAME)", file=sys.stderr)
    serve(settings, args.host, args.port)
    return EXIT_OK


def _run(args: argparse.Namespace, settings: Settings) -> int:
    import signal

    from syndication.app.editions import check_sending
    from syndication.delivery.smtp import SmtpClient
    from syndication.runtime.logs import configure_logging
    from syndication.runtime.workers import start_fork_server
    from syndication.scheduling.runner import Runner

    check_sending(settings)  # without these nothing could ever be sent: say so now
    configure_logging(settings.logging)
    start_fork_server()  # loads the modules for worker processes now, not during the first large feed build
    runner = Runner(settings, SmtpClient)

    def stop(signum: int, _frame: object) -> None:
        runner.stop.set()  # the main loop notices, finishes the work in flight and exits

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    web = None
    if not args.no_web:
        from syndication.web.app import BackgroundServer

        web = BackgroundServer(settings, args.host, args.port, wake_sender=runner.wake_deliveries)
        web.start()
    try:
        runner.run_until_stopped()
    finally:
        if web is not None:
            web.stop()
    return EXIT_OK


def _status(args: argparse.Namespace, settings: Settings) -> int:
    from syndication.app.service import Service
    from syndication.scheduling.runner import status_report

    with Service.open(settings) as service:
        report = status_report(service)
    zone = ZoneInfo(settings.site.timezone)

    def when(moment: datetime | None) -> str:
        return f"{moment.astimezone(zone):%Y-%m-%d %H:%M:%S %Z}" if moment else "-"

    leader = report.leader
    print(f"scheduler: {leader.summary} since {when(leader.started_at)}" if leader else "scheduler: never ran")
    print("jobs:")
    for job in report.jobs:
        last = job.last
        state = "never run" if last is None else "running" if last.ok is None else "ok" if last.ok else "FAILED"
        ran = f"last run {when(last.started_at)} by {last.runner}: {state}, {last.summary}" if last else state
        upcoming = when(job.next_run)
        if job.job_id == "deliver":
            upcoming = f"every {settings.schedule.deliver_interval_seconds} s"  # each process drains the queue
        print(f"  {job.job_id:<24} next {upcoming:<25} {ran}")
    print(f"queue: {report.queue_depth} deliveries waiting to be sent")
    print("editions:")
    for cadence in report.editions:
        due = f"next due {when(cadence.next_due)}" if cadence.next_due else "off"
        if cadence.last is None:
            print(f"  {cadence.cadence:<8} none yet; {due}")
            continue
        edition = cadence.last
        counts = ", ".join(f"{n} {status}" for status, n in sorted(cadence.deliveries.items())) or "no deliveries"
        print(f"  {cadence.cadence:<8} #{edition.id} {when(edition.since)} .. {when(edition.until)} {edition.status}"
              f" ({counts}); {due}")  # fmt: skip
    for draft in report.stale_drafts:
        print(f"warning: draft edition {draft.id} ({draft.cadence}) has waited for approval since"
              f" {when(draft.created_at)}; approve it with 'syndication editions approve {draft.id}'")  # fmt: skip
    return EXIT_OK


def _digest_preview(args: argparse.Namespace, settings: Settings) -> int:
    from datetime import timedelta

    from syndication.app.digests import preview_digest
    from syndication.app.service import Service

    followed = _theme_list(args.themes, settings)
    with Service.open(settings) as service:
        if args.subscriber:
            from syndication.app.subscribers import normalise_email
            from syndication.store import database
            from syndication.store.subscribers import subscriber_by_email

            with database.transaction(service.engine) as session:
                subscriber = subscriber_by_email(session, normalise_email(args.subscriber))
            if subscriber is None:
                raise SyndicationError(f"no subscriber {args.subscriber!r} (see 'syndication subscribers list')")
            followed = list(subscriber.themes) if subscriber.themes is not None else None
            args.language = args.language or subscriber.language
        until = args.until or service.clock()
        since = args.since or until - timedelta(days=7)
        if since >= until:
            raise SyndicationError(f"--since ({since.isoformat()}) must be before --until ({until.isoformat()})")
        preview = preview_digest(
            service, since=since, until=until, followed=followed, language=args.language, intro=args.intro
        )
    if preview is None:
        print(f"no digest: nothing was published between {since.isoformat()} and {until.isoformat()}"
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
    print(
        f"digest: {preview.email.subject!r}: {digest.post_count} posts in {len(digest.sections)} sections"
        f" ({digest.shown_count} shown), HTML {len(preview.email.html.encode('utf-8')):,} bytes"
        + (f", written to {args.out}" if args.out else ""),
        file=sys.stderr,
    )
    for problem in preview.email.problems:
        print(f"warning: {problem}", file=sys.stderr)
    if args.open and args.out:
        import webbrowser

        webbrowser.open(args.out.resolve().as_uri())
    return EXIT_OK


def _digest_send(args: argparse.Namespace, settings: Settings) -> int:
    from syndication.app.editions import check_sending, default_window, deliver, plan_edition
    from syndication.app.service import Service
    from syndication.delivery.smtp import SmtpClient

    if not args.dry_run:
        check_sending(settings)  # before any edition is made
    with Service.open(settings) as service:
        since, until = default_window(service, args.cadence)
        since, until = args.since or since, args.until or until
        plan = plan_edition(service, args.cadence, since, until, dry_run=args.dry_run)
        window = f"{since.isoformat()} to {until.isoformat()}"
        if args.dry_run:
            state = f"edition {plan.edition.id} exists ({plan.edition.status})" if plan.edition else "no edition yet"
            print(
                f"dry run, {args.cadence} {window}: {state}; {plan.recipients} active subscribers,"
                f" {plan.recipients - plan.nothing_new} would get a digest, {plan.nothing_new} have nothing new;"
                f" {len(plan.variants)} variants; up to {plan.posts} posts; nothing sent"
            )
            return EXIT_OK
        assert plan.edition is not None
        made = "created" if plan.created else "already existed"
        print(f"edition {plan.edition.id} ({args.cadence}, {window}) {made}: {plan.queued} deliveries queued,"
              f" {plan.nothing_new} subscribers with nothing new")  # fmt: skip
        report = deliver(service, SmtpClient, edition_id=plan.edition.id, on_progress=_progress_printer())
    return _print_drain(report)


def _mail_sink(args: argparse.Namespace, settings: Settings) -> int:
    from syndication.delivery.outbox import run_outbox

    print(f"mail sink on {args.host}:{args.port}, keeping messages in {args.outbox} (Ctrl-C stops)", file=sys.stderr)
    kept = run_outbox(args.host, args.port, args.outbox)
    print(f"mail sink stopped: {kept} messages kept in {args.outbox}", file=sys.stderr)
    return EXIT_OK


def _deliver(args: argparse.Namespace, settings: Settings) -> int:
    from syndication.app.editions import deliver
    from syndication.app.service import Service
    from syndication.delivery.smtp import SmtpClient

    with Service.open(settings) as service:
        report = deliver(service, SmtpClient, on_progress=_progress_printer())
    return _print_drain(report)


def _progress_printer() -> Callable[[object], None]:
    interactive = sys.stderr.isatty()
    last = [0.0]

    def show(report: object) -> None:
        import time

        from syndication.delivery.sender import DrainReport

        assert isinstance(report, DrainReport)
        now = time.monotonic()
        if now - last[0] < (0.2 if interactive else 5.0):
            return
        last[0] = now
        line = (f"sending: {report.sent} sent, {report.deferred} deferred, {report.failed} failed,"
                f" {report.bounced} bounced")  # fmt: skip
        print(("\r" + line) if interactive else line, end="" if interactive else "\n", file=sys.stderr, flush=True)

    return show


def _print_drain(report: object) -> int:
    from syndication.delivery.sender import DrainReport

    assert isinstance(report, DrainReport)
    if sys.stderr.isatty():
        print(file=sys.stderr)
    print(
        f"delivered: {report.sent} sent, {report.deferred} deferred (retried later), {report.failed} failed,"
        f" {report.bounced} bounced, {report.poisoned} set aside as poisoned"
        + (f"; editions finished: {', '.join(map(str, report.finished_editions))}" if report.finished_editions else "")
    )
    return EXIT_OK if not (report.failed or report.poisoned) else EXIT_FAILED


def _editions_list(args: argparse.Namespace, settings: Settings) -> int:
    from syndication.app.service import Service
    from syndication.store import database, ledger

    with Service.open(settings) as service, database.transaction(service.engine) as session:
        for edition in ledger.editions(session):
            counts = ledger.progress(session, edition.id)
            summary = ", ".join(f"{count} {status}" for status, count in sorted(counts.items())) or "no deliveries"
            window = f"{edition.since:%Y-%m-%d %H:%M} .. {edition.until:%Y-%m-%d %H:%M}"
            print(f"{edition.id:>5}  {edition.cadence:<8} {window}  {edition.status:<9} {summary}")
    return EXIT_OK


def _edition_control(args: argparse.Namespace, settings: Settings) -> int:
    from syndication.app.service import Service
    from syndication.store import database, ledger

    before, after = ledger.EDITION_ACTIONS[args.action]
    with Service.open(settings) as service, database.transaction(service.engine) as session:
        edition = ledger.edition(session, args.edition_id)
        if edition is None:
            raise SyndicationError(f"no edition {args.edition_id} (see 'syndication editions list')")
        if edition.status not in before:
            raise SyndicationError(f"edition {edition.id} is {edition.status}: it cannot be {args.action}d")
        ledger.set_edition_status(session, edition.id, after, service.clock())
    print(f"edition {args.edition_id}: {edition.status} -> {after}")
    return EXIT_OK


def _theme_list(value: str | None, settings: Settings) -> list[str] | None:
    if not value:
        return None
    known = {theme.slug for theme in settings.themes}
    chosen = [slug.strip() for slug in value.split(",") if slug.strip()]
    unknown = [slug for slug in chosen if slug not in known]
    if unknown:
        raise SyndicationError(f"unknown theme {unknown[0]!r} (see 'syndication themes list')")
    return chosen


def _themes_list(args: argparse.Namespace, settings: Settings) -> int:
    from syndication.app.gathering import theme_post_counts
    from syndication.app.service import Service

    with Service.open(settings) as service:
        counts = theme_post_counts(service)
    if args.json:
        rows = [
            {
                "slug": t.slug,
                "name": t.name,
                "description": t.description,
                "aliases": list(t.aliases),
                "posts": counts.get(t.slug, 0),
            }
            for t in settings.themes
        ]
        json.dump(rows, sys.stdout, ensure_ascii=False, indent=2)
        print()
        return EXIT_OK
    for theme in settings.themes:
        print(f"{theme.slug:<24} {counts.get(theme.slug, 0):>6} posts  {theme.name}")
    return EXIT_OK


def _subscribers_add(args: argparse.Namespace, settings: Settings) -> int:
    from syndication.app.service import Service
    from syndication.app.subscribers import add_subscriber

    if args.resubscribe and not args.confirmed:
        _say_error(SyndicationError("--resubscribe needs --confirmed: only their renewed consent brings them back"))
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

    with Service.open(settings) as service:
        report = import_subscribers(service, args.file, confirmed=args.confirmed, update=args.update)
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
        rows = [
            {
                "id": s.id,
                "email": s.email,
                "name": s.name,
                "language": s.language,
                "themes": None if s.themes is None else list(s.themes),
                "cadence": s.cadence,
                "status": s.status,
                "consent": {"at": s.consent.at.isoformat(), "method": s.consent.method, "source": s.consent.source},
                "created_at": s.created_at.isoformat(),
                "confirmed_at": s.confirmed_at.isoformat() if s.confirmed_at else None,
            }
            for s in found
        ]
        json.dump(rows, sys.stdout, ensure_ascii=False, indent=2)
        print()
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
    from syndication.app.service import Service
    from syndication.app.subscribers import normalise_email, remove_subscriber

    with Service.open(settings) as service:
        done = remove_subscriber(service, args.email)
    email = normalise_email(args.email)
    print({
        "removed": f"removed {email}: erased, and suppressed so that it is not added again",
        "suppressed": f"{email} was not subscribed; suppressed so that it is not added",
        "already removed": f"{email} was removed before; nothing else is held on it",
    }[done])  # fmt: skip
    return EXIT_OK


def _editors_add(args: argparse.Namespace, settings: Settings) -> int:
    import getpass
    import re

    from syndication.config import EDITOR_NAME_PATTERN
    from syndication.core.passwords import check_new_password, hash_password

    name = args.name
    if not re.fullmatch(EDITOR_NAME_PATTERN, name):
        _say_error(SyndicationError(f"{name!r} is not an editor name (letters, digits, '.', '_', '@', '+', '-')"))
        return EXIT_USAGE
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = getpass.getpass(f"new password for {name}: ")
        try:
            check_new_password(password)
        except ValueError as error:
            raise SyndicationError(f"{name}: {error}; nothing was made") from None
        if getpass.getpass("the same password again: ") != password:
            raise SyndicationError(f"{name}: the two passwords differ; nothing was made")
    try:
        stored = hash_password(password)
    except ValueError as error:
        raise SyndicationError(f"{name}: {error}; nothing was made") from None
    replaced = " (it replaces the one configured now)" if name in settings.editors.passwords else ""
    print(f"editor {name}{replaced}: add this to {settings.config_path or 'the configuration file'}:\n\n"
          f'[editors.passwords]\n"{name}" = "{stored}"\n\n'
          f"or to the environment (several editors: comma-separated):\n\n"
          f"SYNDICATION_EDITORS='{name}:{stored}'")  # fmt: skip
    return EXIT_OK


def _safe_url(settings: Settings) -> str:
    from sqlalchemy.engine import make_url

    return make_url(settings.database.url).render_as_string(hide_password=True)
