"""What the command line says back: its exit statuses, its error lines, the summary of a delivery run (its
progress is ``cli.progress``'s) and ``--json`` output (``print_json``); and how a signal ends a command
(``Terminated``, ``stopping_on_signals``)."""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from collections.abc import Iterator, Mapping, Sequence
from types import FrameType
from typing import Any, Protocol

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
    """An argument names something that does not exist (an unknown theme or region): the arguments are wrong, so
    the command exits 2 (EXIT_USAGE) with this one line, as argparse's own refusals do; nothing has run."""


class Terminated(BaseException):
    """SIGTERM arrived (``timeout``, ``systemctl stop``): unwind as Ctrl-C does, so that open transactions roll
    back and worker processes are shut down, instead of dying at once and leaving them behind. The command line
    exits 143."""


class Stopped:
    """Which signal asked a command to stop (``stopping_on_signals``), if one did."""

    signal: int | None = None

    def raise_it(self) -> None:
        """End the command as the signal asks: Terminated (exit 143) for SIGTERM, KeyboardInterrupt (130)."""
        if self.signal == signal.SIGTERM:
            raise Terminated
        if self.signal is not None:
            raise KeyboardInterrupt


@contextlib.contextmanager
def stopping_on_signals(stop: threading.Event) -> Iterator[Stopped]:
    """While inside, SIGTERM and SIGINT set ``stop`` (a sender finishes the messages in flight and hands back the
    rest of its claims) instead of unwinding at once; a second signal unwinds (Terminated, KeyboardInterrupt).
    The caller reports what was done, then calls ``raise_it`` on what this yields."""
    stopped = Stopped()

    def handle(signum: int, _frame: FrameType | None) -> None:
        if stopped.signal is not None:  # asked twice: stop now (the drain still hands back what it holds)
            raise Terminated if signum == signal.SIGTERM else KeyboardInterrupt
        stopped.signal = signum
        stop.set()
        print("syndication: stopping after the messages in flight", file=sys.stderr, flush=True)

    previous = {number: signal.signal(number, handle) for number in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield stopped
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def say_error(error: Exception) -> None:
    """Print ``error`` as the command line's one error line on standard error."""
    print(f"syndication: error: {error}", file=sys.stderr)


def json_ready(value: object) -> Any:
    """``value`` as plain JSON data, the one conversion every ``--json`` uses: a dataclass becomes an object of its
    fields (snake_case, as declared), a datetime ISO 8601 in UTC with Z (as posts' dates are written), an enum its
    value, a tuple, list or set an array (a set sorted), a mapping an object with string keys, a path its text."""
    import dataclasses
    import enum
    from datetime import date, datetime
    from pathlib import PurePath

    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, enum.Enum):
        return json_ready(value.value)
    if isinstance(value, str):
        return value
    if isinstance(value, datetime):
        from syndication.app.posts import iso_time  # only when a date is met: check-mail needs no store

        return iso_time(value)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, PurePath):
        return str(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: json_ready(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(json_ready(key)): json_ready(item) for key, item in value.items()}
    if isinstance(value, set | frozenset):
        return sorted((json_ready(item) for item in value), key=str)
    if isinstance(value, list | tuple):
        return [json_ready(item) for item in value]
    raise TypeError(f"no JSON form for {type(value).__name__}")


def print_json(value: object) -> None:
    """Print ``value`` (see ``json_ready``) as one JSON document on standard output: a list as one array, a status
    or report as one object; UTF-8 as it is, indented, ending with a newline."""
    import json

    print(json.dumps(json_ready(value), ensure_ascii=False, indent=2))


class Drained(Protocol):
    """What a run of the sender reports (``syndication.app.editions.deliver`` returns one)."""

    @property
    def sent(self) -> int: ...
    @property
    def deferred(self) -> int: ...
    @property
    def failed(self) -> int: ...
    @property
    def bounced(self) -> int: ...
    @property
    def unknown(self) -> int: ...
    @property
    def poisoned(self) -> int: ...
    @property
    def lost_leases(self) -> int: ...
    @property
    def released(self) -> int: ...
    @property
    def finished_editions(self) -> Sequence[int]: ...


def print_reasons(grouped: Mapping[str, Mapping[str, int]], indent: int) -> None:
    """One line per reason deliveries did not go (yet), with how many: ``9 deferred: Connection refused``."""
    for outcome, reasons in grouped.items():
        for reason, count in reasons.items():
            print(f"{'':{indent}}{count} {outcome}: {reason}")


def print_drain(report: Drained) -> int:
    """Print what a delivery run did, then one line per reason deliveries were deferred or given up for
    ("9 deferred: Connection refused (127.0.0.1:25)"); the exit status is EXIT_FAILED when a message failed, was
    set aside or its outcome is unknown, or when something was due and nothing could be delivered."""
    extra = [
        f"{report.unknown} unknown (no answer after the message; not resent)" if report.unknown else "",
        f"{report.lost_leases} leases lost to another sender (not sent or not recorded here)"
        if report.lost_leases
        else "",
        f"{report.released} handed back unsent" if report.released else "",
    ]
    print(
        f"delivered: {report.sent} sent, {report.deferred} deferred (retried later), {report.failed} failed,"
        f" {report.bounced} bounced, {report.poisoned} set aside as poisoned"
        + "".join(f", {part}" for part in extra if part)
        + (f"; editions finished: {', '.join(map(str, report.finished_editions))}" if report.finished_editions else "")
    )
    print_reasons(getattr(report, "reasons", {}), indent=2)  # the app's DeliveryReport has them
    due = report.deferred or report.failed or report.bounced or report.unknown or report.poisoned
    if report.sent == 0 and due:
        print("syndication: error: nothing could be delivered", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK if not (report.failed or report.poisoned or report.unknown) else EXIT_FAILED
