"""Worker processes for CPU-bound work (parsing a large import, building hundreds of feeds): how they start.

The service may run threads (the scheduler, the web server, a feed build's file writer), and forking a process
with threads can copy a lock some other thread held. So workers come from a fork server: a small, single-threaded
process that forks each worker. The service's modules are loaded into that server once, so a worker starts in
milliseconds instead of spending a second importing SQLAlchemy, lxml and feedgen again; the server lives as long
as the process that started it, so a long-running ``syndication run`` pays for that import once.
"""

from __future__ import annotations

import multiprocessing
from multiprocessing.context import ForkServerContext

# What the fork server imports before it forks anyone: everything a worker runs is reachable from here.
PRELOADED = ["syndication.feeds.build", "syndication.sources.jsonl"]


def worker_context() -> ForkServerContext:
    """The multiprocessing context every pool of worker processes uses."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(PRELOADED)  # only takes effect before the server starts; later calls are no-ops
    return context


def start_fork_server() -> None:
    """Start the fork server now (it loads the modules in the background), so the first pool need not wait for it."""
    worker_context()
    from multiprocessing import forkserver

    forkserver.ensure_running()
