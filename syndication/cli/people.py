"""``people``: the editorial team from the command line (``app.team``): list, invite, add with a password, change a
role, remove, send a reset link, set a password, list and end sessions, and import the configuration's editors.
Each change is recorded in the audit log as ``cli:<user>``'s."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, TypeVar

from syndication.cli.arguments import Commands, add_command, add_group
from syndication.cli.output import EXIT_OK, print_json
from syndication.errors import SyndicationError

if TYPE_CHECKING:
    from collections.abc import Callable

    from syndication.app.team import Invitation
    from syndication.config import Settings
    from syndication.core.team import Role

_T = TypeVar("_T")
# For --help only (core.team.ROLES is the rule).
ROLES_HELP = "owner (everything, the team included), editor (posts, editions, approval), viewer (read only)"


def register(commands: Commands, common: argparse.ArgumentParser) -> None:
    """Declare ``people list|invite|add|role|remove|reset|password|sessions|revoke|import``."""
    group = add_group(
        commands, "people", "the editorial team: who signs in to the editor pages, with which role", common
    )
    listing = add_command(group, "list", _list, "everyone in the team with their role", common)
    listing.add_argument("--json", action="store_true", help="a JSON array")

    inviting = add_command(group, "invite", _invite, "invite someone by email to choose a password", common)
    inviting.add_argument("name", help="their sign-in name (letters, digits, '.', '_', '@', '+', '-')")
    inviting.add_argument("--email", required=True, help="where the invitation goes")
    inviting.add_argument("--role", default="editor", help=f"one of: {ROLES_HELP} (default: editor)")

    adding = add_command(group, "add", _add, "add someone with a password set now (the first owner, say)", common)
    adding.add_argument("name", help="their sign-in name (letters, digits, '.', '_', '@', '+', '-')")
    adding.add_argument("--email", help="their address, for password resets")
    adding.add_argument("--role", default="editor", help=f"one of: {ROLES_HELP} (default: editor)")
    adding.add_argument("--password-stdin", action="store_true", help="read the password from standard input")

    changing = add_command(group, "role", _role, "give someone another role", common)
    changing.add_argument("name")
    changing.add_argument("role", help=ROLES_HELP)

    removing = add_command(group, "remove", _remove, "remove someone (their sessions end)", common)
    removing.add_argument("name")

    resetting = add_command(group, "reset", _reset, "email someone a link to choose a new password", common)
    resetting.add_argument("name")

    setting = add_command(group, "password", _password, "set someone's password now (their sessions end)", common)
    setting.add_argument("name")
    setting.add_argument("--password-stdin", action="store_true", help="read the password from standard input")

    sessions = add_command(group, "sessions", _sessions, "the sessions signed in now", common)
    sessions.add_argument("name", nargs="?", help="only this person's")
    sessions.add_argument("--json", action="store_true", help="a JSON array")

    revoking = add_command(group, "revoke", _revoke, "end someone's sessions, or one session", common)
    revoking.add_argument("name", nargs="?", help="end every session of this person")
    revoking.add_argument("--session", metavar="ID", help="end this session only (people sessions)")

    importing = add_command(
        group, "import", _import, "make owners of the configuration's editors who are not in the team yet", common
    )
    importing.description = (
        "[editors] passwords (and SYNDICATION_EDITORS) were where editors lived before the team was kept in the"
        " store. `syndication init` makes them owners once, when the team is empty; this command adds the ones"
        " still missing, on purpose."
    )


def _list(args: argparse.Namespace, settings: Settings) -> int:
    from syndication.app.service import Service
    from syndication.app.team import list_people

    with Service.open(settings) as service:
        people = list_people(service)
    if args.json:
        print_json([person.as_json() for person in people])
        return EXIT_OK
    for person in people:
        state = "joined" if person.joined else "invited"
        seen = f"last signed in {person.last_sign_in_at:%Y-%m-%d %H:%M} UTC" if person.last_sign_in_at else ""
        print(f"{person.name}  {person.role}  {person.email or '-'}  {state}  {seen}".rstrip())
    if not people:
        print("nobody yet: syndication people add NAME --role owner", file=sys.stderr)
    return EXIT_OK


def _invite(args: argparse.Namespace, settings: Settings) -> int:
    from syndication.app.audit import command_line_actor
    from syndication.app.service import Service
    from syndication.app.team import invite

    role = _role_of(args.role)
    with Service.open(settings) as service:
        made = _refused_as_error(
            args.name, lambda: invite(service, args.name, args.email, role, actor=command_line_actor())
        )
    _say_link(made, "invitation")
    return EXIT_OK


def _add(args: argparse.Namespace, settings: Settings) -> int:
    from syndication.app.audit import command_line_actor
    from syndication.app.service import Service
    from syndication.app.team import add_person

    role = _role_of(args.role)
    _name_of(args.name)  # before asking for a password
    password = _new_password(args.name, args.password_stdin)
    with Service.open(settings) as service:
        person = _refused_as_error(
            args.name, lambda: add_person(service, args.name, args.email, role, password, actor=command_line_actor())
        )
    print(f"{person.name} added as {person.role}: they sign in at {settings.site.base_url}/editor/", file=sys.stderr)
    return EXIT_OK


def _role(args: argparse.Namespace, settings: Settings) -> int:
    from syndication.app.audit import command_line_actor
    from syndication.app.service import Service
    from syndication.app.team import change_role

    role = _role_of(args.role)
    with Service.open(settings) as service:
        person = change_role(service, args.name, role, actor=command_line_actor())
    print(f"{person.name} is now {person.role}", file=sys.stderr)
    return EXIT_OK


def _remove(args: argparse.Namespace, settings: Settings) -> int:
    from syndication.app.audit import command_line_actor
    from syndication.app.service import Service
    from syndication.app.team import remove_person

    with Service.open(settings) as service:
        person = remove_person(service, args.name, actor=command_line_actor())
    print(f"{person.name} removed from the team", file=sys.stderr)
    return EXIT_OK


def _reset(args: argparse.Namespace, settings: Settings) -> int:
    from syndication.app.audit import command_line_actor
    from syndication.app.service import Service
    from syndication.app.team import send_reset

    with Service.open(settings) as service:
        made = send_reset(service, args.name, actor=command_line_actor())
    _say_link(made, "password reset link")
    return EXIT_OK


def _password(args: argparse.Namespace, settings: Settings) -> int:
    from syndication.app.audit import command_line_actor
    from syndication.app.service import Service
    from syndication.app.team import set_password

    password = _new_password(args.name, args.password_stdin)
    with Service.open(settings) as service:
        person = _refused_as_error(
            args.name, lambda: set_password(service, args.name, password, actor=command_line_actor())
        )
    print(f"{person.name}: password set; their sessions ended", file=sys.stderr)
    return EXIT_OK


def _sessions(args: argparse.Namespace, settings: Settings) -> int:
    from syndication.app.service import Service
    from syndication.app.team import live_sessions

    with Service.open(settings) as service:
        sessions = live_sessions(service, args.name)
    if args.json:
        print_json([session.as_json() for session in sessions])
        return EXIT_OK
    for session in sessions:
        print(f"{session.id}  {session.person_name}  signed in {session.created_at:%Y-%m-%d %H:%M} UTC  last used"
              f" {session.last_seen_at:%Y-%m-%d %H:%M} UTC  from {session.address or '-'}"
              f"  {session.user_agent[:60]}")  # fmt: skip
    return EXIT_OK


def _revoke(args: argparse.Namespace, settings: Settings) -> int:
    from syndication.app.audit import command_line_actor
    from syndication.app.service import Service
    from syndication.app.team import revoke_session, revoke_sessions
    from syndication.cli.output import UsageError

    if (args.name is None) == (args.session is None):
        raise UsageError("name a person or give --session ID (one of the two)")
    with Service.open(settings) as service:
        if args.session is not None:
            ended = revoke_session(service, args.session, actor=command_line_actor())
            print(f"session {ended.id} of {ended.person_name} ended", file=sys.stderr)
        else:
            count = revoke_sessions(service, args.name, actor=command_line_actor())
            print(f"{args.name}: {count} session{'' if count == 1 else 's'} ended", file=sys.stderr)
    return EXIT_OK


def _import(args: argparse.Namespace, settings: Settings) -> int:
    from syndication.app.audit import command_line_actor
    from syndication.app.service import Service
    from syndication.app.team import adopt_configured_editors

    with Service.open(settings) as service:
        added = adopt_configured_editors(service, everyone_missing=True, actor=command_line_actor())
    if not settings.editors.passwords:
        print("no editors in the configuration ([editors] passwords, SYNDICATION_EDITORS)", file=sys.stderr)
    for name in added:
        print(f"{name} added as owner")
    if settings.editors.passwords and not added:
        print("every configured editor is in the team already", file=sys.stderr)
    return EXIT_OK


def _name_of(value: str) -> str:
    from syndication.cli.output import UsageError
    from syndication.core.team import check_name

    try:
        return check_name(value)
    except ValueError as error:
        raise UsageError(str(error)) from None


def _role_of(value: str) -> Role:
    from syndication.cli.output import UsageError
    from syndication.core.team import check_role

    try:
        return check_role(value)
    except ValueError as error:
        raise UsageError(str(error)) from None


def _new_password(name: str, from_stdin: bool) -> str:
    import getpass

    from syndication.core.passwords import check_new_password

    if from_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = getpass.getpass(f"new password for {name}: ")
        if getpass.getpass("the same password again: ") != password:
            raise SyndicationError(f"{name}: the two passwords differ; nothing was changed")
    try:
        check_new_password(password)
    except ValueError as error:
        raise SyndicationError(f"{name}: {error}; nothing was changed") from None
    return password


def _refused_as_error(name: str, run: Callable[[], _T]) -> _T:
    """Run a change, saying a ValueError (a name or password that cannot be) as the command's error."""
    try:
        return run()
    except ValueError as error:
        raise SyndicationError(f"{name}: {error}; nothing was changed") from None


def _say_link(made: Invitation, what: str) -> None:
    if made.sent:
        print(f"{what} sent to {made.person.name} <{made.person.email}>", file=sys.stderr)
        return
    print(f"the {what} could not be sent ({made.problem}); give {made.person.name} this link another way:",
          file=sys.stderr)  # fmt: skip
    print(made.url)
