"""What the command line says back: its exit statuses, its error lines and the progress of a delivery run."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import Protocol

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def say_error(error: Exception) -> None:
    """Print ``error`` as the command line's one error line on standard error."""
    print(f"syndication: error: {error}", file=sys.stderr)


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
    def poisoned(self) -> int: ...
    @property
    def finished_editions(self) -> Sequence[int]: ...


def progress_printer() -> Callable[[Drained], None]:
    """A progress callback for ``deliver``: one line rewritten in place on a terminal, else a line every 5 s."""
    interactive = sys.stderr.isatty()
    last = [0.0]

    def show(report: Drained) -> None:
        import time

        now = time.monotonic()
        if now - last[0] < (0.2 if interactive else 5.0):
            return
        last[0] = now
        line = (f"sending: {report.sent} sent, {report.deferred} deferred, {report.failed} failed,"
                f" {report.bounced} bounced")  # fmt: skip
        print(("\r" + line) if interactive else line, end="" if interactive else "\n", file=sys.stderr, flush=True)

    return show


def print_drain(report: Drained) -> int:
    """Print what a delivery run did; the exit status is EXIT_FAILED when a message failed or was set aside."""
    if sys.stderr.isatty():
        print(file=sys.stderr)
    print(
        f"delivered: {report.sent} sent, {report.deferred} deferred (retried later), {report.failed} failed,"
        f" {report.bounced} bounced, {report.poisoned} set aside as poisoned"
        + (f"; editions finished: {', '.join(map(str, report.finished_editions))}" if report.finished_editions else "")
    )
    return EXIT_OK if not (report.failed or report.poisoned) else EXIT_FAILED
