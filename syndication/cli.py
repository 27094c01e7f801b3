"""The ``syndication`` command: thin subcommands that call the pipeline and print what it did.

Exit status: 0 when all went well, 1 when something was refused or failed, 2 for a wrong configuration
or wrong arguments.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path

from syndication.config import Settings, config_path_from, load_settings
from syndication.errors import ConfigError, SyndicationError

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2

Handler = Callable[[argparse.Namespace, Settings], int]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        settings = load_settings(config_path_from(getattr(args, "config", None)))
        status: int = args.handler(args, settings)
        return status
    except ConfigError as error:
        _say_error(error)
        return EXIT_USAGE
    except SyndicationError as error:
        _say_error(error)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("syndication: interrupted", file=sys.stderr)
        return 130
    except Exception as error:  # the last guard: a user sees one line, a developer can ask for the traceback
        if os.environ.get("SYNDICATION_DEBUG"):
            raise
        print(
            f"syndication: internal error: {type(error).__name__}: {error} (set SYNDICATION_DEBUG=1 for the traceback)",
            file=sys.stderr,
        )
        return EXIT_FAILED


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
    importing.add_argument("file", type=Path, help="JSON Lines file, one post per line")

    gathering = command("gather", _gather, "pull new posts from every configured source")
    gathering.add_argument("--source", action="append", metavar="NAME", help="only this source (repeatable)")

    posts = commands.add_parser("posts", help="show stored posts", parents=[common])
    post_commands = posts.add_subparsers(title="commands", metavar="COMMAND")
    listing = command("list", _posts_list, "list published posts, newest first", post_commands)
    listing.add_argument("--theme", metavar="SLUG", help="only posts on this theme")
    listing.add_argument("--region", metavar="SLUG", help="only posts about this region")
    listing.add_argument("--since", metavar="ISO", type=_timestamp, help="only posts published after this")
    listing.add_argument("--limit", type=int, metavar="N", help="at most N posts")
    listing.add_argument("--json", action="store_true", help="a JSON array in the JSON Lines field names")

    feeds = commands.add_parser("feeds", help="build the RSS, Atom and JSON feeds", parents=[common])
    feed_commands = feeds.add_subparsers(title="commands", metavar="COMMAND")
    building = command("build", _feeds_build, "write every feed that changed (or --full: all of them)", feed_commands)
    building.add_argument("--out", type=Path, metavar="DIR", help="folder to write to (default: [feeds] output_dir)")
    building.add_argument("--full", action="store_true", help="rebuild every document, archive pages included")

    serving = command("serve", _serve, "serve the feeds (and later the web pages) over HTTP")
    serving.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    serving.add_argument("--port", type=int, default=8000, help="port to listen on (default 8000)")

    digest = commands.add_parser("digest", help="preview (and later send) the email digests", parents=[common])
    digest_commands = digest.add_subparsers(title="commands", metavar="COMMAND")
    preview = command("preview", _digest_preview, "render a digest without sending anything", digest_commands)
    preview.add_argument("--themes", metavar="A,B", help="the followed themes (default: everything)")
    preview.add_argument("--since", metavar="ISO", type=_timestamp, help="window start (default: 7 days ago)")
    preview.add_argument("--until", metavar="ISO", type=_timestamp, help="window end (default: now)")
    preview.add_argument("--language", metavar="L", help="the reader's language (default: site.language)")
    preview.add_argument("--intro", metavar="TEXT", help="an editor's note at the top")
    preview.add_argument("--format", choices=("html", "text", "eml"), default="html", help="what to write")
    preview.add_argument("--out", type=Path, metavar="FILE", help="write to FILE (default: standard output)")
    preview.add_argument("--open", action="store_true", help="open the written file in a browser or mail program")

    themes = commands.add_parser("themes", help="show configured themes", parents=[common])
    theme_commands = themes.add_subparsers(title="commands", metavar="COMMAND")
    theme_listing = command("list", _themes_list, "list the configured themes with their post counts", theme_commands)
    theme_listing.add_argument("--json", action="store_true", help="a JSON array")
    return parser


def _timestamp(value: str) -> datetime:
    from syndication.sources.normalise import parse_timestamp

    try:
        return parse_timestamp(value)[0]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not an ISO 8601 date or time") from None


def _init(args: argparse.Namespace, settings: Settings) -> int:
    from syndication.pipeline import init_store

    revision = init_store(settings)
    print(f"store ready at {_safe_url(settings)} (schema {revision})")
    return EXIT_OK


def _import(args: argparse.Namespace, settings: Settings) -> int:
    from syndication.pipeline import Service, import_file

    with Service.open(settings) as service:
        return _print_reports([import_file(service, args.file)])


def _gather(args: argparse.Namespace, settings: Settings) -> int:
    from syndication.pipeline import Service, gather

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
    from syndication.pipeline import Service, list_posts
    from syndication.sources.jsonl import iso_utc, post_as_record

    if args.theme and args.theme not in {t.slug for t in settings.themes}:
        raise SyndicationError(f"unknown theme {args.theme!r} (see 'syndication themes list')")
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
    from syndication.pipeline import Service, publish_feeds

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
    from syndication.pipeline import Service, publish_feeds
    from syndication.web.app import serve

    with Service.open(settings) as service:
        report = publish_feeds(service)  # serve current feeds from the first request on
    print(f"feeds ready in {report.directory}; serving on http://{args.host}:{args.port}/feeds/", file=sys.stderr)
    serve(settings, args.host, args.port)
    return EXIT_OK


def _digest_preview(args: argparse.Namespace, settings: Settings) -> int:
    from datetime import timedelta

    from syndication.pipeline import Service, preview_digest

    followed = _theme_list(args.themes, settings)
    with Service.open(settings) as service:
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
    from syndication.pipeline import Service, theme_post_counts

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


def _safe_url(settings: Settings) -> str:
    from sqlalchemy.engine import make_url

    return make_url(settings.database.url).render_as_string(hide_password=True)
