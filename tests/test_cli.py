"""The command line's own edges: arguments out of range, paths that name nothing or cannot be written, a store
that is not a database, and a reader that stops reading. Each is one clear line and an exit status, never a
traceback."""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from syndication.cli import main
from tests.support import post_record, write_config, write_jsonl


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = write_config(tmp_path, f"sqlite:///{tmp_path / 'store.db'}", '[feeds]\noutput_dir = "feeds"\n')
    assert main(["--config", str(path), "init"]) == 0
    records = [post_record(number) for number in range(1, 4)]
    assert main(["--config", str(path), "import", str(write_jsonl(tmp_path / "posts.jsonl", records))]) == 0
    return path


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["posts", "list", "--limit", "-1"], "a count is 1 to 1,000,000, not -1"),
        (["posts", "list", "--limit", "99999999999999999999999"], "a count is 1 to 1,000,000"),
        (["serve", "--port", "99999"], "a TCP port is 1 to 65,535, not 99999"),
        (["editions", "pause", "99999999999999999999"], "an id is 1 to"),
        (["feeds", "build", "--out", ""], "an empty path names nothing"),
        (["import", ""], "an empty path names nothing"),
    ],
)
def test_arguments_out_of_range_are_usage_errors(
    config: Path, capsys: pytest.CaptureFixture[str], arguments: list[str], message: str
) -> None:
    with pytest.raises(SystemExit) as exit_status:
        main(["--config", str(config), *arguments])
    assert exit_status.value.code == 2
    assert message in capsys.readouterr().err


def test_paths_that_cannot_be_written_are_named_with_the_reason(
    config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a_file = tmp_path / "posts.jsonl"
    assert main(["--config", str(config), "feeds", "build", "--out", str(a_file)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"syndication: error: {a_file}") and "Not a directory" in err and "internal" not in err
    window = ["--since", "2024-05-01T00:00:00Z", "--until", "2024-06-01T00:00:00Z"]
    assert main(["--config", str(config), "digest", "preview", *window, "--out", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err == f"syndication: error: {tmp_path}: Is a directory\n"


def test_a_store_that_is_not_a_database_is_refused_clearly(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    not_a_database = tmp_path / "notes.txt"
    not_a_database.write_text("these are notes, not SQLite\n" * 100, "utf-8")
    config = write_config(tmp_path, f"sqlite:///{not_a_database}")
    assert main(["--config", str(config), "init"]) == 1
    err = capsys.readouterr().err
    assert "cannot open the store" in err and "file is not a database" in err and "internal" not in err


def test_an_unknown_region_is_refused_like_an_unknown_theme(
    config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    regional = write_config(
        tmp_path, f"sqlite:///{tmp_path / 'store.db'}", '[[regions]]\nslug = "europe"\nname = "Europe"\n'
    )
    assert main(["--config", str(regional), "posts", "list", "--region", "atlantis"]) == 2  # a wrong argument
    assert "unknown region 'atlantis'" in capsys.readouterr().err
    assert main(["--config", str(regional), "posts", "list", "--theme", "astrology"]) == 2
    assert "--theme: unknown theme 'astrology'" in capsys.readouterr().err
    assert main(["--config", str(regional), "posts", "list", "--region", "europe"]) == 0


def test_a_reader_that_stops_reading_is_not_an_error(config: Path, tmp_path: Path) -> None:
    many = [post_record(number, content_html="<p>" + "words " * 200 + "</p>") for number in range(10, 210)]
    assert main(["--config", str(config), "import", str(write_jsonl(tmp_path / "many.jsonl", many))]) == 0
    command = [sys.executable, "-m", "syndication", "--config", str(config), "posts", "list", "--json"]
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ}) as listing:
        assert listing.stdout is not None and listing.stderr is not None
        listing.stdout.read(1)
        listing.stdout.close()  # as `| head -c 1` does, long before the listing (over 200 KB) is written
        err = listing.stderr.read().decode()
        status = listing.wait(timeout=60)
    assert status == 141 and "Traceback" not in err and "internal error" not in err, err


def test_digest_send_refuses_what_would_fail_every_message_before_making_an_edition(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SYNDICATION_SECRET_KEY", "a test key that is long enough to sign with")
    dkim = '[dkim]\ndomain = "news.example.org"\nselector = "s1"\nkey_file = "missing.pem"\n'
    config = write_config(tmp_path, f"sqlite:///{tmp_path / 'store.db'}", dkim)
    assert main(["--config", str(config), "init"]) == 0
    assert main(["--config", str(config), "subscribers", "add", "ana@example.org", "--confirmed"]) == 0
    capsys.readouterr()
    window = ["--since", "2024-05-01T00:00:00Z", "--until", "2024-06-01T00:00:00Z"]
    assert main(["--config", str(config), "digest", "send", "--cadence", "weekly", *window]) == 2
    assert "dkim.key_file" in capsys.readouterr().err
    monkeypatch.delenv("SYNDICATION_SECRET_KEY")
    keyless = write_config(tmp_path, f"sqlite:///{tmp_path / 'store.db'}")
    assert main(["--config", str(keyless), "digest", "send", "--cadence", "weekly", *window]) == 2
    assert "SYNDICATION_SECRET_KEY" in capsys.readouterr().err
    with sqlite3.connect(tmp_path / "store.db") as connection:
        assert connection.execute("SELECT count(*) FROM editions").fetchone() == (0,)


def test_sigterm_during_a_large_import_stops_cleanly_and_leaves_no_process(tmp_path: Path) -> None:
    from bench.generate import write_posts

    config = write_config(tmp_path, f"sqlite:///{tmp_path / 'store.db'}")
    assert main(["--config", str(config), "init"]) == 0
    posts = write_posts(tmp_path / "big.jsonl", 30_000)  # over 8 MB: parsed in worker processes
    command = [sys.executable, "-m", "syndication", "--config", str(config), "import", str(posts)]
    importing = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        with importing, sqlite3.connect(tmp_path / "store.db", timeout=30) as store:
            deadline = time.monotonic() + 60
            # Wait until batches are being stored, so that the signal lands in the middle of the work.
            while store.execute("SELECT count(*) FROM posts").fetchone()[0] == 0:
                assert importing.poll() is None and time.monotonic() < deadline, "the import ended before it stored"
                time.sleep(0.05)
            importing.send_signal(signal.SIGTERM)
            _, err = importing.communicate(timeout=60)
            stored = store.execute("SELECT count(*) FROM posts").fetchone()[0]
        assert importing.returncode == 143 and err.decode().endswith("syndication: terminated\n"), err.decode()
        assert 0 < stored < 30_000  # the batches stored so far stay; a second import adds the rest
        while True:  # the worker processes and the fork server go with it
            try:
                os.killpg(importing.pid, 0)
            except ProcessLookupError:
                break
            assert time.monotonic() < deadline, "processes of the import are still running"
            time.sleep(0.1)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(importing.pid, signal.SIGKILL)  # a failed run leaves nothing behind either
    assert main(["--config", str(config), "import", str(posts)]) == 0


def test_version_is_the_installed_distributions(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    # One version: the package's own, and the one pip installed from pyproject.toml.
    assert capsys.readouterr().out == f"syndication {importlib.metadata.version('syndication')}\n"
