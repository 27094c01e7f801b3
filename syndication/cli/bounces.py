"""The bounces commands: ``bounces import`` (saved messages), ``bounces receive`` (the LMTP/SMTP listener) and
``bounces list`` (what each message that came in did, or one subscriber's bounces)."""

from __future__ import annotations

import argparse
import sys
from collections import Counter, deque
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from syndication.cli.arguments import Commands, Handler, add_command, add_group, count, path, port
from syndication.cli.output import EXIT_FAILED, EXIT_OK, print_json, say_error
from syndication.cli.progress import progress_for
from syndication.errors import SyndicationError

if TYPE_CHECKING:
    from syndication.config import Settings

# The kinds of inbound message (syndication.app.bounces.KINDS), for --kind.
_KINDS = ("dsn", "complaint", "unsubscribe", "auto-reply", "unrecognised")


def register(commands: Commands, common: argparse.ArgumentParser) -> None:
    """Declare ``bounces import|receive|list``."""
    group = add_group(commands, "bounces", "process bounces, complaints and unsubscribe requests by email", common)

    def command(name: str, handler: Handler, help_text: str) -> argparse.ArgumentParser:
        return add_command(group, name, handler, help_text, common)

    importing = command("import", _bounces_import, "process saved messages (.eml files, or folders of them)")
    importing.description = (
        "Process messages saved as files, as if they had reached the bounce address: delivery status notifications"
        " count bounces, complaints and unsubscribe requests act on their subscriber, auto-replies are ignored and"
        " anything else is kept as unrecognised. A message processed before changes nothing. Prints what each did;"
        " exit 1 if a file could not be read."
    )
    importing.add_argument("files", nargs="+", type=path, metavar="FILE", help=".eml file, or a folder of them")
    receiving = command("receive", _bounces_receive, "listen for bounces from the MTA (LMTP, or SMTP) until stopped")
    receiving.description = (
        "Run the listener the organisation's MTA delivers the bounce address to (docs/bounces.md), processing each"
        " message as it arrives, until Ctrl-C or SIGTERM. Defaults: [bounces] listen and lmtp. `syndication run`"
        " starts it too when [bounces] listen is set."
    )
    receiving.add_argument("--host", metavar="H", help="address to listen on (default: from [bounces] listen)")
    receiving.add_argument("--port", type=port, metavar="P", help="port to listen on (default: from [bounces] listen)")
    receiving.add_argument("--smtp", action="store_true", help="speak SMTP rather than LMTP")
    listing = command("list", _bounces_list, "what each message that came in did, newest first")
    listing.add_argument("--kind", choices=_KINDS, help="only messages of this kind")
    listing.add_argument("--limit", type=count, default=50, metavar="N", help="at most N messages (default: 50)")
    listing.add_argument(
        "--subscriber", metavar="EMAIL", help="instead, the bounces counted against this subscriber and their score"
    )
    listing.add_argument("--json", action="store_true", help="a JSON array")


def _message_files(paths: list[Path]) -> tuple[list[Path], list[str]]:
    """The files to read (a folder's ``*.eml``, sorted), and what could not be found."""
    files: list[Path] = []
    problems: list[str] = []
    for given in paths:
        if given.is_dir():
            found = sorted(p for p in given.iterdir() if p.suffix.lower() == ".eml" and p.is_file())
            if not found:
                problems.append(f"{given}: no .eml files in this folder")
            files.extend(found)
        elif given.exists():
            files.append(given)
        else:
            problems.append(f"{given}: no such file")
    return files, problems


def _bounces_import(args: argparse.Namespace, settings: Settings) -> int:
    from syndication.app.bounces import Incoming, process_messages
    from syndication.app.service import Service

    files, problems = _message_files(args.files)
    for problem in problems:
        say_error(SyndicationError(problem))
    kinds: Counter[str] = Counter()
    duplicates = unreadable = 0
    read: deque[Path] = deque()  # the files read, in the order their outcomes come back

    def messages() -> Iterator[Incoming]:
        nonlocal unreadable
        for file in files:
            try:
                raw = file.read_bytes()
            except OSError as error:
                say_error(SyndicationError(f"{file}: cannot be read: {error.strerror or error}"))
                unreadable += 1
                continue
            read.append(file)
            yield Incoming(raw)

    with Service.open(settings) as service:
        outcomes = process_messages(service, messages(), source="import", progress=progress_for(args), total=len(files))
        for outcome in outcomes:
            print(f"{read.popleft()}: {outcome.kind}: {outcome.outcome}")
            if outcome.duplicate:
                duplicates += 1
            else:
                kinds[outcome.kind] += 1
    done = ", ".join(f"{number} {kind}" for kind, number in sorted(kinds.items())) or "none new"
    print(
        f"{len(files) - unreadable} messages processed: {done}; {duplicates} processed before"
        + (f"; {unreadable + len(problems)} could not be read" if unreadable or problems else ""),
        file=sys.stderr,
    )
    return EXIT_FAILED if unreadable or problems else EXIT_OK


def _bounces_receive(args: argparse.Namespace, settings: Settings) -> int:
    import signal
    import threading

    from syndication.app.bounces import start_receiver
    from syndication.app.service import Service
    from syndication.runtime.logs import configure_logging

    configure_logging(settings.logging)
    stop = threading.Event()

    def stopping(_signum: int, _frame: object) -> None:
        stop.set()

    previous = {number: signal.signal(number, stopping) for number in (signal.SIGTERM, signal.SIGINT)}
    try:
        with Service.open(settings) as service:
            receiver = start_receiver(service, host=args.host, port=args.port, lmtp=False if args.smtp else None)
            listen = settings.bounces.listen_address or ("127.0.0.1", 8026)
            where = f"{args.host or listen[0]}:{args.port or listen[1]}"
            protocol = "SMTP" if args.smtp or not settings.bounces.lmtp else "LMTP"
            print(f"receiving bounces by {protocol} on {where} (Ctrl-C stops)", file=sys.stderr, flush=True)
            try:
                while not stop.wait(1.0):
                    pass
            finally:
                receiver.stop()
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
    print("stopped", file=sys.stderr)
    return EXIT_OK


def _bounces_list(args: argparse.Namespace, settings: Settings) -> int:
    from syndication.app.bounces import bounce_score, list_inbound, subscriber_bounces
    from syndication.app.service import Service
    from syndication.app.subscribers import find_subscriber

    with Service.open(settings) as service:
        if args.subscriber is not None:
            subscriber = find_subscriber(service, args.subscriber)
            if subscriber is None:
                say_error(SyndicationError(f"{args.subscriber}: no such subscriber"))
                return EXIT_FAILED
            bounces = subscriber_bounces(service, subscriber.id)[: args.limit]
            score = bounce_score(service, subscriber.id)
            rules = settings.bounces
            if args.json:
                print_json({"email": subscriber.email, "status": subscriber.status, "score": score,
                            "threshold": rules.threshold, "bounces": bounces})  # fmt: skip
                return EXIT_OK
            for b in bounces:
                edition = f"edition {b.edition_id}" if b.edition_id is not None else "edition unknown"
                hard = "hard" if b.fault == "address" else "soft"
                print(f"{b.at:%Y-%m-%d %H:%M}  {b.source:<4} {hard} {b.status or '-':<7} +{b.score:g}  {edition}"
                      f"  {b.diagnostic}".rstrip())  # fmt: skip
            print(
                f"{subscriber.email} is {subscriber.status}; bounce score {score:g} of {rules.threshold:g}"
                f" (bounces of the last {rules.stale_after_days} days)",
                file=sys.stderr,
            )
            return EXIT_OK
        messages = list_inbound(service, args.limit, args.kind)
    if args.json:
        print_json([
            {"id": m.id, "received_at": m.received_at, "source": m.source, "kind": m.kind, "summary": m.summary,
             "outcome": m.outcome, "kept_bytes": m.raw_bytes}
            for m in messages
        ])  # fmt: skip
        return EXIT_OK
    for m in messages:
        print(f"{m.id:>6}  {m.received_at:%Y-%m-%d %H:%M}  {m.source:<8}  {m.kind:<12}  {m.outcome}")
    print(f"{len(messages)} message{'s' if len(messages) != 1 else ''}", file=sys.stderr)
    return EXIT_OK
