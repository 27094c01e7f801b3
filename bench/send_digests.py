"""Deliver 20,000 personalised digests through the whole pipeline to a local SMTP sink, against a bare smtplib loop.

The pipeline: queue the edition (one delivery per subscriber with something new), then drain it as ``syndication
deliver`` does: claim, build each message from its variant (signed links, headers), send over ``[delivery]
connections`` SMTP connections, record each outcome in the store. The bare loop: the same number of pre-built
messages of the same sizes, sent by plain ``smtplib`` over one reused connection. Both go to the same aiosmtpd
sink, in its own process, which accepts and discards.

Goal (issue 6): the full pipeline reaches at least 80% of the bare loop's rate, measured in the same run.

The pipeline runs twice, on stores of its own: without DKIM, then with ``[dkim]`` set (a 2048-bit RSA key made
for the run with ``cryptography``), every message signed by the Mailer as it leaves. Goal (issue 17): with DKIM
the pipeline keeps at least 80% of its rate without it.
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
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import select

from bench.generate import THEMES, bench_themes_toml, write_posts
from bench.records import record
from syndication.app.editions import MessageBuilder, deliver, plan_edition
from syndication.app.gathering import import_file
from syndication.app.service import Service, init_store
from syndication.clock import fixed_clock
from syndication.config import Settings, load_settings
from syndication.core.models import Consent
from syndication.delivery.mailer import Mailer
from syndication.store import database, ledger
from syndication.store.schema import DeliveryRow
from syndication.store.subscribers import insert_subscriber

GOAL_RATIO = 0.8
DKIM_GOAL_RATIO = 0.8  # issue 17: with DKIM, at least 80% of the rate without it
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


@dataclass
class Run:
    """One pipeline run: what was queued, how long queueing and the whole run took, messages as it built them."""

    settings: Settings
    queued: int
    variants: int
    queued_s: float
    pipeline_s: float
    unsealed: list[bytes]  # messages as the pipeline built them, before the Mailer sealed them
    samples: list[bytes]  # the same sealed (dated, and signed with DKIM on), as they left

    @property
    def rate(self) -> float:
        """Messages per second, end to end."""
        return self.queued / self.pipeline_s


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; ``--record`` appends the figures to bench/README.md."""
    parser = argparse.ArgumentParser(prog="python -m bench.send_digests", description=__doc__)
    parser.add_argument("--subscribers", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=2, help="runs of each (without, with DKIM), alternated")
    parser.add_argument("--record", action="store_true", help="append the figures to bench/README.md")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as folder, sink() as port:
        work = Path(folder)
        key_file = dkim_key(work / "dkim.pem")
        dkim_toml = f'[dkim]\ndomain = "news.example.org"\nselector = "bench"\nkey_file = "{key_file}"\n'
        plains, signeds = [], []
        for round_number in range(args.rounds):  # alternated, so drift on this shared machine hits both alike
            plains.append(pipeline(work / f"plain{round_number}", port, args.subscribers, dkim=""))
            signeds.append(pipeline(work / f"dkim{round_number}", port, args.subscribers, dkim=dkim_toml))
        plain, signed = max(plains, key=lambda run: run.rate), max(signeds, key=lambda run: run.rate)
        assert all(m.startswith(b"DKIM-Signature:") for m in signed.samples)
        assert not any(m.startswith(b"DKIM-Signature:") for m in plain.samples)
        bare_s = bare_loop(port, plain.samples, plain.queued)
        plain_seal_ms, signed_seal_ms = seal_ms(plain), seal_ms(signed)  # while the key file is there
    bare_rate = plain.queued / bare_s
    ratio, dkim_ratio = plain.rate / bare_rate, signed.rate / plain.rate
    mean_kib = sum(len(m) for m in plain.samples) / len(plain.samples) / 1024
    lines = [
        f"- {plain.queued:,} personalised digests ({plain.variants} variants, mean {mean_kib:.1f} KiB) to a "
        f"discarding aiosmtpd sink in another process; {plain.settings.delivery.connections} SMTP connections",
        f"- {args.rounds} rounds of each run, alternated (no DKIM, DKIM on, ...), each on a new store; the best"
        f" of each below. Rates without DKIM: {', '.join(f'{run.rate:,.0f}' for run in plains)}; with DKIM: "
        f"{', '.join(f'{run.rate:,.0f}' for run in signeds)} messages/s",
        f"- full pipeline, no DKIM (queue {plain.queued_s:.1f} s, then claim, build, send, record each): "
        f"{plain.pipeline_s:.1f} s = {plain.rate:,.0f} messages/s",
        f"- full pipeline, DKIM on (rsa-sha256, 2048-bit key; each message signed by the Mailer as it leaves; "
        f"queue {signed.queued_s:.1f} s): {signed.pipeline_s:.1f} s = {signed.rate:,.0f} messages/s",
        f"- sealing one message in this process (Date, and the signature when on), mean over the samples:"
        f" {plain_seal_ms:.3f} ms without DKIM, {signed_seal_ms:.3f} ms with",
        f"- bare smtplib loop, one reused connection, pre-built messages of the same sizes (no DKIM): {bare_s:.1f} s"
        f" = {bare_rate:,.0f} messages/s",
        f"- pipeline / bare = {ratio:.2f} (goal >= {GOAL_RATIO}): {'PASS' if ratio >= GOAL_RATIO else 'FAIL'}",
        f"- DKIM on / off = {dkim_ratio:.2f} (goal >= {DKIM_GOAL_RATIO}, i.e. at most "
        f"{1 - DKIM_GOAL_RATIO:.0%} of the rate lost): {'PASS' if dkim_ratio >= DKIM_GOAL_RATIO else 'FAIL'}",
    ]
    print("\n".join(lines))
    if args.record:
        record("Delivering digests with and without DKIM (issues 6 and 17)", lines)
    return 0


def pipeline(work: Path, port: int, subscribers: int, *, dkim: str) -> Run:
    """Queue and deliver one edition to ``subscribers`` on a store of its own in ``work``; ``dkim``: a [dkim]
    section (empty: none)."""
    work.mkdir(parents=True)
    config = work / "config.toml"
    config.write_text(
        f'[site]\ntitle = "News Example"\nbase_url = "https://news.example.org"\n'
        f'[database]\nurl = "sqlite:///{work / "store.db"}"\n'
        f'[smtp]\nhost = "127.0.0.1"\nport = {port}\n{dkim}{bench_themes_toml()}',
        "utf-8",
    )
    settings = load_settings(config, environ={"SYNDICATION_SECRET_KEY": "bench-send-digests-signing-key"})
    init_store(settings)
    until = START + timedelta(hours=199)
    since = until - timedelta(hours=30)
    with Service.open(settings, fixed_clock(until + timedelta(hours=1))) as service:
        import_file(service, write_posts(work / "posts.jsonl", 200))
        add_subscribers(service, subscribers)
        started = time.perf_counter()
        plan = plan_edition(service, "weekly", since, until)
        queued_s = time.perf_counter() - started
        report = deliver(service)
        pipeline_s = time.perf_counter() - started
        assert report.sent == plan.queued, report
        unsealed = sample_messages(service, plan.edition.id if plan.edition else 0)
        samples = [service.mailer.seal(m) for m in unsealed]
    return Run(settings, plan.queued, len(plan.variants), queued_s, pipeline_s, unsealed, samples)


def seal_ms(run: Run) -> float:
    """Mean milliseconds for a Mailer of ``run``'s settings to seal one of its sample messages."""
    mailer = Mailer(run.settings)
    mailer.check()
    started = time.perf_counter()
    for message in run.unsealed:
        mailer.seal(message)
    return (time.perf_counter() - started) * 1000 / len(run.unsealed)


def dkim_key(path: Path) -> Path:
    """A new 2048-bit RSA private key in PEM at ``path``."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    path.write_bytes(pem)
    return path


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
def sink(script: str = SINK) -> Iterator[int]:
    """A discarding SMTP server in its own process (so it does not share this one's GIL), run from ``script``
    (which prints "ready" once it listens on the port given as its argument); yields its port."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    process = subprocess.Popen([sys.executable, "-c", script, str(port)], stdin=subprocess.PIPE,
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
