"""Fixtures: a store on SQLite and, when SYNDICATION_TEST_POSTGRES_URL is set, on a fresh PostgreSQL database."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from syndication.app.service import Service, init_store
from syndication.clock import fixed_clock
from syndication.config import Settings, load_settings
from tests.run_process import RunProcess
from tests.support import NOW, write_config

POSTGRES_URL = os.environ.get("SYNDICATION_TEST_POSTGRES_URL")


def _backends() -> list[object]:
    postgres = pytest.param(
        "postgresql",
        marks=[
            pytest.mark.postgres,
            pytest.mark.skipif(not POSTGRES_URL, reason="SYNDICATION_TEST_POSTGRES_URL is not set"),
        ],
    )
    return ["sqlite", postgres]


@pytest.fixture(params=_backends())
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database of this test's own: a SQLite file, or a PostgreSQL database created and dropped."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'store.db'}"
        return
    assert POSTGRES_URL
    yield from _postgres_database(POSTGRES_URL)


def _postgres_database(admin_url: str) -> Iterator[str]:
    name = f"syndication_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
def config_path(tmp_path: Path, database_url: str) -> Path:
    """A config.toml on this test's database, with the three fixture themes."""
    return write_config(tmp_path, database_url)


@pytest.fixture
def settings(config_path: Path) -> Settings:
    """The fixture settings, read the way the command line reads them."""
    return load_settings(config_path, environ={})


@pytest.fixture
def service(settings: Settings) -> Iterator[Service]:
    """An initialised store with the clock fixed at NOW."""
    init_store(settings)
    service = Service.open(settings, fixed_clock(NOW))
    yield service
    service.engine.dispose()


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--regenerate-golden", action="store_true", help="rewrite tests/golden/ from the current output")


@pytest.fixture
def regenerate_golden(request: pytest.FixtureRequest) -> bool:
    """Whether golden files are to be rewritten instead of compared."""
    return bool(request.config.getoption("--regenerate-golden"))


@pytest.fixture
def launch() -> Iterator[Callable[..., RunProcess]]:
    """Starts ``syndication run`` processes (``launch(config, web_port=None)``); whatever still runs at the end of
    the test is killed, and its last log lines printed (shown when the test failed)."""
    started: list[RunProcess] = []

    def start(config: Path, web_port: int | None = None) -> RunProcess:
        process = RunProcess(config, web_port)
        started.append(process)
        return process

    yield start
    for process in started:
        process.kill()
        print(process.log(last=200))


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh PostgreSQL database of this test's own, dropped afterwards: for processes that share a store."""
    if not POSTGRES_URL:
        pytest.skip("processes sharing a store need PostgreSQL: SYNDICATION_TEST_POSTGRES_URL is not set")
    yield from _postgres_database(POSTGRES_URL)
