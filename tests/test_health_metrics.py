"""``/healthz``, ``/readyz`` and ``/metrics`` (GitHub #20), over real HTTP to the real app under uvicorn.

The metrics are scraped after a real send through a real SMTP server and parsed with prometheus-client's own
parser; the store's figures are checked on SQLite and PostgreSQL (``database_url``). In-process counters are
global to the test process, so what a test checks of them is how much they grew.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import httpx
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from syndication.app.editions import deliver, plan_edition
from syndication.app.subscribers import add_subscriber
from syndication.config import Settings
from syndication.runtime import metrics
from syndication.web.app import create_app
from tests.live_server import live_server
from tests.support import NOW
from tests.test_delivery import sending
from tests.test_migrations import store_at
from tests.web_site import web_site

READERS = ("ana@example.org", "bo@example.org", "kita@example.org")
TOKEN = "metrics-token-0123456789abcdef"


def scrape(client: httpx.Client, **headers: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """``/metrics`` parsed: each sample's value by its name and labels."""
    answer = client.get("/metrics", headers=headers)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/plain; version=")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(answer.text)
        for sample in family.samples
    }


def value(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_healthz_answers_get_and_head_without_the_store(tmp_path: Path, database_url: str) -> None:
    with web_site(tmp_path, database_url) as site, site.client() as client:
        assert (answer := client.get("/healthz")).status_code == 200
        assert answer.text == "ok\n"
        head = client.head("/healthz")
        assert head.status_code == 200 and head.content == b""
        ready = client.get("/readyz")
        assert ready.status_code == 200, ready.text
        assert orjson.loads(ready.content) == {"status": "ready", "checks": {"database": "ok", "schema": "ok"}}
        assert client.head("/readyz").status_code == 200
        assert client.head("/metrics").status_code == 200


def test_readyz_is_503_naming_the_schema_when_the_store_is_behind(settings: Settings) -> None:
    with (
        store_at(settings, "0001"),
        live_server(create_app(settings)) as server,
        httpx.Client(base_url=server.url(), timeout=10) as client,
    ):
        answer = client.get("/readyz")
        head = client.head("/readyz")
        live = client.get("/healthz")
    assert answer.status_code == 503
    body = orjson.loads(answer.content)
    assert body["status"] == "not ready"
    assert body["checks"]["database"] == "ok"
    assert body["checks"]["schema"].startswith("at schema 0001, this version needs ")
    assert head.status_code == 503
    assert live.status_code == 200  # the process answers: restarting it would not help


def test_readyz_is_503_when_the_store_is_not_a_database(tmp_path: Path) -> None:
    store = tmp_path / "store.db"
    store.write_bytes(b"this is not a SQLite database, whatever its name says" * 100)
    settings = _settings_on(tmp_path, f"sqlite:///{store}")
    with live_server(create_app(settings)) as server, httpx.Client(base_url=server.url(), timeout=10) as client:
        answer = client.get("/readyz")
    assert answer.status_code == 503
    assert orjson.loads(answer.content)["checks"] == {"database": "unreachable", "schema": "unknown"}


@pytest.fixture
def scheduler() -> Iterator[list[str]]:
    """A scheduler state this process reports, as ``syndication run``'s runner registers its own."""
    state = ["leader"]

    def current() -> str:
        return state[0]

    metrics.register_scheduler(current)
    yield state
    metrics.unregister_scheduler(current)


def test_readyz_and_metrics_tell_the_schedulers_leadership(
    tmp_path: Path, database_url: str, scheduler: list[str]
) -> None:
    with web_site(tmp_path, database_url) as site, site.client() as client:
        leading = client.get("/readyz")
        assert leading.status_code == 200
        assert orjson.loads(leading.content)["checks"]["scheduler"] == "leader"
        assert value(scrape(client), "syndication_scheduler_leader") == 1
        scheduler[0] = "standby"  # another process leads; this one still drains the queue: ready
        standby = client.get("/readyz")
        assert standby.status_code == 200
        assert value(scrape(client), "syndication_scheduler_leader") == 0
        scheduler[0] = "stopping"
        stopping = client.get("/readyz")
        assert stopping.status_code == 503
        assert orjson.loads(stopping.content)["checks"]["scheduler"] == "stopping"


def test_metrics_after_a_send_count_what_the_store_holds_and_the_requests(tmp_path: Path, database_url: str) -> None:
    with web_site(tmp_path, database_url) as site, site.client() as client:
        before = scrape(client)
        assert value(before, "syndication_store_up") == 1
        assert value(before, "syndication_deliveries", status="sent") == 0
        for address in READERS:
            add_subscriber(site.service, address, themes=[], cadence="weekly", language="en", confirmed=True)
        service = sending(site.service, site.smtp, clock=NOW)
        plan = plan_edition(service, "weekly", datetime(2024, 5, 1, tzinfo=NOW.tzinfo), NOW)
        assert plan.edition is not None and plan.queued == len(READERS)
        queued = scrape(client)
        assert value(queued, "syndication_queue_depth") == len(READERS)
        assert value(queued, "syndication_deliveries", status="queued") == len(READERS)
        report = deliver(service, edition_id=plan.edition.id)
        assert report.sent == len(READERS)
        assert len(site.smtp.messages) == len(READERS)

        for _ in range(3):
            assert client.get(f"/editions/{plan.edition.id}").status_code == 200
        assert client.get("/no/such/page/at/all").status_code == 404
        after = scrape(client)

    assert value(after, "syndication_deliveries", status="sent") == len(READERS)
    assert value(after, "syndication_deliveries", status="failed") == 0
    assert value(after, "syndication_editions", status="sent") == 1
    assert value(after, "syndication_subscribers", status="active") == len(READERS)
    assert value(after, "syndication_queue_depth") == 0
    assert value(after, "syndication_queue_oldest_due_seconds") == 0
    assert value(after, "syndication_bounces", fault="address") == 0
    assert value(after, "syndication_inbound_messages", kind="complaint") == 0
    # Requests by route template, never by raw path: three pages of one edition are one series.
    route = "/editions/{edition_id}"
    grew = value(after, "syndication_http_requests_total", route=route, method="GET", status="200") - value(
        before, "syndication_http_requests_total", route=route, method="GET", status="200"
    )
    assert grew == 3
    assert not any("/editions/1" in dict(labels).get("route", "") for _, labels in after)
    unmatched = ("syndication_http_requests_total", {"route": "unmatched", "method": "GET", "status": "404"})
    assert value(after, unmatched[0], **unmatched[1]) >= 1
    assert not any("/no/such" in dict(labels).get("route", "") for _, labels in after)
    timed = value(after, "syndication_http_request_duration_seconds_count", route=route, method="GET")
    assert timed - value(before, "syndication_http_request_duration_seconds_count", route=route, method="GET") == 3
    assert value(after, "syndication_build_info", version="0.1.0") == 1


def test_metrics_are_refused_to_an_address_outside_allow(tmp_path: Path, database_url: str) -> None:
    extra = '[metrics]\nallow = ["192.0.2.0/24", "2001:db8::/32"]\n'
    with web_site(tmp_path, database_url, extra) as site, site.client() as client:
        refused = client.get("/metrics")
        health = client.get("/healthz")
    assert refused.status_code == 403
    assert "syndication_" not in refused.text
    assert health.status_code == 200  # the health checks stay open


def test_metrics_need_the_token_when_one_is_set(tmp_path: Path, database_url: str) -> None:
    environ = {"SYNDICATION_METRICS_TOKEN": TOKEN}
    with web_site(tmp_path, database_url, environ=environ) as site, site.client() as client:
        missing = client.get("/metrics")
        wrong = client.get("/metrics", headers={"Authorization": "Bearer " + TOKEN[:-1] + "X"})
        basic = client.get("/metrics", headers={"Authorization": "Basic " + TOKEN})
        samples = scrape(client, Authorization=f"Bearer {TOKEN}")
    for answer in (missing, wrong, basic):
        assert answer.status_code == 401
        assert answer.headers["www-authenticate"].startswith("Bearer")
        assert "syndication_" not in answer.text
    assert value(samples, "syndication_store_up") == 1


def test_metrics_through_a_proxy_are_refused_without_a_token(tmp_path: Path, database_url: str) -> None:
    # A proxy on this host makes every visitor look like loopback: only a token can tell the scraper apart.
    with web_site(tmp_path, database_url) as site, site.client() as client:
        forwarded = client.get("/metrics", headers={"X-Forwarded-For": "203.0.113.9"})
        direct = client.get("/metrics")
    assert forwarded.status_code == 403
    assert direct.status_code == 200


def test_a_request_gets_an_id_echoed_in_its_answer(tmp_path: Path, database_url: str) -> None:
    with web_site(tmp_path, database_url) as site, site.client() as client:
        given = client.get("/healthz", headers={"X-Request-ID": "lb-7f3a.42"})
        made = client.get("/healthz")
        again = client.get("/healthz")
        insane = client.get("/healthz", headers={"X-Request-ID": "x" * 200})
        unsafe = client.get("/healthz", headers={"X-Request-ID": 'a"b c'})
        missing = client.get("/no-such-page")
    assert given.headers["x-request-id"] == "lb-7f3a.42"
    assert len(made.headers["x-request-id"]) == 32 and made.headers["x-request-id"] != again.headers["x-request-id"]
    for answer in (insane, unsafe):
        assert len(answer.headers["x-request-id"]) == 32
    assert missing.status_code == 404 and len(missing.headers["x-request-id"]) == 32


def test_the_metrics_settings_refuse_a_short_token_and_a_wrong_network(tmp_path: Path) -> None:
    from syndication.errors import ConfigError

    with pytest.raises(ConfigError, match=r"SYNDICATION_METRICS_TOKEN \(metrics.token\): too short"):
        _settings_on(tmp_path, "sqlite://", environ={"SYNDICATION_METRICS_TOKEN": "short"})
    with pytest.raises(ConfigError, match=r"metrics\.allow: \'10\.0\.0\.300/8\' is not an address"):
        _settings_on(tmp_path, "sqlite://", '[metrics]\nallow = ["10.0.0.300/8"]\n')
    assert _settings_on(tmp_path, "sqlite://", '[metrics]\nallow = ["10.1.2.3"]\n').metrics.allow == ("10.1.2.3/32",)


def _settings_on(folder: Path, database_url: str, extra: str = "", environ: dict[str, str] | None = None) -> Settings:
    from syndication.config import load_settings

    config = folder / "health.toml"
    config.write_text(f'[database]\nurl = "{database_url}"\n{extra}', encoding="utf-8")
    return load_settings(config, environ=environ or {})
