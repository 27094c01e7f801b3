"""Crashes and concurrency: a sender killed mid-send loses nothing; several senders never send twice."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path

import pytest

from syndication.app.editions import plan_edition
from syndication.app.gathering import import_file
from syndication.app.service import Service, init_store
from syndication.config import load_settings
from syndication.core.models import Consent
from syndication.store import database
from syndication.store.subscribers import insert_subscriber
from tests.smtp_server import SmtpTestServer, smtp_server
from tests.support import NOW, post_record, write_config, write_jsonl

SECRET = "crash-test-signing-key-" + "z" * 16


def prepared_store(
    tmp_path: Path,
    database_url: str,
    server: SmtpTestServer,
    subscribers: int,
    *,
    delivery: str = "connections = 2\nlease_seconds = 5\nbatch_size = 50\n",
    smtp: str = "",
) -> Path:
    """A store with posts in the week before NOW, ``subscribers`` active weekly readers and the edition queued;
    ``delivery`` and ``smtp``: the lines of those sections (beyond the server's host and port)."""
    config = write_config(
        tmp_path,
        database_url,
        f'[smtp]\nhost = "127.0.0.1"\nport = {server.port}\n{smtp}[delivery]\n{delivery}',
    )
    settings = load_settings(config, environ={"SYNDICATION_SECRET_KEY": SECRET})
    init_store(settings)
    with Service.open(settings) as service:
        records = [post_record(n, published=f"2024-05-2{n}T10:00:00Z") for n in range(1, 6)]
        import_file(service, write_jsonl(tmp_path / "posts.jsonl", records))
        consent = Consent(NOW, "import", "test")
        with database.transaction(service.engine) as session:
            for number in range(subscribers):
                insert_subscriber(session, email=f"reader{number}@example.org", name=f"Reader {number}",
                                  language="en", themes=None, cadence="weekly", status="active", consent=consent,
                                  now=NOW)  # fmt: skip
        plan = plan_edition(service, "weekly", NOW - timedelta(days=14), NOW)
        assert plan.queued == subscribers
    return config


def deliver_process(config: Path) -> subprocess.Popen[bytes]:
    environment = {**os.environ, "SYNDICATION_SECRET_KEY": SECRET}
    return subprocess.Popen(
        [sys.executable, "-m", "syndication", "--config", str(config), "deliver"],
        env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip


def test_a_sender_killed_halfway_is_finished_by_the_next_run(tmp_path: Path, database_url: str) -> None:
    total = 2000
    with smtp_server() as server:
        config = prepared_store(tmp_path, database_url, server, total)
        first = deliver_process(config)
        try:
            assert server.wait_for(accepted=total // 2, timeout=120), "the first sender did not get halfway"
        finally:
            first.send_signal(signal.SIGKILL)
            first.communicate(timeout=30)
        killed_at = server.accepted
        assert 0 < killed_at < total
        time.sleep(5.5)  # the dead sender's leases run out
        second = deliver_process(config)
        _, err = second.communicate(timeout=180)
        assert second.returncode == 0, err.decode()
        received = Counter(message.recipients[0] for message in server.messages)
    assert set(received) == {f"reader{n}@example.org" for n in range(total)}  # everyone got it
    duplicates = sum(count - 1 for count in received.values())
    assert duplicates <= 2, f"{duplicates} messages sent twice; at most the two in flight may be"  # 2 connections


def test_three_senders_share_one_postgresql_queue_without_sending_twice(tmp_path: Path, database_url: str) -> None:
    if not database_url.startswith("postgresql"):
        pytest.skip("several senders at once need PostgreSQL (SQLite runs one sender)")
    total = 3000
    with smtp_server() as server:
        config = prepared_store(tmp_path, database_url, server, total)
        senders = [deliver_process(config) for _ in range(3)]
        outputs = [sender.communicate(timeout=240) for sender in senders]
        assert all(sender.returncode == 0 for sender in senders), [err.decode() for _, err in outputs]
        received = Counter(message.recipients[0] for message in server.messages)
    assert len(received) == total
    assert max(received.values()) == 1
    shares = [int(out.decode().split(" sent")[0].rsplit(" ", 1)[-1]) for out, _ in outputs]
    assert sum(shares) == total and all(share > 0 for share in shares)  # the work really was shared
