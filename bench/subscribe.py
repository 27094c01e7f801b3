"""Accepted subscribe requests per second against the real server, beside ``GET /subscribe`` in the same run.

Goal (issue 16): with 1 and with 50 concurrent clients, accepted subscribe form posts (distinct addresses, a
valid CSRF cookie and token, answered "Check your inbox") at least a quarter of the rate of ``GET /subscribe``
(the form page) with as many clients.

The server runs as ``syndication serve`` runs it (``syndication.web.app.serve``: uvicorn, httptools, the
``[web]`` limits, and the app's notices drain sending each confirmation) in a subprocess, on a SQLite store,
sending to a discarding aiosmtpd sink in a process of its own. The clients are threads of this process, each
with one keep-alive ``http.client`` connection; GETs and posts are measured in alternating rounds, so that a
noisy moment of this shared machine falls on both alike. After the posts, the time the drain took to send the
last confirmation is reported too (the requests do not wait for it).
"""

from __future__ import annotations

import argparse
import http.client
import re
import tempfile
from itertools import count
from pathlib import Path
from urllib.parse import urlencode

from bench.load import measure, server_config, serving, wait_for_drain
from bench.measured import Measured
from bench.records import record
from bench.send_digests import sink
from syndication.app.service import init_store
from syndication.config import load_settings

GOAL_RATIO = 0.25
ROUNDS = 3
CSRF_FIELD = re.compile(r'name="csrf_token" value="([^"]*)"')


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; ``--record`` appends the figures to bench/README.md."""
    parser = argparse.ArgumentParser(prog="python -m bench.subscribe", description=__doc__)
    parser.add_argument("--requests", type=int, default=3000, help="requests of each kind per concurrency")
    parser.add_argument("--record", action="store_true", help="append the figures to bench/README.md")
    args = parser.parse_args(argv)
    lines: list[str] = []
    verdicts: list[bool] = []
    with tempfile.TemporaryDirectory() as folder, sink() as smtp_port:
        work = Path(folder)
        config = server_config(work, smtp_port)
        init_store(load_settings(config, environ={}))
        addresses = count()
        with serving(config) as port:
            for clients in (1, 50):
                got, posted = Measured(), Measured()
                for _ in range(ROUNDS):
                    measure(lambda: Browser(port), clients, args.requests // ROUNDS, got, Browser.form)
                    measure(
                        lambda: Browser(port), clients, args.requests // ROUNDS, posted,
                        lambda browser: browser.subscribe(f"reader{next(addresses)}@example.org"),
                    )  # fmt: skip
                if got.errors or posted.errors:
                    raise AssertionError(f"{got.errors + posted.errors} requests failed")
                ratio = posted.rate / got.rate
                verdicts.append(ratio >= GOAL_RATIO)
                lines += [
                    f"- {clients} client{'s' if clients > 1 else ''}: `GET /subscribe` {got.rate:,.0f} requests/s "
                    f"(p50 {got.p(50):.1f} ms, p99 {got.p(99):.1f} ms); accepted subscribe posts "
                    f"{posted.rate:,.0f} requests/s (p50 {posted.p(50):.1f} ms, p99 {posted.p(99):.1f} ms); "
                    f"posts / GETs = {ratio:.2f} (goal >= {GOAL_RATIO}): {'PASS' if ratio >= GOAL_RATIO else 'FAIL'}"
                ]
            total = next(addresses)
            sent_after = wait_for_drain(work / "store.db", total)
        lines.insert(
            0,
            f"- `serve` in a subprocess (uvicorn, httptools, the app's notices drain) on SQLite, a discarding SMTP "
            f"sink in another process; {args.requests:,} requests of each kind per concurrency, {ROUNDS} "
            f"alternating rounds; clients are threads of the benchmark's process with one keep-alive `http.client` "
            f"connection each",
        )
        lines.append(
            f"- confirmations: {total:,} subscribers stored and their {total:,} confirmations queued by the posts; "
            + (
                f"the server's drain had sent the last one {sent_after:.1f} s after the last post was answered"
                if sent_after is not None
                else "the server's drain had not sent them all 120 s after the last post"
            )
        )
    print("\n".join(lines))
    if args.record:
        record("Subscribe requests (issue 16)", lines)
    return 0 if all(verdicts) else 1


class Browser:
    """One keep-alive connection with the subscribe form's CSRF cookie and token."""

    def __init__(self, port: int) -> None:
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        status, html, cookie = self._get()
        match = CSRF_FIELD.search(html)
        assert status == 200 and match and cookie, status
        self.token = match.group(1)
        self.headers = {"Cookie": cookie, "Content-Type": "application/x-www-form-urlencoded"}

    def _get(self) -> tuple[int, str, str]:
        self.connection.request("GET", "/subscribe")
        response = self.connection.getresponse()
        html = response.read().decode()
        return response.status, html, (response.headers.get("set-cookie") or "").split(";")[0]

    def form(self) -> bool:
        """GET the form; whether it came."""
        status, html, _ = self._get()
        return status == 200 and "csrf_token" in html

    def subscribe(self, address: str) -> bool:
        """Post the form for ``address``; whether it was accepted."""
        body = urlencode({"csrf_token": self.token, "email": address, "cadence": "weekly", "language": "en"})
        self.connection.request("POST", "/subscribe", body=body, headers=self.headers)
        response = self.connection.getresponse()
        return response.status == 200 and b"Check your inbox" in response.read()

    def close(self) -> None:
        self.connection.close()


if __name__ == "__main__":
    raise SystemExit(main())
