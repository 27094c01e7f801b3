"""A million subscribers on PostgreSQL (issue 22): each step's time and peak memory as the list grows.

For each list size (``--sizes``), on a PostgreSQL database of its own (``bench_scale_<size>``, made anew):

1. import: ``syndication subscribers import --confirmed`` of a CSV file of that many readers (50 theme
   combinations, two languages), the real command in a process of its own;
2. edition: ``plan_edition`` (the edition, its posts, one queued delivery per reader) in a process of its own,
   beside a bare ``INSERT INTO deliveries … SELECT … FROM subscribers`` of the same rows in the same process and
   run; then each variant rendered once and stored for the senders (``MessageBuilder.shared_email``), and one
   view of the editor's dashboard (``app.dashboard``: counts over the whole list);
3. send: 1, 2 and 4 ``syndication deliver`` processes at once (``--senders``), each with ``[delivery]
   connections`` SMTP connections, to a discarding sink; and one sender with DKIM (rsa-sha256, 2048-bit key).
   Sending a million messages several times would take this 2-core machine hours, so each run sends a fixed slice
   of the queue (``--slice``: the edition's first deliveries; the rest wait, not due): the rates are steady-state
   rates over that slice, and the senders claim from the whole queue of the list's size.

Every process's peak RSS comes from ``wait4`` (the kernel's ``ru_maxrss`` of that child alone).

The sink is a minimal asyncio SMTP server in its own process: 250 to every command, 354 to DATA, then it reads
until ``<CRLF>.<CRLF>`` without parsing anything. Its ceiling is measured alone in the same run: raw clients
writing each transaction (MAIL, RCPT, DATA, the message, the dot) in one write and reading the four replies, with
as many connections as the most senders use. The reference for the senders is a bare ``smtplib`` loop sending the
same pre-built (sealed) messages over one connection to the same sink, in the same run.

Goals (issue 22): queueing within 3x the bare INSERT … SELECT; sender memory flat from 10,000 to 1,000,000
(within 10%); one sender at least 0.6x the bare smtplib loop; with DKIM, at least 0.5x.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import smtplib
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import create_engine, select, text

from bench.generate import THEMES, bench_themes_toml, write_posts
from bench.records import record
from bench.send_digests import sink as discarding_sink

ADMIN_URL = os.environ.get("BENCH_POSTGRES_ADMIN_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
START = datetime(2020, 1, 1, tzinfo=UTC)  # bench.generate publishes post n at START + n hours
UNTIL = START + timedelta(hours=199)
SINCE = UNTIL - timedelta(hours=30)
SECRET = "bench-scale-signing-key-0123456789"
QUEUE_GOAL, MEMORY_GOAL, SEND_GOAL, DKIM_GOAL = 3.0, 0.10, 0.6, 0.5
CONNECTIONS = 8  # [delivery] connections of each sender: a sender waits on the store and the relay, not the CPU
SINK = r"""
import asyncio, sys

class Sink(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport, self.buffer, self.data = transport, bytearray(), False
        transport.write(b"220 sink ESMTP\r\n")

    def data_received(self, chunk):
        buffer = self.buffer
        buffer += chunk
        while True:
            if self.data:
                end = buffer.find(b"\r\n.\r\n")
                if end < 0:
                    del buffer[:-4]  # keep what may begin the end of the message
                    return
                del buffer[: end + 5]
                self.data = False
                self.transport.write(b"250 OK\r\n")
                continue
            end = buffer.find(b"\r\n")
            if end < 0:
                return
            verb = bytes(buffer[:4]).upper()
            del buffer[: end + 2]
            if verb == b"DATA":
                self.data = True
                buffer[:0] = b"\r\n"  # the message's first line may be the end already
                self.transport.write(b"354 go on\r\n")
            elif verb == b"EHLO":
                self.transport.write(b"250-sink\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n250 PIPELINING\r\n")
            elif verb == b"QUIT":
                self.transport.write(b"221 bye\r\n")
                self.transport.close()
                return
            else:
                self.transport.write(b"250 OK\r\n")

async def main():
    server = await asyncio.get_running_loop().create_server(Sink, "127.0.0.1", int(sys.argv[1]), backlog=128)
    print("ready", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    server.close()

asyncio.run(main())
"""


@dataclass
class Child:
    """A finished child process: wall seconds, peak RSS in MiB, CPU seconds, and what it printed."""

    seconds: float
    rss_mib: float
    cpu_s: float
    output: str


@dataclass
class Size:
    """The figures of one list size."""

    subscribers: int
    imported: Child | None = None
    plan: dict[str, float] = field(default_factory=dict)
    plan_child: Child | None = None
    sliced: int = 0
    sends: dict[str, tuple[float, list[Child]]] = field(default_factory=dict)  # label: (wall s, processes)
    bare_rate: float = 0.0
    mean_kib: float = 0.0


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; ``--record`` appends the figures to bench/README.md."""
    parser = argparse.ArgumentParser(prog="python -m bench.scale", description=__doc__)
    parser.add_argument("--sizes", default="10000,100000,1000000", help="list sizes, comma-separated")
    parser.add_argument("--senders", default="1,2,4", help="sender processes at once, comma-separated")
    parser.add_argument("--slice", type=int, default=20_000, help="messages each send run sends (at most the list)")
    parser.add_argument("--no-dkim", action="store_true", help="skip the run with DKIM on")
    parser.add_argument(
        "--import-max", type=int, default=100_000, help="largest list imported by the command (larger: loaded by SQL)"
    )
    parser.add_argument("--profile", type=Path, help="profile the one-sender run of the largest size (cProfile)")
    parser.add_argument("--record", action="store_true", help="append the figures to bench/README.md")
    parser.add_argument("--step", help=argparse.SUPPRESS)  # a step run in a child process
    parser.add_argument("--config", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.step == "plan":
        return _plan_step(args.config, args.slice)
    sizes = [int(size) for size in args.sizes.split(",")]
    senders = [int(count) for count in args.senders.split(",")]
    results: list[Size] = []
    with tempfile.TemporaryDirectory() as folder, sink() as port:
        work = Path(folder)
        key_file = dkim_key(work / "dkim.pem")
        ceiling = sink_ceiling(port, work, connections=max(senders) * 2, seconds=8.0)
        for size in sizes:
            profile = args.profile if size == max(sizes) else None
            results.append(run_size(work / str(size), port, size, senders, args, key_file, profile))
        ceiling_after = sink_ceiling(port, work, connections=max(senders) * 2, seconds=8.0)
    lines = report(results, senders, (ceiling, ceiling_after), args)
    print("\n".join(lines))
    if args.record:
        record("A million subscribers on PostgreSQL (issue 22)", lines)
    return 0


def run_size(
    work: Path, port: int, size: int, senders: Sequence[int], args: argparse.Namespace, key_file: Path,
    profile: Path | None,
) -> Size:  # fmt: skip
    """Every step for one list size on a database of its own."""
    work.mkdir(parents=True)
    name = f"bench_scale_{size}"
    url = fresh_database(name)
    config = write_config(work / "config.toml", url, port, "")
    dkim_config = write_config(
        work / "dkim.toml", url, port,
        f'[dkim]\ndomain = "news.example.org"\nselector = "bench"\nkey_file = "{key_file}"\n',
    )  # fmt: skip
    figures = Size(size)
    prepare_store(config, work)
    csv_file = write_csv(work / "subscribers.csv", size)
    if size <= args.import_max:
        print(f"[{size:,}] importing", flush=True)
        figures.imported = child([sys.executable, "-m", "syndication", "--config", str(config), "subscribers",
                                  "import", "--confirmed", "--quiet", str(csv_file)])  # fmt: skip
    else:
        print(f"[{size:,}] loading the subscribers by SQL (not timed: above --import-max)", flush=True)
        load_subscribers(url, size)
    print(f"[{size:,}] creating the edition", flush=True)
    figures.plan_child = child([sys.executable, "-m", "bench.scale", "--step", "plan", "--config", str(config),
                                "--slice", str(args.slice)])  # fmt: skip
    figures.plan = json.loads(figures.plan_child.output.strip().splitlines()[-1])
    figures.sliced = int(figures.plan["sliced"])
    samples = sample_messages(config)
    figures.mean_kib = sum(len(m) for m in samples) / len(samples) / 1024
    runs: list[tuple[str, int, Path]] = [(f"{count} sender{'s' if count > 1 else ''}", count, config)
                                         for count in senders]  # fmt: skip
    if not args.no_dkim:
        runs.append(("1 sender, DKIM", 1, dkim_config))
    engine = create_engine(url)
    try:
        for label, count, run_config in runs:
            reset_slice(engine, int(figures.plan["edition"]), int(figures.plan["cutoff"]))
            print(f"[{size:,}] sending with {label}", flush=True)
            command = [sys.executable, "-m", "syndication", "--config", str(run_config), "deliver", "--quiet"]
            if profile is not None and count == 1 and "DKIM" not in label:
                profile.parent.mkdir(parents=True, exist_ok=True)
                command = [sys.executable, "-m", "cProfile", "-o", str(profile), "-m", "syndication",
                           *command[3:]]  # fmt: skip
            started = time.perf_counter()
            processes = children([command] * count)
            wall = time.perf_counter() - started
            sent = count_sent(engine, int(figures.plan["edition"]))
            assert sent == figures.sliced, (label, sent, figures.sliced, [p.output for p in processes])
            figures.sends[label] = (wall, processes)
        figures.bare_rate = bare_loop(port, samples, min(figures.sliced, 20_000))
    finally:
        engine.dispose()
    return figures


def report(results: list[Size], senders: Sequence[int], ceilings: tuple[float, float],
           args: argparse.Namespace) -> list[str]:  # fmt: skip
    """The figures as Markdown lines, with each goal's verdict."""
    lines = [
        f"- PostgreSQL 15 on this 2-core machine, shared with other engineers' test runs (compare ratios within"
        f" the run); sizes {', '.join(f'{r.subscribers:,}' for r in results)}; each send run sends the edition's"
        f" first {args.slice:,} deliveries (the whole list when smaller) out of the whole queue, the rest not due;"
        f" [delivery] connections = {CONNECTIONS} per sender, batch_size 100",
        f"- the sink alone (raw clients, {max(senders) * 2} connections, one write per transaction):"
        f" {ceilings[0]:,.0f} messages/s before the sizes, {ceilings[1]:,.0f} after",
        "",
        "| figure | " + " | ".join(f"{r.subscribers:,}" for r in results) + " |",
        "| --- | " + " | ".join("---" for _ in results) + " |",
    ]

    def row(label: str, cells: list[str]) -> None:
        lines.append(f"| {label} | " + " | ".join(cells) + " |")

    row("import: time (rows/s)", [f"{r.imported.seconds:.1f} s ({r.subscribers / r.imported.seconds:,.0f}/s)"
                                  if r.imported else "loaded by SQL" for r in results])  # fmt: skip
    row("import: peak RSS", [f"{r.imported.rss_mib:,.0f} MiB" if r.imported else "-" for r in results])
    row("import: CPU ms per row", [f"{r.imported.cpu_s * 1000 / r.subscribers:.2f}" if r.imported else "-"
                                   for r in results])  # fmt: skip
    row("bare INSERT … SELECT", [f"{r.plan['bare_s']:.2f} s" for r in results])
    row("plan_edition (queue)", [f"{r.plan['plan_s']:.2f} s" for r in results])
    row("queue / bare (goal <= 3)", [f"{r.plan['plan_s'] / r.plan['bare_s']:.2f}" for r in results])
    row("variants rendered and stored", [f"{r.plan['variants_s']:.2f} s ({int(r.plan['variants'])})" for r in results])
    row("editor's dashboard, one view", [f"{r.plan['dashboard_s']:.2f} s" for r in results])
    row("edition step: peak RSS", [f"{r.plan_child.rss_mib:,.0f} MiB" for r in results if r.plan_child])
    row("messages per send run", [f"{r.sliced:,} (mean {r.mean_kib:.1f} KiB)" for r in results])
    row("bare smtplib loop", [f"{r.bare_rate:,.0f}/s" for r in results])
    for label in results[0].sends:
        row(f"{label}: rate", [f"{r.sliced / r.sends[label][0]:,.0f}/s" for r in results])
        row(f"{label}: rate / bare", [f"{r.sliced / r.sends[label][0] / r.bare_rate:.2f}" for r in results])
        row(f"{label}: peak RSS per process", [", ".join(f"{p.rss_mib:.0f}" for p in r.sends[label][1]) + " MiB"
                                               for r in results])  # fmt: skip
        row(f"{label}: CPU s per process", [", ".join(f"{p.cpu_s:.1f}" for p in r.sends[label][1])
                                            for r in results])  # fmt: skip
        row(f"{label}: CPU ms per message", [f"{sum(p.cpu_s for p in r.sends[label][1]) * 1000 / r.sliced:.2f}"
                                             for r in results])  # fmt: skip
    first, last = results[0], results[-1]
    worst_queue = max(r.plan["plan_s"] / r.plan["bare_s"] for r in results)
    one = "1 sender"
    rss_first = max(p.rss_mib for p in first.sends[one][1])
    rss_last = max(p.rss_mib for p in last.sends[one][1])
    growth = rss_last / rss_first - 1
    ratios = [r.sliced / r.sends[one][0] / r.bare_rate for r in results]
    lines += [
        "",
        f"- queueing within 3x the bare INSERT … SELECT: worst {worst_queue:.2f}x:"
        f" {'PASS' if worst_queue <= QUEUE_GOAL else 'FAIL'}",
        f"- one sender's peak RSS {rss_first:.0f} MiB at {first.subscribers:,}, {rss_last:.0f} MiB at"
        f" {last.subscribers:,}: {growth:+.1%} (goal within 10%): {'PASS' if abs(growth) <= MEMORY_GOAL else 'FAIL'}",
        f"- one sender / bare smtplib loop: {', '.join(f'{x:.2f}' for x in ratios)} (goal >= {SEND_GOAL}):"
        f" {'PASS' if min(ratios) >= SEND_GOAL else 'FAIL'}",
    ]
    dkim = "1 sender, DKIM"
    if dkim in first.sends:
        dkim_ratios = [r.sliced / r.sends[dkim][0] / r.bare_rate for r in results]
        lines.append(f"- one sender with DKIM / bare smtplib loop: {', '.join(f'{x:.2f}' for x in dkim_ratios)}"
                     f" (goal >= {DKIM_GOAL}): {'PASS' if min(dkim_ratios) >= DKIM_GOAL else 'FAIL'}")  # fmt: skip
    return lines


# --- The steps ---------------------------------------------------------------------------------------------------


def fresh_database(name: str) -> str:
    """Drop and create database ``name``; its URL."""
    admin = create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"


def write_config(path: Path, url: str, port: int, extra: str) -> Path:
    """A configuration for the store at ``url`` sending to the sink on ``port``."""
    path.write_text(
        f'[site]\ntitle = "News Example"\nbase_url = "https://news.example.org"\n'
        f'[database]\nurl = "{url}"\n'
        f"[delivery]\nconnections = {CONNECTIONS}\n"
        f'[smtp]\nhost = "127.0.0.1"\nport = {port}\n{extra}{bench_themes_toml()}',
        "utf-8",
    )
    return path


def _settings(config: Path):  # type: ignore[no-untyped-def]
    from syndication.config import load_settings

    return load_settings(config, environ={"SYNDICATION_SECRET_KEY": SECRET})


def prepare_store(config: Path, work: Path) -> None:
    """The schema, and 200 posts (30 in the window, the rest held as late ones, as bench.send_digests has)."""
    from syndication.app.gathering import import_file
    from syndication.app.service import Service, init_store
    from syndication.clock import fixed_clock

    settings = _settings(config)
    init_store(settings)
    with Service.open(settings, fixed_clock(UNTIL + timedelta(hours=1))) as service:
        import_file(service, write_posts(work / "posts.jsonl", 200))


def write_csv(path: Path, count: int) -> Path:
    """``count`` readers over 50 theme combinations (one: everything) and two languages, weekly."""
    rng = random.Random(7)
    combinations = [";".join(sorted(rng.sample(THEMES, rng.randint(1, 3)))) for _ in range(49)] + [""]
    with path.open("w", encoding="utf-8") as handle:
        handle.write("email,name,themes,cadence,language\n")
        for number in range(count):
            handle.write(f"reader{number}@example.org,Ana Pérez {number},{combinations[number % 50]},weekly,"
                         f"{('en', 'es')[number % 2]}\n")  # fmt: skip
    return path


def load_subscribers(url: str, count: int) -> None:
    """The same readers as ``write_csv``'s, active, written by one INSERT … SELECT (for lists too long to import
    through the command in this benchmark's time)."""
    rng = random.Random(7)
    combinations = [sorted(rng.sample(THEMES, rng.randint(1, 3))) for _ in range(49)]
    themes = [json.dumps(combination) for combination in combinations] + ["null"]
    engine = create_engine(url)
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO subscribers (email, name, language, themes, cadence, status, consent_at,"
                " consent_method, consent_source, created_at, status_changed_at, confirmed_at)"
                " SELECT 'reader' || n || '@example.org', 'Ana Pérez ' || n, (ARRAY['en', 'es'])[n % 2 + 1],"
                " CAST((CAST(:themes AS text[]))[n % 50 + 1] AS json), 'weekly', 'active', now(), 'import',"
                " 'benchmark', now(), now(), now() FROM generate_series(0, :count - 1) AS n"
            ),
            {"themes": themes, "count": count},
        )
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.execute(text("VACUUM ANALYZE subscribers"))
    engine.dispose()


def _plan_step(config: Path, slice_size: int) -> int:
    """In a child process: the bare INSERT … SELECT, then plan_edition, then the variants; prints JSON."""
    from syndication.app.dashboard import dashboard
    from syndication.app.editions import MessageBuilder, plan_edition
    from syndication.app.service import Service
    from syndication.clock import fixed_clock
    from syndication.store import database

    settings = _settings(config)
    with Service.open(settings, fixed_clock(UNTIL + timedelta(hours=1))) as service:
        engine = service.engine
        with engine.begin() as connection:  # both read the same warm table
            connection.execute(text("SELECT count(*) FROM subscribers"))
            bare_edition = connection.execute(text(
                "INSERT INTO editions (cadence, since, until, status, intro, subject, created_at, status_reason)"
                " VALUES ('daily', now(), now(), 'cancelled', '', '', now(), '') RETURNING id"
            )).scalar_one()  # fmt: skip
        started = time.perf_counter()
        with engine.begin() as connection:
            connection.execute(
                text(
                    "INSERT INTO deliveries (edition_id, subscriber_id, status, attempts, crashes, next_attempt_at,"
                    " message_id, last_error, lease_token) SELECT :edition, id, 'queued', 0, 0, now(),"
                    " 'edition-' || :edition || '.' || id, '', 0 FROM subscribers"
                    " WHERE status = 'active' AND cadence = 'weekly'"
                ),
                {"edition": bare_edition},
            )
        bare_s = time.perf_counter() - started
        with engine.begin() as connection:
            connection.execute(text("DELETE FROM editions WHERE id = :id"), {"id": bare_edition})
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            connection.execute(text("VACUUM ANALYZE deliveries"))
        started = time.perf_counter()
        plan = plan_edition(service, "weekly", SINCE, UNTIL)
        plan_s = time.perf_counter() - started
        assert plan.edition is not None
        edition = plan.edition
        started = time.perf_counter()
        builder = MessageBuilder(service)
        for themes, language, reading in plan.variants:
            builder.shared_email(edition, themes, language, reading)
        variants_s = time.perf_counter() - started
        with database.transaction(engine) as session:  # only the slice is due; the rest waits
            cutoff = session.execute(
                text("SELECT id FROM deliveries WHERE edition_id = :e ORDER BY id OFFSET :n LIMIT 1"),
                {"e": edition.id, "n": min(slice_size, plan.queued) - 1},
            ).scalar_one()
            session.execute(
                text("UPDATE deliveries SET next_attempt_at = '2100-01-01' WHERE edition_id = :e AND id > :c"),
                {"e": edition.id, "c": cutoff},
            )
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            connection.execute(text("VACUUM ANALYZE deliveries"))
        started = time.perf_counter()
        dashboard(service)  # the editor's first page: counts over the whole list and the last editions
        dashboard_s = time.perf_counter() - started
    print(json.dumps({"bare_s": bare_s, "plan_s": plan_s, "variants_s": variants_s, "queued": plan.queued,
                      "dashboard_s": dashboard_s,
                      "variants": len(plan.variants), "edition": edition.id, "cutoff": cutoff,
                      "sliced": min(slice_size, plan.queued)}))  # fmt: skip
    return 0


def reset_slice(engine: object, edition_id: int, cutoff: int) -> None:
    """The slice's deliveries queued again as they were made (attempts forgotten); the edition sending."""
    from sqlalchemy import Engine

    assert isinstance(engine, Engine)
    with engine.begin() as connection:
        connection.execute(text(
            "DELETE FROM delivery_attempts WHERE delivery_id IN"
            " (SELECT id FROM deliveries WHERE edition_id = :e AND id <= :c)"
        ), {"e": edition_id, "c": cutoff})  # fmt: skip
        connection.execute(text(
            "UPDATE deliveries SET status = 'queued', attempts = 0, crashes = 0, lease_owner = NULL,"
            " lease_until = NULL, in_flight_at = NULL, sent_at = NULL, last_error = ''"
            " WHERE edition_id = :e AND id <= :c AND status <> 'queued'"
        ), {"e": edition_id, "c": cutoff})  # fmt: skip
        connection.execute(text("UPDATE editions SET status = 'sending' WHERE id = :e"), {"e": edition_id})
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.execute(text("VACUUM ANALYZE deliveries"))
        connection.execute(text("VACUUM ANALYZE delivery_attempts"))


def count_sent(engine: object, edition_id: int) -> int:
    """How many deliveries of the edition are sent."""
    from sqlalchemy import Engine

    assert isinstance(engine, Engine)
    with engine.connect() as connection:
        return int(connection.execute(
            text("SELECT count(*) FROM deliveries WHERE edition_id = :e AND status = 'sent'"), {"e": edition_id}
        ).scalar_one())  # fmt: skip


def sample_messages(config: Path, count: int = 500) -> list[bytes]:
    """Sealed messages built exactly as the senders build them, for the bare loop and the sink's ceiling."""
    from syndication.app.editions import MessageBuilder
    from syndication.app.service import Service
    from syndication.store import database, ledger
    from syndication.store.schema import DeliveryRow

    with Service.open(_settings(config)) as service:
        with database.transaction(service.engine) as session:
            rows = session.execute(
                select(DeliveryRow.id, DeliveryRow.edition_id, DeliveryRow.subscriber_id, DeliveryRow.message_id)
                .order_by(DeliveryRow.id)
                .limit(count)
            ).all()
        claims = [ledger.Claim(d, e, s, m, 0) for d, e, s, m in rows]
        built = MessageBuilder(service).build(claims)
        messages = []
        for outgoing in built:
            assert not isinstance(outgoing, str), outgoing
            messages.append(service.mailer.seal(outgoing.message))
    return messages


# --- Processes, the sink and the references ----------------------------------------------------------------------


def child(command: list[str]) -> Child:
    """Run ``command`` to its end; its wall time, peak RSS and CPU time (wait4: that child alone)."""
    return children([command])[0]


def children(commands: list[list[str]]) -> list[Child]:
    """Start every command at once and wait for all; each one's figures (wall time: until it ended)."""
    started = time.perf_counter()
    env = {**os.environ, "SYNDICATION_SECRET_KEY": SECRET}
    files = [tempfile.TemporaryFile() for _ in commands]  # noqa: SIM115 (a file, not a pipe: closed when read)
    processes = [subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, env=env)
                 for command, output in zip(commands, files, strict=True)]  # fmt: skip
    by_pid = {process.pid: output for process, output in zip(processes, files, strict=True)}
    results: dict[int, Child] = {}
    waiting = {process.pid: process for process in processes}
    while waiting:
        pid, status, usage = os.wait4(-1, 0)
        process = waiting.pop(pid, None)
        if process is None:
            continue
        process.returncode = os.waitstatus_to_exitcode(status)
        handle = by_pid[pid]
        handle.seek(0)
        output = handle.read().decode("utf-8", "replace")
        handle.close()
        if process.returncode != 0:
            raise RuntimeError(f"{' '.join(process.args)} failed ({process.returncode}):\n{output}")  # type: ignore[arg-type]
        results[pid] = Child(time.perf_counter() - started, usage.ru_maxrss / 1024,
                             usage.ru_utime + usage.ru_stime, output)  # fmt: skip
    return [results[process.pid] for process in processes]


@contextmanager
def sink() -> Iterator[int]:
    """The minimal discarding SMTP sink (``SINK``: it parses nothing) in its own process; yields its port."""
    with discarding_sink(SINK) as port:
        yield port


RAW_CLIENT = r"""
import socket, sys, time
port, seconds, path = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
message = open(path, "rb").read()
client = socket.create_connection(("127.0.0.1", port))
reader = client.makefile("rb")
reader.readline()
client.sendall(b"EHLO raw\r\n")
while reader.readline()[3:4] == b"-":
    pass
transaction = b"MAIL FROM:<b@news.example.org>\r\nRCPT TO:<r@example.org>\r\nDATA\r\n" + message + b".\r\n"
sent, started = 0, time.perf_counter()
while time.perf_counter() - started < seconds:
    client.sendall(transaction)
    for _ in range(4):
        reader.readline()
    sent += 1
print(sent / (time.perf_counter() - started))
"""


def sink_ceiling(port: int, work: Path, *, connections: int, seconds: float) -> float:
    """Messages per second the sink takes from ``connections`` raw clients (one process each) at once."""
    path = work / "sample.eml"
    if not path.exists():
        body = b"".join(f"line {n} of a digest of about thirty kilobytes, all of it ascii text\r\n".encode()
                        for n in range(450))  # fmt: skip
        path.write_bytes(b"Subject: sample\r\nFrom: a@news.example.org\r\n\r\n" + body)
    done = children([[sys.executable, "-c", RAW_CLIENT, str(port), str(seconds), str(path)]] * connections)
    return sum(float(process.output.strip()) for process in done)


def bare_loop(port: int, messages: list[bytes], count: int) -> float:
    """Messages per second plain smtplib sends of ``messages`` (in turn) over one connection."""
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        started = time.perf_counter()
        for number in range(count):
            client.sendmail("bounces@news.example.org", [f"reader{number}@example.org"],
                            messages[number % len(messages)])  # fmt: skip
        return count / (time.perf_counter() - started)


def dkim_key(path: Path) -> Path:
    """A new 2048-bit RSA private key in PEM at ``path``."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    path.write_bytes(pem)
    return path


if __name__ == "__main__":
    raise SystemExit(main())
