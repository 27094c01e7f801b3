"""The progress long commands show on standard error (``core.progress`` is what the use cases tell it).

On a terminal, a tqdm bar with the total, rate and ETA; otherwise (a log, CI, a pipe) a plain line every few
seconds (``--progress-every``) that a script can read::

    feed build: 120/400 (30%), 35.2/s, ETA 8.0s
    gather city-news: 1200, 300.0/s

and at the end of a task that showed any (a bar, or a line: work done within the interval shows nothing but the
command's own report), one summary line, or where an error stopped it::

    feed build: 400/400 done in 11s, 35.1/s
    feed build: stopped at 130/400 after 4.1s

``--quiet`` shows none of it. tqdm is imported only when a bar is drawn.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from typing import IO, Any

from syndication.core.progress import SILENT, Meter, Progress

DEFAULT_INTERVAL = 5.0  # seconds between two plain lines


def progress_for(args: argparse.Namespace) -> Progress:
    """The progress a command shows, as its common options (``--quiet``, ``--progress-every``) ask."""
    if getattr(args, "quiet", False):
        return SILENT
    stream = sys.stderr
    if stream.isatty():
        return BarProgress(stream)
    return LineProgress(stream, interval=getattr(args, "progress_every", DEFAULT_INTERVAL))


def seconds(value: str) -> float:
    """The ``--progress-every`` argument: seconds, 0 or more (0: a line for every item)."""
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number of seconds") from None
    if not 0 <= number <= 86_400:
        raise argparse.ArgumentTypeError(f"seconds are 0 to 86,400, not {value}")
    return number


def duration(value: float) -> str:
    """``4.2s``, ``42s``, ``3m05s``, ``2h03m``: short enough for a progress line."""
    if value < 9.95:
        return f"{value:.1f}s"
    whole = round(value)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    return f"{whole // 3600}h{whole % 3600 // 60:02d}m"


def status_line(meter: Meter, now: float) -> str:
    """What a plain progress line says of ``meter`` at ``now``."""
    rate, eta, fraction = meter.rate(now), meter.eta(now), meter.fraction()
    done = f"{meter.done}/{meter.total} ({fraction * 100:.0f}%)" if fraction is not None else f"{meter.done}"
    parts = [done, f"{rate:.1f}/s" if rate is not None else "-/s"]
    if meter.total is not None:
        parts.append(f"ETA {duration(eta)}" if eta is not None else "ETA -")
    return f"{meter.what}: " + ", ".join(parts)


def summary_line(meter: Meter, now: float, *, completed: bool = True) -> str:
    """The line that ends a task: how many, in how long, at what rate; or where it stopped."""
    done = f"{meter.done}/{meter.total}" if meter.total is not None else f"{meter.done}"
    if not completed:
        return f"{meter.what}: stopped at {done} after {duration(meter.elapsed(now))}"
    rate = meter.rate(now)
    return f"{meter.what}: {done} done in {duration(meter.elapsed(now))}" + (
        f", {rate:.1f}/s" if rate is not None else ""
    )


class LineProgress:
    """Not a terminal: a status line at most every ``interval`` seconds while a task advances, and its summary
    once it ends when it showed a line."""

    def __init__(self, stream: IO[str], *, interval: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._stream, self._interval, self._clock = stream, interval, clock
        self._meter: Meter | None = None
        self._last = 0.0
        self._shown = False

    def begin(self, what: str, total: int | None) -> None:
        self.end()
        self._last = self._clock()
        self._meter = Meter(what, total, self._last)
        self._shown = False

    def advance(self, count: int = 1) -> None:
        meter = self._meter
        if meter is None or count <= 0:
            return
        meter.done += count
        now = self._clock()
        if now - self._last >= self._interval:
            self._last, self._shown = now, True
            self._say(status_line(meter, now))

    def end(self, completed: bool = True) -> None:
        meter, self._meter = self._meter, None
        if meter is not None and self._shown:
            self._say(summary_line(meter, self._clock(), completed=completed))

    def _say(self, line: str) -> None:
        print(line, file=self._stream, flush=True)


class BarProgress:
    """A terminal: a tqdm bar (count, total, rate, ETA) redrawn in place; the summary line once it ends."""

    def __init__(self, stream: IO[str], *, clock: Callable[[], float] = time.monotonic) -> None:
        self._stream, self._clock = stream, clock
        self._meter: Meter | None = None
        self._bar: Any = None

    def begin(self, what: str, total: int | None) -> None:
        from tqdm import tqdm

        self.end()
        self._meter = Meter(what, total, self._clock())
        self._bar = tqdm(total=total, desc=what, unit="", file=self._stream, leave=False, dynamic_ncols=True)

    def advance(self, count: int = 1) -> None:
        if self._meter is None or count <= 0:
            return
        self._meter.done += count
        self._bar.update(count)

    def end(self, completed: bool = True) -> None:
        meter, self._meter = self._meter, None
        if meter is None:
            return
        self._bar.close()
        self._bar = None
        print(summary_line(meter, self._clock(), completed=completed), file=self._stream, flush=True)
