"""Deliver 20,000 personalised digests through the whole pipeline to a local SMTP sink, against a bare smtplib loop.

The pipeline: queue the edition (one delivery per subscriber with something new), then drain it as ``syndication
deliver`` does: claim, build each message from its variant (signed links, headers), send over ``[delivery]
connections`` SMTP connections, record each outcome in the store. The bare loop: the same number of pre-built
messages of the same sizes, sent by plain ``smtplib`` over one reused connection. Both go to the same aiosmtpd
sink, in its own process, which accepts and discards.

Goal (issue 6): the full pipeline reaches at least 80% of the bare loop's rate, measured in the same run.
"""

from __future__ import annotations

import argparse
import random
import smtplib
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import select

from bench.generate import THEMES, bench_themes_toml, write_posts
from bench.records import record
from syndication.app.editions import MessageBuilder, deliver, plan_edition
from syndication.app.gathering import import_file
from syndication.app.service import Service, init_store
from syndication.clock import fixed_clock
from syndication.config import load_settings
from syndication.core.models import Consent
from syndication.store import database, ledger
from syndication.store.schema import DeliveryRow
from syndication.store.subscribers import insert_subscriber

GOAL_RATIO = 0.8
START = datetime(2020, 1, 1, tzinfo=UTC)  # bench.generate publishes post n at START + n hours
SINK = """
import asyncio, sys
from aiosmtpd.controller import Controller
class Discard:
    async def handle_DATA(self, server, session, envelope):
        return "250 OK"
controller = Controller(Discard(), hostname="127.0.0.1", port=int(sys.argv[1]), data_size_limit=0)
controller.start()
print("ready", flush=True)
sys.stdin.read()
controller.stop()
"""


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; ``--record`` appends the figures to bench/README.md."""
    parser = argparse.ArgumentParser(prog="python -m bench.send_digests", description=__doc__)
    parser.add_argument("--subscribers", type=int, default=20_000)
    parser.add_argument("--record", action="store_true", help="append the figures to bench/README.md")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as folder, sink() as port:
        work = Path(folder)
        config = work / "config.toml"
        config.write_text(
            f'[site]\ntitle = "News Example"\nbase_url = "https://news.example.org"\n'
            f'[database]\nurl = "sqlite:///{work / "store.db"}"\n'
            f'[smtp]\nhost = "127.0.0.1"\nport = {port}\n{bench_themes_toml()}',
            "utf-8",
        )
        settings = load_settings(config, environ={"SYNDICATION_SECRET_KEY": "bench-send-digests-signing-key"})
        init_store(settings)
        until = START + timedelta(hours=199)
        since = until - timedelta(hours=30)
        with Service.open(settings, fixed_clock(until + timedelta(hours=1))) as service:
            import_file(service, write_posts(work / "posts.jsonl", 200))
            add_subscribers(service, args.subscribers)
            started = time.perf_counter()
            plan = plan_edition(service, "weekly", since, until)
            queued_s = time.perf_counter() - started
            report = deliver(service)
            pipeline_s = time.perf_counter() - started
            assert report.sent == plan.queued, report
            samples = sample_messages(service, plan.edition.id if plan.edition else 0)
        bare_s = bare_loop(port, samples, plan.queued)
    pipeline_rate, bare_rate = plan.queued / pipeline_s, plan.queued / bare_s
    ratio = pipeline_rate / bare_rate
    mean_kib = sum(len(m) for m in samples) / len(samples) / 1024
    lines = [
        f"- {plan.queued:,} personalised digests ({len(plan.variants)} variants, mean {mean_kib:.1f} KiB) to a "
        f"discarding aiosmtpd sink in another process; {settings.delivery.connections} SMTP connections",
        f"- full pipeline (queue {queued_s:.1f} s, then claim, build, send, record each): {pipeline_s:.1f} s = "
        f"{pipeline_rate:,.0f} messages/s",
        f"- bare smtplib loop, one reused connection, pre-built messages of the same sizes: {bare_s:.1f} s = "
        f"{bare_rate:,.0f} messages/s",
        f"- pipeline / bare = {ratio:.2f} (goal >= {GOAL_RATIO}): {'PASS' if ratio >= GOAL_RATIO else 'FAIL'}",
    ]
    print("\n".join(lines))
    if args.record:
        record("Delivering digests (issue 6)", lines)
    return 0


def add_subscribers(service: Service, count: int) -> None:
    """``count`` active weekly subscribers over 50 theme combinations and two languages."""
    rng = random.Random(7)
    combinations = [tuple(sorted(rng.sample(THEMES, rng.randint(1, 3)))) for _ in range(49)] + [None]
    consent = Consent(service.clock(), "import", "benchmark")
    with database.transaction(service.engine) as session:
        for number in range(count):
            themes = combinations[number % len(combinations)]
            insert_subscriber(session, email=f"reader{number}@example.org", name=f"Ana Pérez {number}",
                              language=("en", "es")[number % 2], themes=themes, cadence="weekly", status="active",
                              consent=consent, now=service.clock())  # fmt: skip


def sample_messages(service: Service, edition_id: int, count: int = 500) -> list[bytes]:
    """Messages built exactly as the pipeline built them, for the bare loop to send (not timed)."""
    builder = MessageBuilder(service)
    with database.transaction(service.engine) as session:
        deliveries = session.execute(
            select(DeliveryRow.id, DeliveryRow.subscriber_id, DeliveryRow.message_id)
            .where(DeliveryRow.edition_id == edition_id)
            .limit(count)
        ).all()
    claims = [ledger.Claim(delivery_id, edition_id, subscriber_id, message_id, 0)
              for delivery_id, subscriber_id, message_id in deliveries]  # fmt: skip
    messages = []
    for built in builder.build(claims):
        assert not isinstance(built, str), built
        messages.append(built.message)
    return messages


def bare_loop(port: int, messages: list[bytes], count: int) -> float:
    """Seconds for plain smtplib to send ``count`` of ``messages`` (in turn) over one connection."""
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        started = time.perf_counter()
        for number in range(count):
            client.sendmail(
                "bounces@news.example.org", [f"reader{number}@example.org"], messages[number % len(messages)]
            )
        return time.perf_counter() - started


@contextmanager
def sink() -> Iterator[int]:
    """A discarding SMTP server in its own process (so it does not share this one's GIL); yields its port."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    process = subprocess.Popen([sys.executable, "-c", SINK, str(port)], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert process.stdout is not None and process.stdout.readline().strip() == "ready"
        yield port
    finally:
        assert process.stdin is not None
        process.stdin.close()
        process.wait(timeout=10)


if __name__ == "__main__":
    raise SystemExit(main())
