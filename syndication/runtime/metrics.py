"""In-process instruments (prometheus-client) and what this process runs, for ``/metrics`` and ``/readyz``.

These count what happens in this process only: HTTP requests it answered, gathers and feed builds its scheduler
ran. With several processes, Prometheus scrapes each and sums (``sum by (route) (rate(...))``); a restart starts
the counters again at zero, which ``rate()`` and ``increase()`` allow for. What the store keeps (deliveries,
editions, subscribers, the queue) is read from it at scrape time instead (``app.health``), the same in every process.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from prometheus_client import Counter, Histogram

HTTP_REQUESTS = Counter(
    "syndication_http_requests",
    "HTTP requests answered, by route template, method and status.",
    ["route", "method", "status"],
)
HTTP_SECONDS = Histogram(
    "syndication_http_request_duration_seconds",
    "Time from a request's arrival to the end of its answer, by route template and method.",
    ["route", "method"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
GATHER_RUNS = Counter("syndication_gather_runs", "Pulls of a source by this process's scheduler.", ["source"])
GATHER_FAILURES = Counter("syndication_gather_failures", "Pulls of a source that failed.", ["source"])
GATHER_POSTS = Counter(
    "syndication_gather_posts", "Posts a pull added, updated or refused, by source.", ["source", "outcome"]
)
FEED_BUILD_SECONDS = Histogram(
    "syndication_feed_build_duration_seconds",
    "Time an incremental feed build took.",
    buckets=(0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0),
)
FEED_DOCUMENTS = Counter("syndication_feed_documents_written", "Feed documents a build rewrote (their bytes changed).")
FEED_BUILD_FAILURES = Counter("syndication_feed_build_failures", "Feed builds that failed.")


def observe_gather(source: str, ok: bool, added: int = 0, updated: int = 0, rejected: int = 0) -> None:
    """Count one pull of ``source`` and what it did."""
    GATHER_RUNS.labels(source).inc()
    if not ok:
        GATHER_FAILURES.labels(source).inc()
    for outcome, count in (("added", added), ("updated", updated), ("rejected", rejected)):
        GATHER_POSTS.labels(source, outcome).inc(count)


def observe_feed_build(seconds: float, written: int | None) -> None:
    """Count one feed build: how long it took and how many documents it wrote (None: it failed)."""
    FEED_BUILD_SECONDS.observe(seconds)
    if written is None:
        FEED_BUILD_FAILURES.inc()
    else:
        FEED_DOCUMENTS.inc(written)


# --- The scheduler this process runs, if any ---------------------------------------------------------------

_lock = threading.Lock()
_scheduler: Callable[[], str] | None = None


def register_scheduler(state: Callable[[], str]) -> None:
    """Tell ``/readyz`` and ``/metrics`` that this process runs a scheduler; ``state`` says ``leader``,
    ``standby`` (another process leads; this one drains the queue) or ``stopping``."""
    global _scheduler
    with _lock:
        _scheduler = state


def unregister_scheduler(state: Callable[[], str]) -> None:
    """The scheduler ``state`` belongs to has stopped."""
    global _scheduler
    with _lock:
        if _scheduler == state:
            _scheduler = None


def scheduler_state() -> str | None:
    """``leader``, ``standby`` or ``stopping`` while this process runs a scheduler, else None."""
    with _lock:
        state = _scheduler
    return state() if state is not None else None
