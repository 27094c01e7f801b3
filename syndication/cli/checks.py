"""The ``check-config`` command: a configuration that loads, and what in it still shows readers words of another
language than theirs."""

from __future__ import annotations

import argparse
import textwrap
from typing import TYPE_CHECKING

from syndication.cli.arguments import Commands, add_command
from syndication.cli.output import EXIT_FAILED, EXIT_OK, print_json

if TYPE_CHECKING:
    from syndication.config import Settings


def register(commands: Commands, common: argparse.ArgumentParser) -> None:
    """Declare ``check-config``."""
    checking = add_command(
        commands, "check-config", _check_config, "check the configuration and report what it leaves untranslated",
        common,
    )  # fmt: skip
    checking.description = (
        "Load the configuration (a wrong one is refused with exit status 2, as by every command) and report what"
        " would show readers words of another language: each language of [digest] languages without a shipped"
        ' catalog, and each theme and region without a name in one of them (names = { fr = "..." }). Exit'
        " status 1 when there is a warning. `check-mail` checks the sending settings."
    )
    checking.add_argument("--json", action="store_true", help="one JSON object: what loaded and the warnings")


def _check_config(args: argparse.Namespace, settings: Settings) -> int:
    from syndication.app.mailcheck import language_warnings

    if args.json:
        warnings = language_warnings(settings)
        print_json({"config_path": settings.config_path, "languages": settings.digest.languages,
                    "site_language": settings.site.language, "themes": len(settings.themes),
                    "regions": len(settings.regions), "warnings": warnings})  # fmt: skip
        return EXIT_FAILED if warnings else EXIT_OK
    print(f"{settings.config_path}: loads")
    print(f"Languages: {', '.join(settings.digest.languages)} (site: {settings.site.language})")
    print(f"Themes: {len(settings.themes)}; regions: {len(settings.regions)}")
    warnings = language_warnings(settings)
    print()
    if not warnings:
        print("No warnings.")
        return EXIT_OK
    print(f"Warnings ({len(warnings)}):")
    for warning in warnings:
        print(textwrap.fill(warning, width=100, initial_indent="- ", subsequent_indent="  "))
    return EXIT_FAILED
