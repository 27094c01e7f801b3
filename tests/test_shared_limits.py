"""Rate limits shared by every process through Redis (``[web] limits_storage``, issue 22): a RateLimit on Redis
answers as the in-process one does; two apps serving one site from one Redis hold the subscribe form's per-client
limit together, where with ``memory://`` each counts alone; an unreachable Redis never refuses anybody for
itself nor shows a traceback: each process counts on its own again, with one warning.

Against the real Redis at REDIS (skipped, saying so, when it does not answer), each test under a key prefix of its
own that is removed afterwards."""

from __future__ import annotations

import logging
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from syndication.app.service import Service, init_store
from syndication.config import Settings, load_settings
from syndication.store import database
from syndication.store.form_emails import sent_on
from syndication.store.schema import FormEmailRow
from syndication.web.app import create_app
from syndication.web.limits import RateLimit, SharedStorage, shared_storage, site_limit
from tests.live_server import live_server
from tests.smtp_server import smtp_server
from tests.support import write_config
from tests.web_site import csrf_of

REDIS = "redis://127.0.0.1:6379/0"
KEY = "shared-limits-test-signing-key-0123456789"
PER_CLIENT = 3
PLAIN_HTTP = {"SYNDICATION_SITE__BASE_URL": "http://127.0.0.1:8000"}
CHOICES = {"themes": "climate-action", "cadence": "weekly", "language": "en"}


def redis_errors() -> type[Exception]:
    import redis

    return redis.RedisError


def _redis_problem() -> str | None:
    try:
        import redis

        redis.Redis.from_url(REDIS, socket_connect_timeout=1).ping()
    except (ImportError, OSError, redis_errors()) as error:
        return f"{type(error).__name__}: {error}"
    return None


@pytest.fixture(scope="module")
def redis_up() -> None:
    problem = _redis_problem()
    if problem is not None:
        pytest.skip(f"shared rate limits are tested against Redis at {REDIS}, which does not answer: {problem}")


@pytest.fixture
def prefix(redis_up: None) -> Iterator[str]:
    """A key prefix of this test's own; its keys are removed afterwards."""
    name = f"test-{uuid.uuid4().hex[:12]}"
    yield name
    SharedStorage(REDIS, name).clear()


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then closed)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# --- RateLimit on Redis answers as the in-process one ----------------------------------------------------------


@pytest.fixture(params=["memory", "redis"])
def make_limit(request: pytest.FixtureRequest) -> Iterator[Callable[..., RateLimit]]:
    """Makes a RateLimit(limit, window, name=...) in process, or on Redis under a prefix of this test's own."""
    if request.param == "memory":
        yield lambda limit, window, name="limit": RateLimit(limit, window, name=name)
        return
    request.getfixturevalue("redis_up")
    storage = SharedStorage(REDIS, f"test-{uuid.uuid4().hex[:12]}")
    yield lambda limit, window, name="limit": RateLimit(limit, window, name=name, shared=storage)
    assert storage.clear() > 0  # the test did count in Redis
    assert len(storage_keys(storage)) == 0


def storage_keys(storage: SharedStorage) -> list[bytes]:
    import redis

    return list(redis.Redis.from_url(REDIS).scan_iter(match=f"syndication:{storage.prefix}:*"))


def test_allow_and_retry_after_mean_the_same_in_memory_and_in_redis(make_limit: Callable[..., RateLimit]) -> None:
    limit = make_limit(3, 1.0)
    assert limit.retry_after("a") == 0
    assert [limit.allow("a") for _ in range(3)] == [True, True, True]
    assert limit.allow("a") is False  # the fourth within the window
    assert limit.allow("a") is False  # a refused event is not counted, but refused all the same
    assert limit.retry_after("a") == 1
    assert limit.allow("b") is True and limit.retry_after("b") == 0  # another key counts apart
    other = make_limit(3, 1.0, name="other")
    assert other.allow("a") is True  # the same key in another limit too
    time.sleep(1.02)
    assert limit.retry_after("a") == 0
    assert limit.allow("a") is True  # the window has passed


def test_two_rate_limits_on_one_redis_count_together(prefix: str) -> None:
    first = RateLimit(4, 60, name="login", shared=SharedStorage(REDIS, prefix))
    second = RateLimit(4, 60, name="login", shared=SharedStorage(REDIS, prefix))  # another process's
    assert [first.allow("10.0.0.1"), second.allow("10.0.0.1"), first.allow("10.0.0.1")] == [True] * 3
    assert second.allow("10.0.0.1") is True
    assert first.allow("10.0.0.1") is False and second.allow("10.0.0.1") is False
    assert 59 <= first.retry_after("10.0.0.1") <= 60
    elsewhere = RateLimit(4, 60, name="login", shared=SharedStorage(REDIS, prefix + "-other-site"))
    assert elsewhere.allow("10.0.0.1") is True  # another site's prefix counts apart
    SharedStorage(REDIS, prefix + "-other-site").clear()
    keys = storage_keys(SharedStorage(REDIS, prefix))
    assert keys and all(b"10.0.0.1" not in key for key in keys)  # the key is hashed, never stored as it is


def test_an_unreachable_redis_refuses_nobody_for_itself_and_warns_once(caplog: pytest.LogCaptureFixture) -> None:
    storage = SharedStorage(f"redis://:hunter2-password@127.0.0.1:{closed_port()}/0", "down")
    limit = RateLimit(2, 60, name="subscribe-client", shared=storage)
    other = RateLimit(5, 60, name="login", shared=storage)
    started = time.perf_counter()
    with caplog.at_level(logging.WARNING, logger="syndication.web.limits"):
        # Counted in this process instead: the limit still holds here, and nothing raises.
        assert [limit.allow("a"), limit.allow("a"), limit.allow("a")] == [True, True, False]
        assert 59 <= limit.retry_after("a") <= 60
        assert all(other.allow("a") for _ in range(5))
    assert time.perf_counter() - started < 2
    warnings = [record for record in caplog.records if record.levelno == logging.WARNING]
    assert len(warnings) == 1, [record.getMessage() for record in warnings]
    assert "counting in this process" in warnings[0].getMessage()
    assert "hunter2" not in warnings[0].getMessage() and "****" in warnings[0].getMessage()
    assert storage.problem() is not None and "Connection" in str(storage.problem())


def test_memory_storage_shares_nothing(tmp_path: Path) -> None:
    settings = load_settings(write_config(tmp_path, f"sqlite:///{tmp_path / 'store.db'}"))
    assert settings.web.limits_storage == "memory://" and shared_storage(settings) is None
    assert site_limit(settings, "login", 2, 60).shared is None


# --- Two apps of one site ----------------------------------------------------------------------------------------


def site_settings(folder: Path, smtp_port: int, storage: str, prefix: str, web: str = "") -> Settings:
    config = write_config(
        folder,
        f"sqlite:///{folder / 'store.db'}",
        f'[smtp]\nhost = "127.0.0.1"\nport = {smtp_port}\ntimeout_seconds = 5\n'
        '[mail]\nfrom_address = "news@example.org"\n'
        f'[web]\nlimits_storage = "{storage}"\nlimits_prefix = "{prefix}"\n'
        + (web or f"subscribe_per_client_per_hour = {PER_CLIENT}\n"),
    )
    # Served over http: the cookies (the form's CSRF one) are not marked Secure, as for an https base_url.
    return load_settings(config, environ={"SYNDICATION_SECRET_KEY": KEY, **PLAIN_HTTP})


def subscribe(client: httpx.Client, address: str) -> httpx.Response:
    page = client.get("/subscribe")
    assert page.status_code == 200
    return client.post("/subscribe", data={"csrf_token": csrf_of(page.text), "email": address, **CHOICES})


@dataclass
class Answers:
    """What two apps of one site answered: the subscribe posts in turn, then each one's ``/readyz`` checks."""

    posts: list[httpx.Response]
    readiness: list[dict[str, str]]

    @property
    def statuses(self) -> list[int]:
        return [answer.status_code for answer in self.posts]


def two_apps_answer(
    folder: Path, storage: str, prefix: str, addresses: list[str] | None = None, web: str = ""
) -> Answers:
    """Two apps of one site (one store, two servers), posted the subscribe form alternately from one client
    address for each of ``addresses`` (PER_CLIENT + 1 new ones by default); their answers."""
    addresses = addresses or [f"reader{number}@example.org" for number in range(PER_CLIENT + 1)]
    with ExitStack() as stack:
        smtp = stack.enter_context(smtp_server(discard=True))
        settings = site_settings(folder, smtp.port, storage, prefix, web)
        init_store(settings)
        servers = [stack.enter_context(live_server(create_app(settings))) for _ in range(2)]
        clients = [stack.enter_context(httpx.Client(base_url=server.url(), timeout=10)) for server in servers]
        posts = [subscribe(clients[number % 2], address) for number, address in enumerate(addresses)]
        readiness = []
        for client in clients:
            ready = client.get("/readyz")
            assert ready.status_code == 200, ready.text  # ready, whatever the limits' storage says
            readiness.append(ready.json()["checks"])
        return Answers(posts, readiness)


def test_two_apps_sharing_redis_hold_the_per_client_limit_together(tmp_path: Path, prefix: str) -> None:
    answers = two_apps_answer(tmp_path, REDIS, prefix)
    assert answers.statuses == [200] * PER_CLIENT + [429]
    refused = answers.posts[-1]
    assert "Too many requests" in refused.text and "Traceback" not in refused.text
    assert 3590 <= int(refused.headers["retry-after"]) <= 3600
    assert [checks["limits"] for checks in answers.readiness] == ["ok", "ok"]


def test_two_apps_in_memory_each_count_alone(tmp_path: Path) -> None:
    answers = two_apps_answer(tmp_path, "memory://", "unused")
    # Each app saw about half of the posts, under its own limit of PER_CLIENT: all went through.
    assert answers.statuses == [200] * (PER_CLIENT + 1)
    assert all("limits" not in checks for checks in answers.readiness)  # nothing shared, nothing to check


def test_the_daily_cap_of_emails_holds_across_two_apps_whatever_the_limits_storage(tmp_path: Path) -> None:
    web = (
        "subscribe_per_client_per_hour = 50\nsubscribe_per_address_per_hour = 50\n"
        "confirmations_per_address_per_day = 2\n"
    )
    answers = two_apps_answer(tmp_path, "memory://", "unused", ["many@example.org"] * 5, web)
    assert answers.statuses == [200] * 5  # the same page, whether sent or not
    settings = load_settings(tmp_path / "config.toml", environ={"SYNDICATION_SECRET_KEY": KEY, **PLAIN_HTTP})
    with Service.open(settings) as service, database.transaction(service.engine) as session:
        # Counted in the store as each request reserved its email: two, however the posts were spread.
        assert sent_on(session, "many@example.org", date.today()) == 2
        assert session.scalar(select(func.sum(FormEmailRow.count))) == 2


def test_two_apps_go_on_subscribing_when_redis_is_down(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="syndication.web.limits"):
        answers = two_apps_answer(tmp_path, f"redis://127.0.0.1:{closed_port()}/0", "down")
    assert answers.statuses == [200] * (PER_CLIENT + 1)  # each app counted alone, nobody refused for Redis
    assert [checks["limits"] for checks in answers.readiness] == ["unreachable: counting in each process"] * 2
    assert any("cannot be reached" in record.getMessage() for record in caplog.records)


def test_the_storage_url_is_checked_and_its_password_masked(tmp_path: Path) -> None:
    from syndication.config_sources import shown_values
    from syndication.errors import ConfigError

    config = write_config(tmp_path, f"sqlite:///{tmp_path / 'store.db'}")
    environ = {"SYNDICATION_WEB__LIMITS_STORAGE": "redis://:s3cret-pass@10.0.4.7:6379/0"}
    settings = load_settings(config, environ=environ)
    shown = {value.key: value.value for value in shown_values(settings, settings.origins)}
    assert shown["web.limits_storage"] == "redis://:****@10.0.4.7:6379/0"
    storage = shared_storage(settings)
    assert storage is not None and "s3cret" not in storage.shown and storage.prefix == "https://news.example.org"
    with pytest.raises(ConfigError, match=r"web\.limits_storage"):
        load_settings(config, environ={"SYNDICATION_WEB__LIMITS_STORAGE": "memcached://127.0.0.1:11211"})
