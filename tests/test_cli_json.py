"""``--json`` on every command that prints a list or a status (issue 21): one JSON document on standard output
(a list an array, a status an object), dates ISO 8601 in UTC with Z, and errors still one line on standard error
with the same exit status and nothing on standard output. SQLite and PostgreSQL (``database_url``), the CLI
through ``main``."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from syndication.app.bounces import Incoming, process_messages
from syndication.app.editions import deliver, plan_edition
from syndication.app.service import Service
from syndication.cli import main
from syndication.cli.output import json_ready
from syndication.core.models import EditionStatus
from tests.smtp_server import SmtpTestServer, smtp_server
from tests.support import write_config
from tests.test_bounces import dsn, plain
from tests.test_delivery import SINCE, UNTIL, audience, sending  # noqa: F401 (the fixture)


@pytest.fixture
def server() -> Iterator[SmtpTestServer]:
    with smtp_server() as running:
        yield running


@pytest.fixture
def sent(audience: Service, server: SmtpTestServer) -> int:  # noqa: F811
    """A weekly edition of the fixture week, delivered to its three readers; its id."""
    service = sending(audience, server)
    plan = plan_edition(service, "weekly", SINCE, UNTIL)
    assert plan.edition is not None
    assert deliver(service).sent == 3
    return plan.edition.id


def run(config: Path | None, capsys: pytest.CaptureFixture[str], *arguments: str) -> tuple[int, str, str]:
    """The exit status, standard output and standard error of ``syndication [--config CONFIG] ARGUMENTS``."""
    capsys.readouterr()
    status = main([*(["--config", str(config)] if config else []), *arguments])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def json_of(config: Path, capsys: pytest.CaptureFixture[str], *arguments: str) -> Any:
    status, out, _ = run(config, capsys, *arguments, "--json")
    assert status == 0
    return json.loads(out)


def utc(text: str) -> datetime:
    """A date as --json writes them: ISO 8601, in UTC with Z."""
    assert text.endswith("Z"), text
    return datetime.fromisoformat(text)


def config_of(service: Service) -> Path:
    assert service.settings.config_path is not None
    return service.settings.config_path


def test_editions_list(audience: Service, sent: int, capsys: pytest.CaptureFixture[str]) -> None:  # noqa: F811
    [edition] = json_of(config_of(audience), capsys, "editions", "list")
    assert (edition["id"], edition["cadence"], edition["status"]) == (sent, "weekly", "sent")
    assert edition["deliveries"] == {"sent": 3}  # the fourth reader had nothing new
    assert edition["reasons"] == {} and edition["reason"] == ""
    assert (utc(edition["since"]), utc(edition["until"])) == (SINCE, UNTIL)
    assert edition["created_at"].endswith("Z")


def test_editions_list_says_why_deliveries_wait(
    audience: Service,  # noqa: F811
    capsys: pytest.CaptureFixture[str],
) -> None:
    with smtp_server() as server:
        port = server.port
    service = sending(audience, server)  # a server that no longer listens: every delivery is deferred
    assert service.settings.smtp.port == port
    plan = plan_edition(service, "weekly", SINCE, UNTIL)
    assert deliver(service).deferred == 3
    [edition] = json_of(config_of(audience), capsys, "editions", "list")
    assert plan.edition is not None and edition["id"] == plan.edition.id
    assert edition["status"] == EditionStatus.SENDING and edition["deliveries"] == {"deferred": 3}
    [(reason, count)] = edition["reasons"]["deferred"].items()
    assert count == 3 and str(port) in reason


def test_status(audience: Service, sent: int, capsys: pytest.CaptureFixture[str]) -> None:  # noqa: F811
    report = json_of(config_of(audience), capsys, "status")
    assert report["queue_depth"] == 0 and report["leader"] is None and report["stale_drafts"] == []
    assert report["deliver_interval_seconds"] == audience.settings.schedule.deliver_interval_seconds
    cadences = {c["cadence"]: c for c in report["editions"]}
    assert set(cadences) == set(audience.settings.schedule.cadences)
    weekly = cadences["weekly"]
    assert (weekly["last"]["id"], weekly["last"]["status"], weekly["deliveries"]) == (sent, "sent", {"sent": 3})
    assert utc(weekly["next_due"]) > datetime.now(UTC) - timedelta(minutes=1)
    assert cadences["daily"]["last"] is None


def test_subscribers_list(audience: Service, capsys: pytest.CaptureFixture[str]) -> None:  # noqa: F811
    listed = json_of(config_of(audience), capsys, "subscribers", "list")
    assert [s["email"] for s in listed] == ["ana@example.org", "bo@example.org", "kita@example.jp",
                                            "idle@example.org"]  # fmt: skip
    bo = listed[1]
    assert (bo["themes"], bo["status"], bo["cadence"], bo["name"]) == (["resilience"], "active", "weekly", "Bo Li")
    assert listed[0]["themes"] is None and listed[0]["language"] == "es"
    assert bo["consent"]["method"] == "cli" and utc(bo["consent"]["at"]) == utc(bo["created_at"])
    assert utc(bo["confirmed_at"]) and bo["reads"] == [] and bo["language_choice"] is None


def test_themes_list(audience: Service, capsys: pytest.CaptureFixture[str]) -> None:  # noqa: F811
    themes = json_of(config_of(audience), capsys, "themes", "list")
    assert [(t["slug"], t["posts"]) for t in themes] == [("climate-action", 1), ("resilience", 1),
                                                         ("circular-economy", 0)]  # fmt: skip
    assert themes[0]["aliases"] == ["climate", "low-emission"] and themes[0]["name"] == "Climate action"


def test_bounces_list(
    audience: Service,  # noqa: F811
    server: SmtpTestServer,
    capsys: pytest.CaptureFixture[str],
) -> None:
    service = sending(audience, server, datetime.now(UTC))  # the bounce address set; now, as the CLI counts
    messages = [Incoming(dsn("bo@example.org")), Incoming(plain("x@example.net", "bounces@news.example.org", "Hi"))]
    assert [o.kind for o in process_messages(service, messages)] == ["dsn", "unrecognised"]
    config = config_of(audience)
    listed = json_of(config, capsys, "bounces", "list")
    assert [(m["kind"], m["source"]) for m in listed] == [("unrecognised", "import"), ("dsn", "import")]
    assert listed[0]["kept_bytes"] > 0 and listed[1]["kept_bytes"] == 0 and utc(listed[1]["received_at"])
    assert [m["kind"] for m in json_of(config, capsys, "bounces", "list", "--kind", "dsn")] == ["dsn"]
    bo = json_of(config, capsys, "bounces", "list", "--subscriber", "Bo@Example.org")
    assert (bo["email"], bo["status"], bo["score"], bo["threshold"]) == ("bo@example.org", "bounced", 5.0, 5.0)
    [bounce] = bo["bounces"]
    assert (bounce["fault"], bounce["status"], bounce["source"]) == ("address", "5.1.1", "dsn")
    assert utc(bounce["at"]) and bounce["subscriber_id"] is not None


def test_posts_list_stays_json_lines(audience: Service, capsys: pytest.CaptureFixture[str]) -> None:  # noqa: F811
    status, out, _ = run(config_of(audience), capsys, "posts", "list", "--json")
    assert status == 0
    records = [json.loads(line) for line in out.splitlines()]
    assert [r["title"] for r in records] == ["Sponge cities", "Karachi heat plan"]
    assert records[0]["published"] == "2024-05-29T10:00:00Z"


def test_check_mail_and_check_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # No store is needed (nor opened): the checks read the configuration.
    config = write_config(tmp_path, f"sqlite:///{tmp_path / 'never.db'}", '[digest]\nlanguages = ["en", "fr"]\n')
    status, out, err = run(config, capsys, "check-mail", "--json")
    report = json.loads(out)
    assert status == (1 if report["warnings"] else 0) and err == ""
    assert report["spf"]["name"] == report["envelope_domain"] and report["dmarc"]["name"].startswith("_dmarc.")
    status, out, _ = run(config, capsys, "check-config", "--json")
    checked = json.loads(out)
    assert (checked["languages"], checked["site_language"], checked["themes"], checked["regions"]) == (
        ["en", "fr"], "en", 3, 0)  # fmt: skip
    assert status == 1 and checked["warnings"] and any("fr" in w for w in checked["warnings"])
    assert checked["config_path"] == str(config)
    assert not (tmp_path / "never.db").exists()


def test_errors_stay_on_standard_error(
    audience: Service,  # noqa: F811
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    config = config_of(audience)
    status, out, err = run(config, capsys, "bounces", "list", "--subscriber", "nobody@example.org", "--json")
    assert (status, out) == (1, "") and err == "syndication: error: nobody@example.org: no such subscriber\n"
    missing = tmp_path / "missing.toml"
    for command in (["status"], ["editions", "list"], ["subscribers", "list"], ["themes", "list"]):
        status, out, err = run(missing, capsys, *command, "--json")
        assert (status, out) == (2, "") and str(missing) in err, command
    bare = tmp_path / "bare"
    bare.mkdir()
    uninitialised = write_config(bare, f"sqlite:///{bare / 'empty.db'}")
    for command in (["status"], ["editions", "list"], ["bounces", "list"]):
        status, out, err = run(uninitialised, capsys, *command, "--json")
        assert (status, out) == (1, "") and err.startswith("syndication: error: "), command


class _Colour:
    pass


def test_one_conversion_for_every_value() -> None:
    @dataclasses.dataclass(frozen=True, slots=True)
    class Inner:
        at: datetime
        tags: tuple[str, ...]

    @dataclasses.dataclass(frozen=True)
    class Outer:
        status: EditionStatus
        inner: Inner
        counts: dict[EditionStatus, int]
        seen: frozenset[str]
        where: Path | None

    berlin = timezone(timedelta(hours=2))
    value = Outer(EditionStatus.PAUSED, Inner(datetime(2024, 6, 1, 14, 0, tzinfo=berlin), ("a", "b")),
                  {EditionStatus.SENT: 2}, frozenset({"z", "y"}), Path("var/feeds"))  # fmt: skip
    assert json_ready(value) == {
        "status": "paused",
        "inner": {"at": "2024-06-01T12:00:00Z", "tags": ["a", "b"]},
        "counts": {"sent": 2},
        "seen": ["y", "z"],
        "where": "var/feeds",
    }
    with pytest.raises(TypeError, match="_Colour"):
        json_ready([_Colour()])
