"""Requests per second to the JSON API (issue 21) against the real server, beside ``GET /healthz`` in the same run.

No goal is set: the figures are recorded. Measured with 1 and with 50 concurrent clients: ``GET
/api/v1/posts?limit=50`` (pages of 50 of a store of 2,000 generated posts, taken round-robin from the chain of
``next`` cursors, so every page is read alike, the deepest too), ``POST /api/v1/subscribers`` (distinct addresses,
pending: each one's confirmation queued for the notices drain, as the form's), and ``GET /healthz`` (the same
app's bare endpoint: no store, no token).

The server runs as ``syndication serve`` runs it (``bench.load``: uvicorn, httptools, the app's notices drain;
mail goes to a discarding SMTP sink in a process of its own) on a SQLite store prepared
beforehand; the token (scopes read and subscribers) is made by the use case ``tokens create`` calls, and the
rate limit per token is set out of the way. The clients are threads of this process, each with one keep-alive
``http.client`` connection; the three kinds are measured in rounds, each kind in each place of the order once,
so that a noisy moment of this shared machine falls on all alike. Every answer's status and body is checked
(200 with the page expected, 201 with a pending subscriber whose confirmation was queued, 200 ``ok``); any other
is counted as an error, and an error makes the exit status 1.
"""

from __future__ import annotations

import argparse
import http.client
import json
import sqlite3
import tempfile
from collections.abc import Callable
from itertools import count
from pathlib import Path

from bench.generate import write_posts
from bench.load import measure, server_config, serving, wait_for_drain
from bench.measured import Measured
from bench.records import record
from bench.send_digests import sink
from syndication.app.api import create_token
from syndication.app.gathering import import_file
from syndication.app.service import Service, init_store
from syndication.config import load_settings

ROUNDS = 3
LIMIT = 50
POSTS_PATH = f"/api/v1/posts?limit={LIMIT}"


class ApiClient:
    """One keep-alive connection sending the token with every request."""

    def __init__(self, port: int, token: str) -> None:
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        self.headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}

    def call(self, method: str, path: str, body: str | None = None) -> tuple[int, bytes]:
        """The answer's status and body."""
        self.connection.request(method, path, body=body, headers=self.headers)
        response = self.connection.getresponse()
        return response.status, response.read()

    def close(self) -> None:
        self.connection.close()


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; ``--record`` appends the figures to bench/README.md."""
    parser = argparse.ArgumentParser(prog="python -m bench.api", description=__doc__)
    parser.add_argument("--requests", type=int, default=3000, help="requests of each kind per concurrency")
    parser.add_argument("--posts", type=int, default=2000, help="posts in the store")
    parser.add_argument("--record", action="store_true", help="append the figures to bench/README.md")
    args = parser.parse_args(argv)
    lines: list[str] = []
    errors = 0
    with tempfile.TemporaryDirectory() as folder, sink() as smtp_port:
        work = Path(folder)
        config = server_config(work, smtp_port, "[api]\nrequests_per_minute = 100000000\n")
        token = prepare(config, write_posts(work / "posts.jsonl", args.posts))
        addresses = count()
        with serving(config) as port:
            pages = page_chain(ApiClient(port, token))
            turn = count()

            def read_page(client: ApiClient) -> bool:
                path, tail, items = pages[next(turn) % len(pages)]
                status, body = client.call("GET", path)
                return status == 200 and body.endswith(tail) and body.count(b'"guid":') == items

            def subscribe(client: ApiClient) -> bool:
                address = json.dumps({"email": f"api{next(addresses)}@example.org"})
                status, body = client.call("POST", "/api/v1/subscribers", address)
                return status == 201 and all(
                    part in body for part in (b'"action":"added"', b'"status":"pending"', b'"confirmation_queued":true')
                )

            def healthz(client: ApiClient) -> bool:
                return client.call("GET", "/healthz") == (200, b"ok\n")

            kinds: list[tuple[str, Callable[[ApiClient], bool]]] = [
                ("`GET /healthz`", healthz),
                (f"`GET {POSTS_PATH}`", read_page),
                ("`POST /api/v1/subscribers`", subscribe),
            ]
            for clients in (1, 50):
                measured = {name: Measured() for name, _ in kinds}
                for round_ in range(ROUNDS):
                    for name, act in kinds[round_:] + kinds[:round_]:
                        measure(lambda: ApiClient(port, token), clients, args.requests // ROUNDS, measured[name], act)
                bare = measured[kinds[0][0]]
                figures = []
                for name, done in measured.items():
                    errors += done.errors
                    figure = f"{name} {done.rate:,.0f} requests/s (p50 {done.p(50):.1f} ms, p99 {done.p(99):.1f} ms)"
                    figures.append(figure if done is bare else f"{figure}, {done.rate / bare.rate:.2f}x the bare")
                answered = sum(done.count for done in measured.values())
                wrong = sum(done.errors for done in measured.values())
                lines.append(
                    f"- {clients} client{'s' if clients > 1 else ''}: " + "; ".join(figures)
                    + f"; answers not as expected: {wrong} of {answered:,}"
                )  # fmt: skip
            total = next(addresses)
            with sqlite3.connect(work / "store.db") as store:
                queued = int(store.execute("SELECT count(*) FROM notices").fetchone()[0])
            sent_after = wait_for_drain(work / "store.db", queued) if queued else None
    lines.insert(
        0,
        f"- `serve` in a subprocess (uvicorn, httptools, the app's notices drain) on SQLite with {args.posts:,} "
        f"generated posts ({len(pages)} pages of {LIMIT}, read round-robin), a token with scopes read and "
        f"subscribers, a discarding SMTP sink in another process; {args.requests:,} requests of each kind per "
        f"concurrency in {ROUNDS} rounds (each kind first, second and third once); clients are threads of the "
        f"benchmark's process with one keep-alive `http.client` connection each",
    )
    lines.append(
        f"- confirmations: {total:,} pending subscribers added, each answer saying its confirmation was queued; "
        f"{queued:,} notices queued for the server's drain"
        + (
            ""
            if not queued
            else f", the last sent {sent_after:.1f} s after the last post"
            if sent_after
            else ", not all sent in 120 s"
        )
    )
    print("\n".join(lines))
    if args.record:
        record("JSON API requests (issue 21)", lines)
    return 0 if errors == 0 else 1


def prepare(config: Path, posts: Path) -> str:
    """Make the store of ``config``, import ``posts`` into it and create the benchmark's token; its text."""
    settings = load_settings(config, environ={})
    init_store(settings)
    with Service.open(settings) as service:
        report = import_file(service, posts)
        assert report.added > 0 and not report.rejections, report
        _, text = create_token(service, "bench", ["read", "subscribers"], actor="cli:bench")
    return text


def page_chain(client: ApiClient) -> list[tuple[str, bytes, int]]:
    """Every page of posts by following ``next`` from the first: its path, how its body ends (the next cursor)
    and how many posts it holds."""
    pages: list[tuple[str, bytes, int]] = []
    path: str | None = POSTS_PATH
    while path is not None:
        status, body = client.call("GET", path)
        assert status == 200, (status, body[:200])
        page = json.loads(body)
        tail = json.dumps({"next": page["next"]}, separators=(",", ":"))[1:].encode()
        assert body.endswith(tail), body[-200:]
        pages.append((path, tail, len(page["items"])))
        path = None if page["next"] is None else f"{POSTS_PATH}&cursor={page['next']}"
    client.close()
    return pages


if __name__ == "__main__":
    raise SystemExit(main())
