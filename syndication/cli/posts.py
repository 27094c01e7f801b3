"""The posts commands: ``import`` and ``gather`` bring posts in, ``posts list`` and ``themes list`` show them,
``posts delete`` takes them out."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from syndication.cli.arguments import Commands, add_command, add_group, count, path, timestamp
from syndication.cli.output import EXIT_FAILED, EXIT_OK, UsageError, print_json
from syndication.cli.progress import progress_for
from syndication.errors import SyndicationError

if TYPE_CHECKING:
    from syndication.config import Settings
    from syndication.core.models import GatherReport


def register(commands: Commands, common: argparse.ArgumentParser) -> None:
    """Declare ``import``, ``gather``, ``posts list``, ``posts delete`` and ``themes list``."""
    importing = add_command(commands, "import", _import, "import one JSON Lines file of posts", common)
    importing.add_argument("file", type=path, help="JSON Lines file, one post per line")

    gathering = add_command(commands, "gather", _gather, "pull new posts from every configured source", common)
    gathering.add_argument("--source", action="append", metavar="NAME", help="only this source (repeatable)")

    post_commands = add_group(commands, "posts", "show stored posts", common)
    listing = add_command(post_commands, "list", _posts_list, "list published posts, newest first", common)
    listing.add_argument("--theme", metavar="SLUG", help="only posts on this theme")
    listing.add_argument("--region", metavar="SLUG", help="only posts about this region")
    listing.add_argument("--since", metavar="ISO", type=timestamp, help="only posts published after this")
    listing.add_argument("--limit", type=count, metavar="N", help="at most N posts")
    listing.add_argument(
        "--json", action="store_true", help="JSON Lines, one post per line, as 'syndication import' reads them"
    )
    deleting = add_command(post_commands, "delete", _posts_delete, "delete posts (feeds drop them at the next build)",
                           common)  # fmt: skip
    deleting.add_argument("guids", nargs="+", metavar="GUID", help="the post's guid (see 'posts list --json')")

    theme_commands = add_group(commands, "themes", "show configured themes", common)
    theme_listing = add_command(
        theme_commands, "list", _themes_list, "list the configured themes with their post counts", common
    )
    theme_listing.add_argument("--json", action="store_true", help="a JSON array")


def _import(args: argparse.Namespace, settings: Settings) -> int:
    from syndication.app.gathering import import_file
    from syndication.app.service import Service

    with Service.open(settings) as service:
        return _print_reports([import_file(service, args.file, progress=progress_for(args))])


def _gather(args: argparse.Namespace, settings: Settings) -> int:
    from syndication.app.gathering import gather
    from syndication.app.service import Service

    if not settings.sources:
        print("no sources configured ([[sources]] in the configuration file)", file=sys.stderr)
        return EXIT_OK
    with Service.open(settings) as service:
        return _print_reports(gather(service, args.source, progress=progress_for(args)))


def _print_reports(reports: Sequence[GatherReport]) -> int:
    out, err = sys.stdout, sys.stderr
    status = EXIT_OK
    for report in reports:
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
    from syndication.app.posts import iso_time, post_records
    from syndication.app.service import Service
    from syndication.app.subscribers import parse_themes

    theme = None
    if args.theme:
        try:  # one theme, or one of its aliases; an unknown one is a wrong argument (exit 2)
            chosen = parse_themes(settings, [args.theme])
        except SyndicationError as error:
            raise UsageError(f"--theme: {error}") from None
        theme = chosen[0] if chosen else None
    if args.region and settings.regions and args.region not in {r.slug for r in settings.regions}:
        raise UsageError(f"--region: unknown region {args.region!r} (see [[regions]] in the configuration)")
    with Service.open(settings) as service:
        posts = list_posts(service, theme=theme, region=args.region, since=args.since, limit=args.limit)
    if args.json:  # JSON Lines, the import's format: a listing imports again as it is
        for record in post_records(posts):
            print(json.dumps(record, ensure_ascii=False))
        return EXIT_OK
    for post in posts:
        themes = ",".join(post.themes) or "-"
        print(f"{iso_time(post.published)}  {post.title}  [{themes}]  {post.url}")
    print(f"{len(posts)} post{'s' if len(posts) != 1 else ''}", file=sys.stderr)
    return EXIT_OK


def _posts_delete(args: argparse.Namespace, settings: Settings) -> int:
    from syndication.app.posts import delete_posts
    from syndication.app.service import Service

    with Service.open(settings) as service:
        deleted = delete_posts(service, args.guids)
    missing = len(set(args.guids)) - deleted
    print(f"{deleted} posts deleted" + (f"; {missing} not found" if missing else ""))
    return EXIT_OK if not missing else EXIT_FAILED


def _themes_list(args: argparse.Namespace, settings: Settings) -> int:
    from syndication.app.gathering import theme_post_counts
    from syndication.app.service import Service

    with Service.open(settings) as service:
        counts = theme_post_counts(service)
    if args.json:
        print_json([
            {"slug": t.slug, "name": t.name, "description": t.description, "aliases": t.aliases,
             "posts": counts.get(t.slug, 0)}
            for t in settings.themes
        ])  # fmt: skip
        return EXIT_OK
    for theme in settings.themes:
        print(f"{theme.slug:<24} {counts.get(theme.slug, 0):>6} posts  {theme.name}")
    return EXIT_OK
