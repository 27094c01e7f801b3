"""The ``syndication`` command: thin subcommands that call the use cases and print what they did.

This module runs a command line: it assembles the parser from the command modules (each declares its own
subcommands with ``register``), installs the SIGTERM handling and maps errors to exit statuses.

Exit status: 0 when all went well, 1 when something was refused or failed, 2 for a wrong configuration
or wrong arguments.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Sequence

from syndication import __version__
from syndication.cli import (
    audit,
    bounces,
    checks,
    configuration,
    digests,
    editions,
    feeds,
    mailcheck,
    maintenance,
    people,
    posts,
    service,
    subscribers,
    tokens,
    webhooks,
)
from syndication.cli.output import EXIT_FAILED, EXIT_USAGE, Terminated, UsageError, say_error
from syndication.cli.progress import DEFAULT_INTERVAL, seconds
from syndication.errors import ConfigError, SyndicationError

__all__ = ["main"]

# The command modules in the order their commands are listed by --help.
_COMMAND_MODULES = (
    service, posts, feeds, digests, editions, subscribers, bounces, people, mailcheck, checks, configuration,
    maintenance, audit, webhooks, tokens,
)  # fmt: skip


def _terminate(_signum: int, _frame: object) -> None:
    raise Terminated


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    # `run` and `serve` put their own in place; `deliver` and `digest send` turn it into a clean stop of the
    # sender while it drains (cli.output.stopping_on_signals), which ends as this does.
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        from syndication.config import config_path_from, load_settings  # not for --help: pydantic is slow to import

        settings = load_settings(config_path_from(getattr(args, "config", None)))
        status: int = args.handler(args, settings)
        return status
    except Terminated:
        print("syndication: terminated", file=sys.stderr)
        return 143  # 128 + SIGTERM, as a shell reports it
    except (ConfigError, UsageError) as error:
        say_error(error)
        return EXIT_USAGE
    except SyndicationError as error:
        say_error(error)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("syndication: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # Whoever read our output stopped (``| head``): not an error to report. Later writes (the interpreter
        # flushing stdout at exit) go nowhere instead of raising again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # what a shell reports for a process that SIGPIPE ended
    except OSError as error:  # a file or folder the command was given, or the configuration names
        where = f"{error.filename}: " if error.filename is not None else ""
        say_error(Exception(f"{where}{error.strerror or error}"))
        return EXIT_FAILED
    except Exception as error:  # the last guard: a user sees one line, a developer can ask for the traceback
        if os.environ.get("SYNDICATION_DEBUG"):
            raise
        print(
            f"syndication: internal error: {type(error).__name__}: {error} (set SYNDICATION_DEBUG=1 for the traceback)",
            file=sys.stderr,
        )
        return EXIT_FAILED
    finally:
        signal.signal(signal.SIGTERM, previous)


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config",
        metavar="PATH",
        default=argparse.SUPPRESS,
        help="configuration file (default: $SYNDICATION_CONFIG, else ./config.toml)",
    )
    common.add_argument(
        "--quiet", "-q", action="store_true", default=argparse.SUPPRESS,
        help="show no progress while a long command runs (its summary is still printed)",
    )  # fmt: skip
    common.add_argument(
        "--progress-every", type=seconds, metavar="SECONDS", default=argparse.SUPPRESS,
        help=f"when standard error is not a terminal, a progress line every SECONDS (default {DEFAULT_INTERVAL:g})",
    )  # fmt: skip
    parser = argparse.ArgumentParser(
        prog="syndication",
        description="Gather posts, publish feeds and send themed email digests.",
        parents=[common],
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.set_defaults(handler=None)  # not config: parents share one --config action and its default
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")
    for module in _COMMAND_MODULES:
        module.register(commands, common)
    return parser
