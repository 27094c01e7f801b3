"""``tokens``: the JSON API's tokens: create (the token is printed once), list, revoke; each recorded in the audit
log."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from syndication.cli.arguments import Commands, add_command, add_group, row_id
from syndication.cli.output import EXIT_OK, print_json

if TYPE_CHECKING:
    from syndication.config import Settings

# For --help only (core.api_tokens.SCOPES is the rule).
SCOPES_HELP = "read, posts, subscribers, send"


def register(commands: Commands, common: argparse.ArgumentParser) -> None:
    """Declare ``tokens create|list|revoke``."""
    group = add_group(commands, "tokens", "the JSON API's tokens (/api/v1): create, list, revoke", common)
    creating = add_command(group, "create", _create, "create a token; prints it once", common)
    creating.add_argument("name", help="who or what uses it (a CMS, a CRM): named in the audit log as token:NAME")
    creating.add_argument("--scopes", required=True, metavar="A,B", help=f"comma-separated, of: {SCOPES_HELP}")
    listing = add_command(group, "list", _list, "the tokens (never their secrets), revoked ones too", common)
    listing.add_argument("--json", action="store_true", help="a JSON array")
    revoking = add_command(group, "revoke", _revoke, "revoke a token: its next request is refused", common)
    revoking.add_argument("id", type=row_id, help="the token's id (tokens list)")


def _create(args: argparse.Namespace, settings: Settings) -> int:
    from syndication.app.api import create_token
    from syndication.app.audit import command_line_actor
    from syndication.app.service import Service

    with Service.open(settings) as service:
        token, text = create_token(service, args.name, args.scopes.split(","), actor=command_line_actor())
    print(f"token {token.id}: {token.name} ({', '.join(token.scopes)})", file=sys.stderr)
    print("the token, shown this once (send it as Authorization: Bearer ...):", file=sys.stderr)
    print(text)
    return EXIT_OK


def _list(args: argparse.Namespace, settings: Settings) -> int:
    from syndication.app.api import list_tokens
    from syndication.app.service import Service

    with Service.open(settings) as service:
        tokens = list_tokens(service)
    if args.json:
        print_json([token.as_json() for token in tokens])
        return EXIT_OK
    for token in tokens:
        used = f"last used {token.last_used_at:%Y-%m-%d %H:%M} UTC" if token.last_used_at else "never used"
        revoked = f"  revoked {token.revoked_at:%Y-%m-%d %H:%M} UTC" if token.revoked_at else ""
        created = f"created {token.created_at:%Y-%m-%d %H:%M} UTC by {token.created_by}"
        print(f"{token.id}  {token.name}  {','.join(token.scopes)}  {created}  {used}{revoked}")
    return EXIT_OK


def _revoke(args: argparse.Namespace, settings: Settings) -> int:
    from syndication.app.api import revoke_token
    from syndication.app.audit import command_line_actor
    from syndication.app.service import Service

    with Service.open(settings) as service:
        revoke_token(service, args.id, actor=command_line_actor())
    print(f"token {args.id} revoked", file=sys.stderr)
    return EXIT_OK
