"""The edition life cycle, for every driver (GitHub #17): an empty window publishes nothing and emails nobody, a
re-run of a window never strands a delivery, ``require_approval`` holds ``digest send`` too, and every deferral
keeps its reason. SQLite and PostgreSQL (``database_url``), a real SMTP server, the CLI through ``main``."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from syndication.app.editions import deliver, list_editions, notify_editors, plan_edition, sent_editions
from syndication.app.jobs import last_until
from syndication.app.service import Service
from syndication.app.status import status_report
from syndication.app.subscribers import add_subscriber
from syndication.cli import main
from syndication.core.models import EditionStatus
from syndication.store import database, ledger
from tests.smtp_server import SmtpTestServer, smtp_server
from tests.test_delivery import SINCE, UNTIL, audience, sending  # noqa: F401 (the fixture)

WINDOW = ["--since", SINCE.isoformat(), "--until", UNTIL.isoformat()]
EMPTY_SINCE, EMPTY_UNTIL = UNTIL, UNTIL + timedelta(days=7)  # nothing was published after NOW


def _config(audience: Service, tmp_path: Path, port: int, extra: str = "") -> Path:  # noqa: F811
    assert audience.settings.config_path is not None
    text = audience.settings.config_path.read_text("utf-8")
    config = tmp_path / "lifecycle.toml"
    config.write_text(f'{text}\n[smtp]\nhost = "127.0.0.1"\nport = {port}\n{extra}', "utf-8")
    return config


@pytest.fixture
def server() -> Iterator[SmtpTestServer]:
    with smtp_server() as running:
        yield running


@pytest.fixture
def keyed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SYNDICATION_SECRET_KEY", "cli-signing-key-" + "y" * 16)


def test_a_rerun_of_a_sent_window_strands_no_delivery(
    audience: Service,  # noqa: F811
    server: SmtpTestServer,
    tmp_path: Path,
    keyed: None,
    capsys: pytest.CaptureFixture[str],
) -> None:
    config = _config(audience, tmp_path, server.port)
    assert main(["--config", str(config), "digest", "send", "--cadence", "weekly", *WINDOW]) == 0
    assert server.accepted == 3
    capsys.readouterr()
    # Someone subscribes after the edition went out; the window is sent again.
    add_subscriber(audience, "late@example.org", name="Late", themes=[], cadence="weekly", language="en",
                   confirmed=True)  # fmt: skip
    assert main(["--config", str(config), "digest", "send", "--cadence", "weekly", *WINDOW]) == 0
    out = capsys.readouterr().out
    assert "already existed: 0 deliveries queued" in out and "is sent" in out
    assert main(["--config", str(config), "deliver"]) == 0
    reports = list_editions(audience)
    assert [r.edition.status for r in reports] == [EditionStatus.SENT]
    assert "queued" not in reports[0].deliveries
    assert status_report(audience).queue_depth == 0
    assert server.accepted == 3


def test_a_delivery_stranded_under_a_sent_edition_is_sent_by_a_rerun(
    audience: Service,  # noqa: F811
    server: SmtpTestServer,
) -> None:
    service = sending(audience, server)
    plan = plan_edition(service, "weekly", SINCE, UNTIL)
    deliver(service)
    assert plan.edition is not None and server.accepted == 3
    late = add_subscriber(service, "late@example.org", name="Late", themes=[], cadence="weekly", language="en",
                          confirmed=True)  # fmt: skip
    with database.transaction(service.engine) as session:  # what an older version left behind
        ledger.queue(session, plan.edition.id, [(late.subscriber.id, "stranded.1")], service.clock())
    again = plan_edition(service, "weekly", SINCE, UNTIL)
    assert again.edition is not None and again.edition.status == EditionStatus.SENDING
    report = deliver(service)
    assert report.sent == 1 and report.finished_editions == [plan.edition.id]
    assert server.accepted == 4


def test_an_empty_window_is_neither_public_nor_a_draft_nor_emailed(
    audience: Service,  # noqa: F811
    server: SmtpTestServer,
) -> None:
    settings = audience.settings.model_copy(
        update={"digest": audience.settings.digest.model_copy(update={"approval_emails": ("ed@example.org",)})}
    )
    service = sending(Service(settings, audience.engine, audience.clock), server)
    plan = plan_edition(service, "weekly", EMPTY_SINCE, EMPTY_UNTIL, draft=True)
    assert plan.edition is not None and plan.empty and plan.created and plan.queued == 0
    assert plan.edition.status == EditionStatus.EMPTY and plan.edition.reason == "nothing new"
    assert notify_editors(service, plan) == []
    assert server.accepted == 0
    assert sent_editions(service, 50) == []
    assert last_until(service, "weekly") == EMPTY_UNTIL  # the next window starts where this one ended
    again = plan_edition(service, "weekly", EMPTY_SINCE, EMPTY_UNTIL)
    assert not again.created and again.edition is not None and again.edition.status == EditionStatus.EMPTY
    assert deliver(service).handled == 0


def test_an_empty_window_is_not_in_the_public_archive(
    audience: Service,  # noqa: F811
    server: SmtpTestServer,
) -> None:
    from syndication.app.publishing import editions_feed

    service = sending(audience, server)
    plan_edition(service, "weekly", SINCE, UNTIL)
    deliver(service)
    empty = plan_edition(service, "weekly", EMPTY_SINCE, EMPTY_UNTIL)
    assert empty.edition is not None and empty.empty
    assert [edition.id for edition in sent_editions(service, 50)] == [1]
    feed = editions_feed(service, sent_editions(service, 50), title="Editions", description="Every edition.",
                         title_of=lambda e: f"edition {e.id}", summary_of=lambda e: "")  # fmt: skip
    text = feed.body.decode("utf-8")
    assert "/editions/1" in text and f"/editions/{empty.edition.id}" not in text


def test_digest_send_of_an_empty_window_says_so(
    audience: Service,  # noqa: F811
    server: SmtpTestServer,
    tmp_path: Path,
    keyed: None,
    capsys: pytest.CaptureFixture[str],
) -> None:
    config = _config(audience, tmp_path, server.port)
    window = ["--since", EMPTY_SINCE.isoformat(), "--until", EMPTY_UNTIL.isoformat()]
    assert main(["--config", str(config), "digest", "send", "--cadence", "weekly", *window]) == 0
    assert "nothing new" in capsys.readouterr().out
    assert main(["--config", str(config), "editions", "list"]) == 0
    assert "empty" in (listed := capsys.readouterr().out) and "nothing new" in listed
    assert server.accepted == 0


def test_digest_send_honours_require_approval(
    audience: Service,  # noqa: F811
    server: SmtpTestServer,
    tmp_path: Path,
    keyed: None,
    capsys: pytest.CaptureFixture[str],
) -> None:
    config = _config(audience, tmp_path, server.port, "\n[digest]\nrequire_approval = true\n")
    assert main(["--config", str(config), "digest", "send", "--cadence", "weekly", *WINDOW]) == 0
    out = capsys.readouterr().out
    assert "edition 1 is a draft: approve it with 'syndication editions approve 1'" in out
    assert server.accepted == 0
    [report] = list_editions(audience)
    assert report.edition.status == EditionStatus.DRAFT
    assert main(["--config", str(config), "digest", "send", "--cadence", "weekly", *WINDOW, "--approve"]) == 0
    out = capsys.readouterr().out
    assert "approved by the operator" in out and "3 sent" in out
    assert server.accepted == 3
    [report] = list_editions(audience)
    assert report.edition.status == EditionStatus.SENT


def test_digest_send_approve_creates_and_sends_at_once(
    audience: Service,  # noqa: F811
    server: SmtpTestServer,
    tmp_path: Path,
    keyed: None,
    capsys: pytest.CaptureFixture[str],
) -> None:
    config = _config(audience, tmp_path, server.port, "\n[digest]\nrequire_approval = true\n")
    assert main(["--config", str(config), "digest", "send", "--cadence", "weekly", *WINDOW, "--approve"]) == 0
    assert "approved by the operator" in capsys.readouterr().out
    assert server.accepted == 3


def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on now: an SMTP server that is down."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_deferrals_keep_their_reason_and_nothing_delivered_fails(
    audience: Service,  # noqa: F811
    tmp_path: Path,
    keyed: None,
    capsys: pytest.CaptureFixture[str],
) -> None:
    port = closed_port()
    config = _config(audience, tmp_path, port)
    assert main(["--config", str(config), "digest", "send", "--cadence", "weekly", *WINDOW]) == 1
    captured = capsys.readouterr()
    assert "Connection refused" in captured.out or "Connection refused" in captured.err
    grouped = [line for line in captured.out.splitlines() if "Connection refused" in line]
    assert grouped and all("@" not in line for line in grouped)
    assert main(["--config", str(config), "status"]) == 0
    assert "Connection refused" in capsys.readouterr().out
