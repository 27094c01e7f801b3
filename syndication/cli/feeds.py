"""The feeds command: ``feeds build`` writes the RSS, Atom and JSON feeds."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from syndication.cli.arguments import Commands, add_command, add_group, path
from syndication.cli.output import EXIT_OK
from syndication.cli.progress import progress_for

if TYPE_CHECKING:
    from syndication.config import Settings


def register(commands: Commands, common: argparse.ArgumentParser) -> None:
    """Declare ``feeds build``."""
    feed_commands = add_group(commands, "feeds", "build the RSS, Atom and JSON feeds", common)
    building = add_command(
        feed_commands, "build", _feeds_build, "write every feed that changed (or --full: all of them)", common
    )
    building.add_argument(
        "--out", type=path, metavar="DIR", help="write files to this folder whatever [feeds] storage is (an export)"
    )
    building.add_argument("--full", action="store_true", help="rebuild every document, archive pages included")


def _feeds_build(args: argparse.Namespace, settings: Settings) -> int:
    from syndication.app.publishing import publish_feeds
    from syndication.app.service import Service

    with Service.open(settings) as service:
        report = publish_feeds(service, args.out, full=args.full, progress=progress_for(args))
    kind = "full build" if report.full else "incremental build"
    print(
        f"feeds: {kind} of {report.feeds} feeds into {report.place}: {len(report.written)} documents written"
        f" ({report.archive_pages_written} archive pages), {report.unchanged} unchanged"
    )
    for url in report.hub_refused:
        print(f"warning: the WebSub hub did not accept {url}", file=sys.stderr)
    return EXIT_OK
