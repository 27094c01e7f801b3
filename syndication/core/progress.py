"""Progress of long work: what a use case tells of it as it goes, and the arithmetic of its rate and ETA.

A use case that works through many items (the lines of a file, the feeds of a build, the deliveries of a run,
the rows of an import, saved messages) takes an optional ``Progress`` and says ``begin(what, total)``, then
``advance(n)`` as items are done, then ``end()`` (``end(completed=False)`` when an error stops it; ``running``
does all three). The command line passes one that draws a bar on a terminal or
prints a line every few seconds; the scheduler and the web pass none (``SILENT`` stands in). Nothing here prints
or reads a clock: ``Meter`` is given the moments.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final, Protocol


class Progress(Protocol):
    """Told how long work goes: ``begin`` (``total`` None when it is not known in advance), ``advance``, ``end``
    (``completed=False``: an error stopped it). A ``begin`` while a task is open ends that one first."""

    def begin(self, what: str, total: int | None) -> None: ...

    def advance(self, count: int = 1) -> None: ...

    def end(self, completed: bool = True) -> None: ...


class _Silent:
    """The progress of a caller that wants none."""

    def begin(self, what: str, total: int | None) -> None:
        pass

    def advance(self, count: int = 1) -> None:
        pass

    def end(self, completed: bool = True) -> None:
        pass


SILENT: Final[Progress] = _Silent()


@contextlib.contextmanager
def running(progress: Progress | None, what: str, total: int | None) -> Iterator[Progress]:
    """``progress`` (or SILENT) told of the task ``what`` inside the block: begun, then ended, completed unless
    an exception leaves the block."""
    shows = progress or SILENT
    shows.begin(what, total)
    try:
        yield shows
    except BaseException:
        shows.end(completed=False)
        raise
    shows.end()


@dataclass
class Meter:
    """How far a task is, from when it ``started`` (seconds on any monotonic clock): ``done`` of ``total``."""

    what: str
    total: int | None
    started: float
    done: int = 0

    def elapsed(self, now: float) -> float:
        return max(now - self.started, 0.0)

    def rate(self, now: float) -> float | None:
        """Items per second so far; None before any time has passed or anything was done."""
        elapsed = self.elapsed(now)
        if elapsed <= 0 or self.done <= 0:
            return None
        return self.done / elapsed

    def eta(self, now: float) -> float | None:
        """Seconds left at the rate so far; None without a total or a rate (0 once the total is reached)."""
        if self.total is None:
            return None
        left = max(self.total - self.done, 0)
        if left == 0:
            return 0.0
        rate = self.rate(now)
        return None if rate is None else left / rate

    def fraction(self) -> float | None:
        """Done as a share of the total (at most 1); None without a total, 1 for a total of 0."""
        if self.total is None:
            return None
        return 1.0 if self.total <= 0 else min(self.done / self.total, 1.0)
