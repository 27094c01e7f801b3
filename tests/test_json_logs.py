"""``[logging] format = "json"`` (GitHub #20): one JSON object per line with time, level, logger, message and the
record's context (the request id of the HTTP request it was logged for, the job and source of a scheduled pull),
each line parsed on its own as a log pipeline would."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import httpx
import orjson
import pytest
from prometheus_client import REGISTRY

from syndication.config import LoggingSettings, Settings
from syndication.runtime.logs import configure_logging
from syndication.scheduling.runner import Runner
from syndication.web.app import create_app
from tests.live_server import live_server
from tests.support import post_record, write_jsonl
from tests.test_health_metrics import _settings_on


@pytest.fixture
def json_log() -> Iterator[io.StringIO]:
    """The root logger writing JSON lines to a buffer for the test, as ``[logging] format = "json"`` sets it up;
    pytest's own set-up given back afterwards."""
    root = logging.getLogger()
    kept = (list(root.handlers), root.level)
    quietened = {name: logging.getLogger(name).level for name in ("apscheduler", "alembic", "flufl.bounce")}
    stream = io.StringIO()
    configure_logging(LoggingSettings(format="json", level="INFO"), stream)
    yield stream
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in kept[0]:
        root.addHandler(handler)
    root.setLevel(kept[1])
    for name, level in quietened.items():
        logging.getLogger(name).setLevel(level)
    logging.getLogger("apscheduler.scheduler").filters.clear()


def lines_of(stream: io.StringIO) -> list[dict[str, object]]:
    """Every line written, each parsed alone (a line that is not one JSON object fails the test)."""
    text = stream.getvalue()
    assert text.endswith("\n")
    return [orjson.loads(line) for line in text.splitlines()]


def test_a_record_logged_while_answering_a_request_carries_its_id(tmp_path: Path, json_log: io.StringIO) -> None:
    # A store that is no database: /readyz logs why it is not ready, from the thread it checks in.
    store = tmp_path / "store.db"
    store.write_bytes(b"not a database " * 100)
    settings = _settings_on(tmp_path, f"sqlite:///{store}")
    with live_server(create_app(settings)) as server, httpx.Client(base_url=server.url(), timeout=10) as client:
        given = client.get("/readyz", headers={"X-Request-ID": "probe-1"})
        made = client.get("/readyz")
    assert given.status_code == made.status_code == 503
    records = [line for line in lines_of(json_log) if line.get("event") == "not-ready"]
    assert [line["request_id"] for line in records] == ["probe-1", made.headers["x-request-id"]]
    for line in records:
        assert line["level"] == "warning"
        assert line["logger"] == "syndication.app.health"
        assert str(line["message"]).startswith("readiness: the store cannot be reached")
        assert datetime.fromisoformat(str(line["time"])).utcoffset() is not None


def test_a_scheduled_pull_logs_its_job_source_and_counts(
    settings: Settings, tmp_path: Path, json_log: io.StringIO
) -> None:
    feed = write_jsonl(tmp_path / "incoming.jsonl", [post_record(1), post_record(2)])
    source = {"name": "incoming", "kind": "jsonl", "path": feed}
    with_source = settings.model_copy(
        update={"sources": (type(settings).model_validate({"sources": [source]}).sources[0],)}
    )
    from syndication.app.service import init_store

    init_store(with_source)
    runner = Runner(with_source, name="json-log-test")
    runs = REGISTRY.get_sample_value("syndication_gather_runs_total", {"source": "incoming"}) or 0
    added = REGISTRY.get_sample_value("syndication_gather_posts_total", {"source": "incoming", "outcome": "added"})
    try:
        runner.gather("incoming")
        logging.getLogger("syndication.test").info("no context here")
    finally:
        runner.shutdown()
    lines = lines_of(json_log)
    (pull,) = [line for line in lines if line.get("job") == "gather:incoming"]
    assert pull["source"] == "incoming"
    assert (pull["added"], pull["updated"], pull["rejected"], pull["ok"]) == (2, 0, 0, True)
    assert pull["logger"] == "syndication.scheduler" and pull["level"] == "info"
    # The same pull counted for /metrics (in this process).
    assert REGISTRY.get_sample_value("syndication_gather_runs_total", {"source": "incoming"}) == runs + 1
    now_added = REGISTRY.get_sample_value("syndication_gather_posts_total", {"source": "incoming", "outcome": "added"})
    assert now_added == (added or 0) + 2
    (plain,) = [line for line in lines if line["logger"] == "syndication.test"]
    assert set(plain) == {"time", "level", "logger", "message"}  # no request, no request id
