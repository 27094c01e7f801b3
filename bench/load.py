"""What the load benchmarks against the real server share: ``syndication serve`` in a subprocess on a prepared
configuration, threads of clients each on its own keep-alive connection, and the wait for the notices' drain."""

from __future__ import annotations

import http.client
import os
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol, TypeVar

from bench.generate import bench_themes_toml
from bench.measured import Measured

KEY = "bench-subscribe-signing-key-0123456789abcdef"
SERVER = (
    "import sys; from pathlib import Path; from syndication.config import load_settings; "
    "from syndication.web.app import listening_socket, serve; "
    "serve(load_settings(Path(sys.argv[1])), listening_socket('127.0.0.1', int(sys.argv[2])))"
)


class Client(Protocol):
    """One client's connection: whatever it is, it closes."""

    def close(self) -> None: ...


C = TypeVar("C", bound=Client)


def server_config(work: Path, smtp_port: int, extra: str = "") -> Path:
    """A configuration in ``work``: a SQLite store and feeds there, mail to ``smtp_port``, the form's per-client
    limit out of the way, the generated themes and regions, and ``extra`` (TOML tables)."""
    config = work / "config.toml"
    config.write_text(
        f'[site]\nbase_url = "https://news.example.org"\n[database]\nurl = "sqlite:///{work / "store.db"}"\n'
        f'[feeds]\noutput_dir = "{work / "feeds"}"\n'
        f'[smtp]\nhost = "127.0.0.1"\nport = {smtp_port}\ntimeout_seconds = 10\n'
        '[mail]\nfrom_address = "news@example.org"\n'
        f"[web]\nsubscribe_per_client_per_hour = 100000000\n{extra}"
        f"{bench_themes_toml()}",
        "utf-8",
    )
    return config


@contextmanager
def serving(config: Path) -> Iterator[int]:
    """``syndication serve``'s server on ``config`` in a subprocess on a free port; yields the port."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    environ = {**os.environ, "SYNDICATION_SECRET_KEY": KEY}
    process = subprocess.Popen(
        [sys.executable, "-c", SERVER, str(config), str(port)],
        env=environ,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                connection.request("GET", "/subscribe")
                connection.getresponse().read()
                connection.close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the server did not start") from None
                time.sleep(0.05)
        yield port
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def measure(connect: Callable[[], C], clients: int, total: int, into: Measured, act: Callable[[C], bool]) -> None:
    """``total`` requests (``act``, true when answered as expected) shared by ``clients`` threads, each with its
    own client (``connect``, made before the clock starts); the wall time from all starting to all done is added
    to ``into``, and the requests not answered as expected to its ``errors``."""
    connections = [connect() for _ in range(clients)]
    share = [total // clients + (1 if n < total % clients else 0) for n in range(clients)]
    start = threading.Barrier(clients + 1)
    lock = threading.Lock()

    def run(connection: C, requests: int) -> None:
        samples = []
        errors = 0
        start.wait()
        for _ in range(requests):
            sent = time.perf_counter()
            ok = act(connection)
            samples.append((time.perf_counter() - sent) * 1000)
            errors += not ok
        with lock:
            into.latency.extend(samples)
            into.errors += errors

    threads = [threading.Thread(target=run, args=pair) for pair in zip(connections, share, strict=True)]
    for thread in threads:
        thread.start()
    start.wait()
    began = time.perf_counter()
    for thread in threads:
        thread.join()
    into.seconds += time.perf_counter() - began
    into.count += total
    for connection in connections:
        connection.close()


def wait_for_drain(store: Path, total: int, timeout: float = 120.0) -> float | None:
    """Seconds until the server's drain had sent ``total`` notices (None: not within ``timeout``)."""
    started = time.perf_counter()
    while time.perf_counter() - started < timeout:
        with sqlite3.connect(store, timeout=30) as connection:
            sent = connection.execute("SELECT count(*) FROM notices WHERE status = 'sent'").fetchone()[0]
        if sent >= total:
            return time.perf_counter() - started
        time.sleep(0.2)
    return None
