"""How the command line reads its arguments: the types that turn a bad value into a usage error (exit 2) with one
clear line, and the declaration of subcommands and their groups."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, TypeAlias

if TYPE_CHECKING:
    from syndication.config import Settings

Handler: TypeAlias = "Callable[[argparse.Namespace, Settings], int]"
Commands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


def add_command(
    into: Commands, name: str, handler: Handler, help_text: str, common: argparse.ArgumentParser
) -> argparse.ArgumentParser:
    """Declare subcommand ``name`` of ``into``, run by ``handler``; returns its parser for its arguments."""
    sub = into.add_parser(name, help=help_text, description=help_text, parents=[common])
    sub.set_defaults(handler=handler)
    return sub


def add_group(into: Commands, name: str, help_text: str, common: argparse.ArgumentParser) -> Commands:
    """Declare ``name`` as a group of subcommands (``posts list``...); returns where its subcommands go."""
    group = into.add_parser(name, help=help_text, parents=[common])
    return group.add_subparsers(title="commands", metavar="COMMAND")


def path(value: str) -> Path:
    """A file or folder argument; an empty one is refused (``Path("")`` would be the current folder)."""
    if not value.strip():
        raise argparse.ArgumentTypeError("an empty path names nothing")
    return Path(value)


def _bounded_int(value: str, lowest: int, highest: int, what: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number") from None
    if not lowest <= number <= highest:
        raise argparse.ArgumentTypeError(f"{what} is {lowest:,} to {highest:,}, not {value}")
    return number


def count(value: str) -> int:
    """A number of things to show: 1 to 1,000,000."""
    return _bounded_int(value, 1, 1_000_000, "a count")


def port(value: str) -> int:
    """A TCP port: 1 to 65,535."""
    return _bounded_int(value, 1, 65_535, "a TCP port")


def row_id(value: str) -> int:
    """The id of a stored row (an edition...): a positive 64-bit integer."""
    return _bounded_int(value, 1, 2**63 - 1, "an id")


def timestamp(value: str) -> datetime:
    """An ISO 8601 date or time, in UTC (a time without an offset is taken as UTC)."""
    from syndication.app.posts import DateOutOfRange, parse_timestamp

    try:
        return parse_timestamp(value)
    except DateOutOfRange:
        raise argparse.ArgumentTypeError(f"{value!r} is out of range (years 1 to 9999 in UTC)") from None
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not an ISO 8601 date or time") from None
