"""What one command writes, another reads as it is (README): ``posts list --json`` into ``import``, ``subscribers
export`` into ``subscribers import``, each into a fresh store (SQLite and PostgreSQL); and the exit statuses the
README gives for a wrong argument and a port in use. Everything through the real command line."""

from __future__ import annotations

import csv
import io
import json
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from syndication.app.service import Service
from syndication.app.subscribers import add_subscriber, list_subscribers
from syndication.cli import main
from syndication.clock import fixed_clock
from syndication.config import load_settings
from syndication.store import database
from syndication.store import subscribers as subscriber_store
from tests.conftest import POSTGRES_URL, _postgres_database
from tests.smtp_server import SmtpTestServer, smtp_server
from tests.support import NOW, post_record, write_config, write_jsonl

KEY = "round-trip-test-signing-key-0123456789"
LANGUAGES = '[digest]\nlanguages = ["en", "es", "fr"]\n'


@pytest.fixture
def fresh_url(database_url: str, tmp_path: Path) -> Iterator[str]:
    """A second, empty database on the same backend as ``database_url``."""
    if database_url.startswith("sqlite"):
        yield f"sqlite:///{tmp_path / 'fresh.db'}"
        return
    assert POSTGRES_URL
    yield from _postgres_database(POSTGRES_URL)


@pytest.fixture
def mail() -> Iterator[SmtpTestServer]:
    with smtp_server() as server:
        yield server


def store_config(folder: Path, url: str, mail: SmtpTestServer | None = None) -> Path:
    folder.mkdir()
    smtp = (
        f'[smtp]\nhost = "127.0.0.1"\nport = {mail.port}\n[mail]\nfrom_address = "news@example.org"\n' if mail else ""
    )
    config = write_config(folder, url, LANGUAGES + smtp)
    assert main(["--config", str(config), "init"]) == 0
    return config


@contextmanager
def opened(config: Path) -> Iterator[Service]:
    """The store of ``config``, read as the command line reads it (the signing key from the environment)."""
    with Service.open(load_settings(config), fixed_clock(NOW)) as service:
        yield service


def output_of(capsys: pytest.CaptureFixture[str], *arguments: str) -> str:
    capsys.readouterr()
    assert main(list(arguments)) == 0
    return capsys.readouterr().out


def test_a_posts_listing_imports_into_a_fresh_store_as_the_same_posts(
    database_url: str, fresh_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    records = [
        post_record(1, themes=["climate-action"], authors=["Ana", "Bo"], language="es"),
        post_record(2, title="Line\u2028separated & <odd>", image={"url": "https://x.example/i.png", "alt": "A"}),
        post_record(3, content_html="<p>Long</p>" * 50, regions=[], updated="2024-05-20T08:00:00Z"),
    ]
    source = store_config(tmp_path / "source", database_url)
    assert main(["--config", str(source), "import", str(write_jsonl(tmp_path / "posts.jsonl", records))]) == 0
    listing = output_of(capsys, "--config", str(source), "posts", "list", "--json")
    lines = listing.splitlines()
    assert len(lines) == 3 and all(json.loads(line)["guid"] for line in lines)  # JSON Lines: one post a line

    exported = tmp_path / "exported.jsonl"
    exported.write_text(listing, encoding="utf-8")
    fresh = store_config(tmp_path / "fresh", fresh_url)
    capsys.readouterr()
    assert main(["--config", str(fresh), "import", str(exported)]) == 0
    assert "3 added" in capsys.readouterr().out
    assert output_of(capsys, "--config", str(fresh), "posts", "list", "--json") == listing
    assert main(["--config", str(fresh), "import", str(exported)]) == 0  # seen again: nothing changes
    assert "3 unchanged" in capsys.readouterr().out


def _kept(subscriber: Any) -> tuple[Any, ...]:
    """Everything a round trip keeps of a subscriber (not the store's own id and dates)."""
    return (subscriber.email, subscriber.name, subscriber.language, subscriber.themes, subscriber.cadence,
            subscriber.status, subscriber.consent, subscriber.reads, subscriber.language_choice)  # fmt: skip


def test_a_subscribers_export_imports_into_a_fresh_store_as_the_same_subscribers(
    database_url: str,
    fresh_url: str,
    tmp_path: Path,
    mail: SmtpTestServer,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SYNDICATION_SECRET_KEY", KEY)
    source = store_config(tmp_path / "source", database_url, mail)
    with opened(source) as service:
        add_subscriber(service, "ana@example.org", name="=Ana, \"the\" 'first'", themes="climate-action,resilience",
                       cadence="daily", language="es", confirmed=True, consent_method="form",
                       consent_source="subscribe page")  # fmt: skip
        reader = add_subscriber(service, "bo@example.org", language="fr", confirmed=True).subscriber
        for address in ("cy@example.org", "di@example.org", "ed@example.org"):
            add_subscriber(service, address, confirmed=True)
        add_subscriber(service, "fay@example.org")  # pending: never confirmed
        with database.transaction(service.engine) as session:
            subscriber_store.update_preferences(session, reader.id, reads=["es", "pt-BR"], language_choice="only")
            for address, status in (("cy", "unsubscribed"), ("di", "bounced"), ("ed", "complained")):
                found = subscriber_store.subscriber_by_email(session, f"{address}@example.org")
                assert found is not None
                subscriber_store.set_status(session, found.id, status, NOW)
        before = {s.email: s for s in list_subscribers(service)}
    assert before["bo@example.org"].reads == ("es", "pt-BR") and before["bo@example.org"].language_choice == "only"
    export = output_of(capsys, "--config", str(source), "subscribers", "export")
    header = next(csv.reader(io.StringIO(export)))
    assert {"id", "status", "created_at", "consent_at", "reads", "language_choice"} <= set(header)
    exported = tmp_path / "subscribers.csv"
    exported.write_text(export, encoding="utf-8")

    mail.reset()
    fresh = store_config(tmp_path / "fresh", fresh_url, mail)
    capsys.readouterr()
    assert main(["--config", str(fresh), "subscribers", "import", str(exported), "--confirmed"]) == 0
    assert "6 added" in capsys.readouterr().out
    with opened(fresh) as service:
        after = {s.email: s for s in list_subscribers(service)}
    assert {email: _kept(s) for email, s in after.items()} == {email: _kept(s) for email, s in before.items()}
    # Those who left stay gone; the one who never confirmed is asked to, and nobody else is written to.
    assert [s.status for s in map(after.get, ("cy@example.org", "di@example.org", "ed@example.org")) if s] == [
        "unsubscribed", "bounced", "complained"
    ]  # fmt: skip
    assert mail.wait_for(1) and [list(m.recipients) for m in mail.messages] == [["fay@example.org"]]

    # Imported again over itself (--confirmed, even --reactivate): nothing changes, no one who left comes back.
    again = ["subscribers", "import", str(exported), "--confirmed", "--reactivate", "--reason", "a round trip"]
    assert main(["--config", str(fresh), *again]) == 0
    assert "6 unchanged" in capsys.readouterr().out
    with opened(fresh) as service:
        assert {s.email: _kept(s) for s in list_subscribers(service)} == {e: _kept(s) for e, s in after.items()}


def test_a_row_that_left_is_never_made_active_and_bad_export_cells_are_refused_by_line(
    database_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = store_config(tmp_path / "store", database_url)
    assert main(["--config", str(config), "subscribers", "add", "cy@example.org", "--confirmed"]) == 0
    rows = tmp_path / "rows.csv"
    rows.write_text(
        "id,email,status,consent_at,consent_method,consent_source,reads,language_choice\n"
        "7,ana@example.org,unsubscribed,2023-01-02T03:04:05+00:00,form,old site,,\n"
        "8,cy@example.org,unsubscribed,,,,,\n"
        "9,bad-time@example.org,active,yesterday,form,,,\n"
        "10,bad-reads@example.org,active,,,,not a language!,\n"
        "11,bad-choice@example.org,active,,,,,sometimes\n",
        encoding="utf-8",
    )
    capsys.readouterr()
    assert main(["--config", str(config), "subscribers", "import", str(rows), "--confirmed"]) == 1
    err = capsys.readouterr().err.splitlines()
    assert [line.split(": ")[2] for line in err] == ["line 4", "line 5", "line 6"]  # refused: FILE: line N: ...
    assert "consent_at 'yesterday'" in err[0] and "language tag" in err[1] and "language choice" in err[2]
    with opened(config) as service:
        found = {s.email: s for s in list_subscribers(service)}
    assert set(found) == {"ana@example.org", "cy@example.org"}
    assert found["ana@example.org"].status == "unsubscribed" and found["ana@example.org"].consent.source == "old site"
    assert found["cy@example.org"].status == "active"  # an existing subscriber's status is not lowered by a row


def test_an_unknown_theme_or_region_is_a_wrong_argument(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    regions = '[[regions]]\nslug = "europe"\nname = "Europe"\n'
    config = write_config(tmp_path, f"sqlite:///{tmp_path / 'store.db'}", regions)
    assert main(["--config", str(config), "init"]) == 0
    capsys.readouterr()
    for arguments in (["posts", "list", "--theme", "astrology"], ["posts", "list", "--region", "atlantis"],
                      ["digest", "preview", "--themes", "astrology"]):  # fmt: skip
        assert main(["--config", str(config), *arguments]) == 2, arguments  # README: 2, the arguments are wrong
        err = capsys.readouterr().err
        assert err.startswith("syndication: error: --") and err.count("\n") == 1, err
    assert main(["--config", str(config), "posts", "list", "--theme", "climate-action"]) == 0


@pytest.mark.parametrize("command", ["serve", "run"])
def test_a_port_in_use_fails_with_one_line_before_anything_starts(tmp_path: Path, command: str) -> None:
    config = write_config(tmp_path, f"sqlite:///{tmp_path / 'store.db'}", '[feeds]\noutput_dir = "feeds"\n')
    assert main(["--config", str(config), "init"]) == 0
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        arguments = ["--config", str(config), command, "--host", "127.0.0.1", "--port", str(port)]
        done = subprocess.run([sys.executable, "-m", "syndication", *arguments],
                              capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 1  # README: 1, something failed
    assert done.stderr == f"syndication: error: cannot listen on 127.0.0.1:{port}: Address already in use\n"
    assert not (tmp_path / "feeds").exists()  # nothing was built before the port was found taken
