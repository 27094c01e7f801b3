"""The service commands: ``init`` sets up the store, ``serve`` and ``run`` run the service, ``status`` shows
what it did and will do, and ``mail-sink`` stands in for a mail relay in the demo."""

from __future__ import annotations

import argparse
import logging
import sys
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from syndication.cli.arguments import Commands, add_command, path, port
from syndication.cli.output import EXIT_OK, json_ready, print_json, print_reasons

if TYPE_CHECKING:
    from syndication.config import Settings


def register(commands: Commands, common: argparse.ArgumentParser) -> None:
    """Declare ``init``, ``serve``, ``run``, ``status`` and ``mail-sink``."""
    add_command(commands, "init", _init, "create the store, or upgrade it to this version's schema", common)

    serving = add_command(commands, "serve", _serve, "serve the feeds and the web pages over HTTP", common)
    serving.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    serving.add_argument("--port", type=port, default=8000, help="port to listen on (default 8000)")

    running = add_command(
        commands, "run", _run,
        "run the service: scheduled gathering, feeds, editions and sending, and the web app", common,
    )  # fmt: skip
    running.add_argument("--no-web", action="store_true", help="do not serve the web app from this process")
    running.add_argument("--host", default="127.0.0.1", help="address the web app listens on (default 127.0.0.1)")
    running.add_argument("--port", type=port, default=8000, help="port the web app listens on (default 8000)")

    showing_status = add_command(
        commands, "status", _status,
        "show each scheduled job's last and next run, the queue and the last editions", common,
    )  # fmt: skip
    showing_status.add_argument("--json", action="store_true", help="one JSON object")

    sink = add_command(
        commands, "mail-sink", _mail_sink, "a local SMTP server keeping every message as an .eml file (demo)", common
    )
    sink.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    sink.add_argument("--port", type=port, default=8025, help="port to listen on (default 8025)")
    sink.add_argument("--outbox", type=path, default=Path("var/outbox"), help="folder for the messages")


def _init(args: argparse.Namespace, settings: Settings) -> int:
    from syndication.app.service import ensure_signing_key, init_store, store_location

    revision = init_store(settings)
    print(f"store ready at {store_location(settings)} (schema {revision})")
    key = ensure_signing_key(settings)
    if key is not None:
        path, made = key
        print(f"signing key {'created in' if made else 'kept in'} {path} (SYNDICATION_SECRET_KEY, when set, wins)")
    elif settings.secret_key is None:
        print("warning: no signing key: a shared store needs SYNDICATION_SECRET_KEY (or SYNDICATION_SECRET_KEY_FILE),"
              " the same for every process; commands that sign links refuse to run without it",
              file=sys.stderr)  # fmt: skip
    return EXIT_OK


def _serve(args: argparse.Namespace, settings: Settings) -> int:
    from syndication.app.publishing import publish_feeds
    from syndication.app.service import Service
    from syndication.app.team import list_people
    from syndication.web.app import listening_socket, serve

    sock = listening_socket(args.host, args.port)  # a port in use stops here, before anything is built
    with Service.open(settings) as service:
        report = publish_feeds(service)  # serve current feeds from the first request on
        team = list_people(service)
    print(f"feeds ready in {report.place}; serving on http://{args.host}:{args.port}/feeds/", file=sys.stderr)
    if settings.secret_key is None:
        print("warning: no signing key (SYNDICATION_SECRET_KEY, or the key file `syndication init` makes for a"
              " SQLite store): unsubscribe links cannot be checked (answered 503)", file=sys.stderr)  # fmt: skip
    here = f"http://{args.host}:{args.port}"
    print(f"pages: {here}/subscribe, {here}/editions/, {here}/themes/; editors sign in at {here}/editor/",
          file=sys.stderr)  # fmt: skip
    if not any(person.joined for person in team):
        print("warning: nobody in the editorial team can sign in (syndication people add NAME --role owner)",
              file=sys.stderr)  # fmt: skip
    serve(settings, sock)
    return EXIT_OK


def _run(args: argparse.Namespace, settings: Settings) -> int:
    import signal

    from syndication.app.editions import check_sending
    from syndication.app.mailcheck import sender_warnings
    from syndication.runtime.logs import configure_logging
    from syndication.runtime.workers import start_fork_server
    from syndication.scheduling.runner import Runner

    check_sending(settings)  # without these nothing could ever be sent: say so now
    sock = None
    if not args.no_web:  # a port in use stops here, not in the web thread once the scheduler runs
        from syndication.web.app import listening_socket

        sock = listening_socket(args.host, args.port)
    configure_logging(settings.logging)
    for warning in sender_warnings(settings):  # mail that would go out but land in spam or bounce: say so too
        logging.getLogger("syndication.run").warning("mail: %s", warning)
    start_fork_server()  # loads the modules for worker processes now, not during the first large feed build
    runner = Runner(settings)

    def stop(signum: int, _frame: object) -> None:
        runner.stop.set()  # the main loop notices, finishes the work in flight and exits

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    web = None
    if not args.no_web:
        from syndication.web.app import BackgroundServer

        web = BackgroundServer(settings, args.host, args.port, wake_sender=runner.wake_deliveries, sock=sock)
        web.start()
    try:
        runner.run_until_stopped()
    finally:
        if web is not None:
            web.stop()
    return EXIT_OK


def _status(args: argparse.Namespace, settings: Settings) -> int:
    from zoneinfo import ZoneInfo

    from syndication.app.service import Service
    from syndication.app.status import status_report

    with Service.open(settings) as service:
        report = status_report(service)
    if args.json:  # the report as it is, and how often each process drains the queue (the text's "next" of deliver)
        print_json(json_ready(report) | {"deliver_interval_seconds": settings.schedule.deliver_interval_seconds})
        return EXIT_OK
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
        if edition.reason:
            print(f"    {edition.status}: {edition.reason}")
        print_reasons(cadence.reasons, indent=4)
    for draft in report.stale_drafts:
        print(f"warning: draft edition {draft.id} ({draft.cadence}) has waited for approval since"
              f" {when(draft.created_at)}; approve it with 'syndication editions approve {draft.id}'")  # fmt: skip
    return EXIT_OK


def _mail_sink(args: argparse.Namespace, settings: Settings) -> int:
    from syndication.app.outbox import run_mail_sink

    print(f"mail sink on {args.host}:{args.port}, keeping messages in {args.outbox} (Ctrl-C stops)", file=sys.stderr)
    kept = run_mail_sink(args.host, args.port, args.outbox)
    print(f"mail sink stopped: {kept} messages kept in {args.outbox}", file=sys.stderr)
    return EXIT_OK
