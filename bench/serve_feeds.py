"""Conditional GETs of built feeds against the real server: what every feed reader's poll costs.

Goal: a 304 (If-None-Match matching) under 2 ms of server time, and over 1,000 conditional GETs per second from
one client process (one keep-alive ``http.client`` connection) on this 2-core machine.

The server runs as ``syndication serve`` does (``syndication.web.app.serve``: uvicorn with httptools) in a
subprocess, so client and server do not share a GIL. Server time is measured in this process by calling the
whole ASGI app (middleware, routing, handler) directly with the same request; it leaves out uvicorn's HTTP/1.1
parsing and socket work, which the client-side latency includes.

The floor, measured in the same run: the same client against a server that answers every request with a fixed
304 at once (a bare asyncio protocol, no HTTP parsing): what the client and the loopback cost by themselves.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import importlib.util
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from bench.generate import REGIONS, THEMES, bench_themes_toml, write_posts
from bench.measured import Measured
from bench.records import record
from syndication.app.gathering import import_file
from syndication.app.publishing import publish_feeds
from syndication.app.service import Service, init_store
from syndication.clock import fixed_clock
from syndication.config import Settings, load_settings
from syndication.web.app import create_app

SERVER_TIME_GOAL_MS = 2.0
RATE_GOAL = 1000.0
ROUNDS = 3
WARM_UP = 200
# The documents polled, in turn: what readers subscribe to most.
POLLED = (
    ["all.atom", "all.rss", "all.json"] + [f"themes/{t}.atom" for t in THEMES] + [f"regions/{r}.rss" for r in REGIONS]
)
# The floor: reads requests up to their blank line and answers each with the same 304, nothing else.
FLOOR_SERVER = """
import asyncio, sys
ANSWER = b'HTTP/1.1 304 Not Modified\\r\\netag: "x"\\r\\ncache-control: public, max-age=300\\r\\n\\r\\n'
class Floor(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport, self.buffer = transport, b''
    def data_received(self, data):
        self.buffer += data
        while b'\\r\\n\\r\\n' in self.buffer:
            _, self.buffer = self.buffer.split(b'\\r\\n\\r\\n', 1)
            self.transport.write(ANSWER)
async def main():
    server = await asyncio.get_running_loop().create_server(Floor, '127.0.0.1', int(sys.argv[2]))
    await server.serve_forever()
asyncio.run(main())
"""
SERVER = (
    "import sys; from pathlib import Path; from syndication.config import load_settings; "
    "from syndication.web.app import serve; serve(load_settings(Path(sys.argv[1]), environ={}), '127.0.0.1', "
    "int(sys.argv[2]))"
)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; ``--record`` appends the figures to bench/README.md."""
    parser = argparse.ArgumentParser(prog="python -m bench.serve_feeds", description=__doc__)
    parser.add_argument("--posts", type=int, default=3000)
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--record", action="store_true", help="append the figures to bench/README.md")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        settings, build_seconds, documents = build(work, args.posts)
        server_ms = server_times(settings, args.requests)
        config = work / "config.toml"
        with running(SERVER, config) as served, running(FLOOR_SERVER, config) as floor_url:
            with httpx.Client(base_url=served, timeout=10) as client:
                etags = {path: client.get(f"/feeds/{path}").headers["etag"] for path in POLLED}
            real, floor = Measured(), Measured()
            # Rounds taken in turn, so a noisy moment of this shared machine falls on both alike.
            for _ in range(ROUNDS):
                poll(served, args.requests // ROUNDS, etags, real)
                poll(floor_url, args.requests // ROUNDS, etags, floor)
            full_ms, full_bytes = full_gets(served)
    parser_name = "httptools" if importlib.util.find_spec("httptools") else "h11 (httptools is not installed)"
    server_p99 = percentile(server_ms, 99)
    share_ms = 1000 / real.rate - 1000 / floor.rate
    lines = [
        f"- store: {args.posts:,} generated posts; feeds build {build_seconds:.1f} s, {documents:,} documents",
        f"- server time of a 304 (whole ASGI app called in-process, {len(server_ms):,} calls): mean "
        f"{statistics.fmean(server_ms):.3f} ms, p50 {percentile(server_ms, 50):.3f} ms, p99 {server_p99:.3f} ms "
        f"(goal < {SERVER_TIME_GOAL_MS:.0f} ms): {'PASS' if server_p99 < SERVER_TIME_GOAL_MS else 'FAIL'}",
        f"- {real.count:,} conditional GETs, one keep-alive http.client connection, to `serve` (uvicorn, HTTP parser "
        f"{parser_name}) in a subprocess: {real.rate:,.0f} requests/s (goal > {RATE_GOAL:,.0f}/s): "
        f"{'PASS' if real.rate > RATE_GOAL else 'FAIL'}",
        f"- their latency at the client: mean {statistics.fmean(real.latency):.3f} ms, p50 "
        f"{percentile(real.latency, 50):.3f} ms, p99 {percentile(real.latency, 99):.3f} ms",
        f"- floor, the same client against a bare server answering a fixed 304 at once: {floor.rate:,.0f} "
        f"requests/s, p50 {percentile(floor.latency, 50):.3f} ms; the real server adds {share_ms:.3f} ms a "
        f"request (HTTP parsing, app)",
        f"- for comparison, a full 200 of all.atom (gzip, body cached, {full_bytes:,} bytes): mean {full_ms:.3f} ms",
    ]
    print("\n".join(lines))
    if args.record:
        record("Serving feeds: conditional GETs", lines)
    return 0


def build(work: Path, posts: int) -> tuple[Settings, float, int]:
    """A SQLite store of ``posts`` generated posts with its feeds built; the build's seconds and documents."""
    source = write_posts(work / "posts.jsonl", posts)
    config = work / "config.toml"
    config.write_text(
        f'[database]\nurl = "sqlite:///{work / "store.db"}"\n[feeds]\noutput_dir = "{work / "feeds"}"\n'
        f"{bench_themes_toml()}",
        "utf-8",
    )
    settings = load_settings(config, environ={})
    init_store(settings)
    now = datetime(2020, 1, 1, tzinfo=UTC) + timedelta(hours=posts)
    with Service.open(settings, fixed_clock(now)) as service:
        report = import_file(service, source)
        assert report.added == posts and not report.rejections, report
        started = time.perf_counter()
        built = publish_feeds(service)
        seconds = time.perf_counter() - started
    return settings, seconds, len(built.written)


def server_times(settings: Settings, count: int) -> list[float]:
    """Milliseconds the app takes to answer each of ``count`` matching conditional GETs, called directly."""
    app = create_app(settings)

    async def run() -> list[float]:
        etags = {path: await asgi_etag(app, path) for path in POLLED}
        samples = []
        for number in range(count + WARM_UP):
            path = POLLED[number % len(POLLED)]
            scope = http_scope(f"/feeds/{path}", [(b"if-none-match", etags[path])])
            sent: list[dict[str, Any]] = []
            started = time.perf_counter()
            await app(scope, _receive, _collector(sent))
            elapsed = (time.perf_counter() - started) * 1000
            assert sent[0]["status"] == 304, sent[0]
            if number >= WARM_UP:  # the first ones warm the manifest and the caches
                samples.append(elapsed)
        return samples

    return asyncio.run(run())


async def asgi_etag(app: Any, path: str) -> bytes:
    """The ETag the app gives ``path`` for a gzip-accepting client."""
    sent: list[dict[str, Any]] = []
    await app(http_scope(f"/feeds/{path}", []), _receive, _collector(sent))
    assert sent[0]["status"] == 200, (path, sent[0])
    etag: bytes = next(value for name, value in sent[0]["headers"] if name == b"etag")
    return etag


def http_scope(path: str, headers: list[tuple[bytes, bytes]]) -> dict[str, Any]:
    """An ASGI HTTP scope for a GET of ``path`` as httpx would send it."""
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [
            (b"host", b"127.0.0.1"),
            (b"accept", b"*/*"),
            (b"accept-encoding", b"gzip, deflate"),
            (b"connection", b"keep-alive"),
            (b"user-agent", b"python-httpx"),
            *headers,
        ],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
        "state": {},
    }


async def _receive() -> dict[str, Any]:
    return {"type": "http.request", "body": b"", "more_body": False}


def _collector(sent: list[dict[str, Any]]) -> Any:
    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    return send


@contextmanager
def running(code: str, config: Path) -> Iterator[str]:
    """``python -c code CONFIG PORT`` in a subprocess on a free port, until the block ends; yields its URL."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # Its log (an access line per request, as in production) goes nowhere: a pipe nobody reads would fill.
    process = subprocess.Popen(
        [sys.executable, "-c", code, str(config), str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        base_url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"{base_url}/feeds/all.atom", timeout=1)
                break
            except httpx.TransportError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the server did not start: {code[:60]!r}") from None
                time.sleep(0.05)
        yield base_url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def poll(base_url: str, count: int, etags: dict[str, str], into: Measured) -> None:
    """``count`` matching conditional GETs over one keep-alive connection, after a warm-up, added to ``into``.

    The client is the standard library's http.client, as a feed reader's fetcher is a small HTTP/1.1 client: a
    heavier one (httpx) costs more than the server does here, and the goal is the server's rate.
    """
    parts = urlsplit(base_url)
    connection = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=10)
    try:

        def get(path: str) -> int:
            connection.request("GET", f"/feeds/{path}", headers={"If-None-Match": etags[path]})
            response = connection.getresponse()
            response.read()
            return response.status

        for number in range(WARM_UP):  # the connection, the manifest and the caches
            get(POLLED[number % len(POLLED)])
        started = time.perf_counter()
        for number in range(count):
            path = POLLED[number % len(POLLED)]
            sent = time.perf_counter()
            status = get(path)
            into.latency.append((time.perf_counter() - sent) * 1000)
            if status != 304:
                raise AssertionError(f"{path}: {status} instead of 304")
        into.seconds += time.perf_counter() - started
        into.count += count
    finally:
        connection.close()


def full_gets(base_url: str, count: int = 200) -> tuple[float, int]:
    """Mean ms of an unconditional GET of all.atom (gzip, as httpx asks), and its size on the wire."""
    with httpx.Client(base_url=base_url, timeout=10) as client:
        client.get("/feeds/all.atom")
        samples = []
        for _ in range(count):
            sent = time.perf_counter()
            response = client.get("/feeds/all.atom")
            samples.append((time.perf_counter() - sent) * 1000)
            assert response.status_code == 200 and response.headers["content-encoding"] == "gzip"
    return statistics.fmean(samples), int(response.headers["content-length"])


def percentile(samples: list[float], percent: float) -> float:
    """The ``percent`` percentile of ``samples`` (nearest rank)."""
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, max(0, round(percent / 100 * len(ordered)) - 1))]


if __name__ == "__main__":
    raise SystemExit(main())
