"""Issue 22's stateless nodes: three ``syndication run`` processes on three ports, sharing only PostgreSQL (and
Redis for the rate limits), each in a working folder of its own with nothing on a shared disk.

A post gathered by whichever process leads is served by all three with the same bytes and ETag within seconds of
the feed build; the leader is killed with SIGKILL and started again, and the next post still reaches all three;
the subscribe form's per-client limit holds across the three nodes together. Every wait polls a condition
against a generous deadline, never a fixed sleep.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.run_process import RunProcess, free_port
from tests.smtp_server import smtp_server
from tests.support import post_record, wait_for, write_config, write_jsonl
from tests.test_run_processes import prepare_store

REDIS = "redis://127.0.0.1:6379/0"
SUBSCRIBES_PER_CLIENT = 4
FEED = "/feeds/all.atom"
CSRF_FIELD = re.compile(r'name="csrf_token" value="([^"]*)"')


def _redis_answers() -> bool:
    import redis

    try:
        return bool(redis.Redis.from_url(REDIS, socket_connect_timeout=1).ping())
    except (redis.RedisError, OSError):
        return False


@pytest.fixture
def redis_limits() -> None:
    """Skip, saying why, when the Redis the nodes share their limits in does not answer."""
    if not _redis_answers():
        pytest.skip(f"the nodes' shared rate limits need Redis at {REDIS}")


def node_config(folder: Path, database_url: str, smtp_port: int, source: Path, prefix: str) -> Path:
    """One node's configuration, in its own folder: the feeds are kept in the store, the limits in Redis."""
    folder.mkdir()
    return write_config(
        folder,
        database_url,
        f"""
[smtp]
host = "127.0.0.1"
port = {smtp_port}

[feeds]
output_dir = "feeds"
storage = "database"

[web]
subscribe_per_client_per_hour = {SUBSCRIBES_PER_CLIENT}
limits_storage = "{REDIS}"
limits_prefix = "{prefix}"

[schedule]
leader_poll_seconds = 0.5
feeds_interval_seconds = 3600

[schedule.cadences]
daily = "off"
monthly = "off"

[logging]
format = "json"

[[sources]]
name = "wire"
kind = "jsonl"
path = "{source}"
interval_seconds = 1
""",
    )


def feed_of(port: int) -> tuple[str, str] | None:
    """The site feed's ETag and body as the node on ``port`` serves it, or None while it does not answer."""
    try:
        answer = httpx.get(f"http://127.0.0.1:{port}{FEED}", timeout=5)
    except httpx.HTTPError:
        return None
    if answer.status_code != 200:
        return None
    return answer.headers["etag"], answer.text


def served_everywhere(ports: list[int], title: str) -> Callable[[], str | None]:
    """A condition: every node serves the feed with ``title`` in it, all with the same ETag and bytes."""

    def check() -> str | None:
        seen = [feed_of(port) for port in ports]
        if any(found is None or title not in found[1] for found in seen):
            return None
        assert len({found for found in seen if found}) == 1, "the nodes serve different documents"
        return seen[0][0] if seen[0] else None

    return check


def subscribe(port: int, number: int) -> int:
    """Post the subscribe form on the node at ``port`` for a new address; the answer's status."""
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
        page = client.get("/subscribe")
        token = CSRF_FIELD.search(page.text)
        assert token, page.text[:500]
        # The site's base URL is https, so its cookies are Secure: sent back by hand over this plain connection.
        cookie = page.cookies.get("syndication_csrf")
        assert cookie
        answer = client.post(
            "/subscribe",
            data={
                "csrf_token": token.group(1),
                "email": f"visitor{number}@example.org",
                "cadence": "weekly",
                "language": "en",
            },
            headers={"Cookie": f"syndication_csrf={cookie}"},
        )
        return answer.status_code


@pytest.mark.slow
@pytest.mark.postgres
def test_three_nodes_serve_the_same_feeds_survive_the_leader_and_share_their_limits(
    tmp_path: Path, postgres_url: str, redis_limits: None, launch: Callable[..., RunProcess]
) -> None:
    source = tmp_path / "wire.jsonl"
    write_jsonl(source, [])
    prefix = f"nodes-test-{secrets.token_hex(4)}"
    with smtp_server() as server:
        configs = [node_config(tmp_path / f"node{n}", postgres_url, server.port, source, prefix) for n in range(3)]
        service, _readers = prepare_store(configs[0], subscribers=0)
        try:
            ports = [free_port() for _ in configs]
            processes = [launch(config, port) for config, port in zip(configs, ports, strict=True)]
            leader = wait_for(lambda: next((p for p in processes if p.leads), None), "a leader among three")

            first = post_record(1, title="Node test: the first post")
            write_jsonl(source, [first])
            etag = wait_for(served_everywhere(ports, first["title"]), "the first post served by all three")
            for config in configs:  # nothing was written to any node's own folder
                assert not (config.parent / "feeds").exists() or not any((config.parent / "feeds").iterdir())

            index = processes.index(leader)
            leader.kill()
            processes[index] = launch(configs[index], ports[index])  # the killed node comes back, following
            successor = wait_for(
                lambda: next((p for p in processes if p.leads and p is not leader), None), "another leader"
            )
            assert successor is not leader
            second = post_record(2, title="Node test: after the leader was killed")
            write_jsonl(source, [first, second])
            new_etag = wait_for(served_everywhere(ports, second["title"]), "the second post served by all three")
            assert new_etag != etag

            statuses = [subscribe(ports[n % 3], n) for n in range(SUBSCRIBES_PER_CLIENT + 2)]
            assert statuses[:SUBSCRIBES_PER_CLIENT] == [200] * SUBSCRIBES_PER_CLIENT, statuses
            assert statuses[SUBSCRIBES_PER_CLIENT:] == [429, 429], statuses  # counted across the three together
        finally:
            service.close()
