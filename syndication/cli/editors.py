"""The editors command: ``editors add`` makes the password hash of an editor, to be put in the configuration."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from syndication.cli.arguments import Commands, add_command, add_group
from syndication.cli.output import EXIT_OK, EXIT_USAGE, say_error
from syndication.errors import SyndicationError

if TYPE_CHECKING:
    from syndication.config import Settings


def register(commands: Commands, common: argparse.ArgumentParser) -> None:
    """Declare ``editors add``."""
    editor_commands = add_group(commands, "editors", "the people who sign in to the editor pages", common)
    adding_editor = add_command(editor_commands, "add", _editors_add, "make the password hash of an editor", common)
    adding_editor.description = (
        "Ask for a new editor's password (twice; at least 12 characters) and print its scrypt hash as a line for"
        " [editors.passwords] in the configuration file and as a SYNDICATION_EDITORS value. Nothing is written:"
        " put the line where the service reads it. There is no default password: without one, nobody signs in."
    )
    adding_editor.add_argument("name", help="the editor's sign-in name (letters, digits, '.', '_', '@', '+', '-')")
    adding_editor.add_argument(
        "--password-stdin", action="store_true", help="read the password from the first line of standard input"
    )


def _editors_add(args: argparse.Namespace, settings: Settings) -> int:
    import getpass
    import re

    from syndication.config import EDITOR_NAME_PATTERN
    from syndication.core.passwords import check_new_password, hash_password

    name = args.name
    if not re.fullmatch(EDITOR_NAME_PATTERN, name):
        say_error(SyndicationError(f"{name!r} is not an editor name (letters, digits, '.', '_', '@', '+', '-')"))
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
