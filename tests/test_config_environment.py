"""Settings from the environment (issue 20): every key by SYNDICATION_<SECTION>__<KEY>, secrets from files by
<VAR>_FILE, `config show` with secrets masked and sources named, and the signing key file `init` makes for an
embedded store."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from syndication.app.service import ensure_signing_key
from syndication.cli import main
from syndication.config import load_settings, signing_key_path, signing_keys
from syndication.errors import ConfigError
from tests.smtp_server import smtp_server
from tests.support import write_config

ROOT = Path(__file__).resolve().parent.parent
KEY = "a-signing-key-long-enough-to-sign-with"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No SYNDICATION_ variable of the machine running the tests reaches `main`."""
    for name in list(os.environ):
        if name.startswith("SYNDICATION_"):
            monkeypatch.delenv(name)


@pytest.fixture
def config(tmp_path: Path) -> Path:
    body = (
        '[smtp]\nhost = "file-host"\nport = 25\n'
        '[mail]\nreply_to = "replies@example.org"\n'
        '[bounces]\naddress = "bounces@news.example.org"\n'
    )
    return write_config(tmp_path, f"sqlite:///{tmp_path / 'var' / 'store.db'}", body)


def test_every_kind_of_key_is_set_from_the_environment_over_the_file(config: Path) -> None:
    themes = [{"slug": "water", "name": "Water", "names": {"es": "Agua"}}]
    settings = load_settings(
        config,
        environ={
            "SYNDICATION_SMTP__HOST": "relay.example",  # str, over the file's
            "SYNDICATION_SMTP__PORT": "587",  # int
            "SYNDICATION_DIGEST__REQUIRE_APPROVAL": "true",  # bool
            "SYNDICATION_DELIVERY__RATE_PER_SECOND": "2.5",  # float
            "SYNDICATION_DIGEST__LANGUAGES": "en, es,fr",  # a list, comma-separated
            "SYNDICATION_DIGEST__APPROVAL_EMAILS": '["ed@example.org", "lea@example.org"]',  # a list, JSON
            "SYNDICATION_SCHEDULE__CADENCES": '{"weekly": "off"}',  # a table of values, JSON
            "SYNDICATION_BOUNCES__MAILBOX__HOST": "imap.example.org",  # a table inside a section
            "SYNDICATION_BOUNCES__MAILBOX__USER": "bounces",
            "SYNDICATION_THEMES": json.dumps(themes),  # an array of tables, JSON
            "SYNDICATION_MAIL__REPLY_TO": "",  # an empty value unsets what may be unset
            "smtp_host": "ignored: not ours",
        },
    )
    assert (settings.smtp.host, settings.smtp.port) == ("relay.example", 587)
    assert settings.digest.require_approval is True
    assert settings.delivery.rate_per_second == 2.5
    assert settings.digest.languages == ("en", "es", "fr")
    assert settings.digest.approval_emails == ("ed@example.org", "lea@example.org")
    assert settings.schedule.cadences["weekly"] == "off" and settings.schedule.cadences["daily"] != "off"
    assert settings.bounces.mailbox is not None
    assert (settings.bounces.mailbox.host, settings.bounces.mailbox.user) == ("imap.example.org", "bounces")
    assert settings.bounces.address == "bounces@news.example.org"  # the file's keys of the section stay
    assert [(theme.slug, theme.names) for theme in settings.themes] == [("water", {"es": "Agua"})]
    assert settings.mail.reply_to is None


def test_a_list_as_json_and_the_old_variable_names_still_work(config: Path) -> None:
    settings = load_settings(
        config,
        environ={
            "SYNDICATION_DIGEST__LANGUAGES": '["en", "pt-BR"]',
            "SYNDICATION_SMTP_HOST": "old-name.example",
            "SYNDICATION_SMTP_USERNAME": "",  # an old name left empty is ignored, as it always was
        },
    )
    assert settings.digest.languages == ("en", "pt-BR")
    assert settings.smtp.host == "old-name.example"
    assert settings.smtp.username is None


def test_secrets_come_from_files_their_trailing_newline_taken_off(config: Path, tmp_path: Path) -> None:
    (tmp_path / "smtp-password").write_text("s3cret from a file\n", encoding="utf-8")
    (tmp_path / "key").write_text(KEY + "\r\n", encoding="utf-8")
    (tmp_path / "mailbox").write_text("imap-pass\n", encoding="utf-8")
    settings = load_settings(
        config,
        environ={
            "SYNDICATION_SMTP__PASSWORD_FILE": str(tmp_path / "smtp-password"),
            "SYNDICATION_SECRET_KEY_FILE": str(tmp_path / "key"),
            "SYNDICATION_BOUNCES__MAILBOX__HOST": "imap.example.org",
            "SYNDICATION_BOUNCES__MAILBOX__USER": "bounces",
            "SYNDICATION_BOUNCES_MAILBOX_PASSWORD_FILE": str(tmp_path / "mailbox"),  # an old name's _FILE too
        },
    )
    assert settings.smtp.password is not None
    assert settings.smtp.password.get_secret_value() == "s3cret from a file"
    assert signing_keys(settings) == [KEY]
    assert settings.bounces.mailbox is not None and settings.bounces.mailbox.password is not None
    assert settings.bounces.mailbox.password.get_secret_value() == "imap-pass"


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("SYNDICATION_SECRET_KEY", KEY),
        ("SYNDICATION_SMTP__PASSWORD", "s3cret"),
        ("SYNDICATION_SMTP_PASSWORD", "s3cret"),
    ],
)
def test_a_variable_and_its_file_both_set_are_refused_naming_both(
    config: Path, tmp_path: Path, variable: str, value: str
) -> None:
    secret = tmp_path / "secret"
    secret.write_text(value, encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_settings(config, environ={variable: value, f"{variable}_FILE": str(secret)})
    assert f"{variable} and {variable}_FILE are both set" in str(caught.value)


def test_a_key_set_by_the_new_and_the_old_name_is_refused(config: Path) -> None:
    with pytest.raises(ConfigError, match=r"SYNDICATION_SMTP__HOST and SYNDICATION_SMTP_HOST both set smtp\.host"):
        load_settings(config, environ={"SYNDICATION_SMTP__HOST": "a", "SYNDICATION_SMTP_HOST": "b"})


@pytest.mark.parametrize("name", ["absent", "a-folder"])
def test_a_file_that_cannot_be_read_is_refused_naming_the_variable_and_the_file(
    config: Path, tmp_path: Path, name: str
) -> None:
    (tmp_path / "a-folder").mkdir()
    variable = "SYNDICATION_SMTP__PASSWORD_FILE"
    with pytest.raises(ConfigError) as caught:
        load_settings(config, environ={variable: str(tmp_path / name)})
    assert str(caught.value).startswith(f"{variable}: cannot read {tmp_path / name}: ")


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("SYNDICATION_SMTP__PORT", "many", "SYNDICATION_SMTP__PORT (smtp.port): Input should be a valid integer"),
        ("SYNDICATION_SMTP__PORT", "70000", "SYNDICATION_SMTP__PORT (smtp.port): Input should be less than"),
        ("SYNDICATION_DIGEST__REQUIRE_APPROVAL", "perhaps", "SYNDICATION_DIGEST__REQUIRE_APPROVAL (digest.require"),
        ("SYNDICATION_DIGEST__LANGUAGES", "en,xx-notalang", "SYNDICATION_DIGEST__LANGUAGES (digest.languages): 'xx"),
        ("SYNDICATION_SCHEDULE__CADENCES", "weekly=off", "SYNDICATION_SCHEDULE__CADENCES: not a JSON object"),
        ("SYNDICATION_THEMES", '[{"slug": "Bad Slug", "name": "x"}]', "SYNDICATION_THEMES (themes[0].slug):"),
        ("SYNDICATION_SMTP__HOTS", "x", "SYNDICATION_SMTP__HOTS: names no configuration key (smtp.hots)"),
        ("SYNDICATION_SMTP", "x", "SYNDICATION_SMTP: smtp is a table: set its keys, e.g. SYNDICATION_SMTP__HOST"),
    ],
)
def test_a_bad_value_is_refused_naming_the_variable(config: Path, variable: str, value: str, expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(config, environ={variable: value})
    assert expected in str(caught.value)
    assert not str(caught.value).startswith(str(config)), "the file is not what is wrong"


def test_the_command_line_refuses_a_bad_variable_with_status_2_and_no_traceback(config: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "syndication", "--config", str(config), "config", "show"],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": os.environ["PATH"], "SYNDICATION_DELIVERY__CONNECTIONS": "lots"},
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "SYNDICATION_DELIVERY__CONNECTIONS (delivery.connections):" in result.stderr


def test_config_show_masks_secrets_and_names_where_each_value_came_from(
    config: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "password").write_text("file-secret-value\n", encoding="utf-8")
    monkeypatch.setenv("SYNDICATION_SMTP__HOST", "relay.example")
    monkeypatch.setenv("SYNDICATION_SMTP__PASSWORD_FILE", str(tmp_path / "password"))
    monkeypatch.setenv("SYNDICATION_SECRET_KEY", KEY)
    monkeypatch.setenv("SYNDICATION_DATABASE__URL", "postgresql+psycopg://news:db-password@db.internal/news")
    monkeypatch.setenv("SYNDICATION_METRICS__TOKEN", "metrics-token-long-enough")
    assert main(["--config", str(config), "config", "show"]) == 0
    shown = capsys.readouterr().out
    for secret in ("file-secret-value", KEY, "db-password", "metrics-token-long-enough"):
        assert secret not in shown
    lines = shown.splitlines()
    assert 'host = "relay.example"  # environment SYNDICATION_SMTP__HOST' in lines
    assert f'password = "****"  # file named by SYNDICATION_SMTP__PASSWORD_FILE ({tmp_path / "password"})' in lines
    assert 'secret_key = "****"  # environment SYNDICATION_SECRET_KEY' in lines
    assert 'url = "postgresql+psycopg://news:****@db.internal/news"  # environment SYNDICATION_DATABASE__URL' in lines
    assert f'reply_to = "replies@example.org"  # {config}' in lines
    assert "port = 25  # " + str(config) in lines
    assert "timeout_seconds = 30.0  # default" in lines
    assert "[bounces]" in lines and f"# themes: {config}" in lines

    assert main(["--config", str(config), "config", "show", "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    values = document["values"]
    assert values["smtp.host"] == {"value": "relay.example", "source": "environment", "from": "SYNDICATION_SMTP__HOST"}
    assert values["smtp.password"]["value"] == "****"
    assert values["smtp.password"]["source"] == "variable file"
    assert values["secret_key"]["value"] == "****"
    assert values["editors.passwords"] == {"value": {}, "source": "default", "from": None}
    assert values["smtp.port"] == {"value": 25, "source": "file", "from": str(config)}
    assert [theme["slug"] for theme in values["themes"]["value"]][:1] == ["climate-action"]


def test_config_show_masks_keys_named_as_secrets_and_keeps_their_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from syndication.core.passwords import hash_password

    config = write_config(tmp_path, f"sqlite:///{tmp_path / 'store.db'}")
    monkeypatch.setenv("SYNDICATION_EDITORS", f"lea:{hash_password('a password for lea')}")
    assert main(["--config", str(config), "config", "show", "--json"]) == 0
    values = json.loads(capsys.readouterr().out)["values"]
    assert values["editors.passwords"] == {
        "value": {"lea": "****"},
        "source": "environment",
        "from": "SYNDICATION_EDITORS",
    }
    assert values["dkim.key_file"]["value"] is None  # a path to a secret is shown (here: unset), not masked


def test_init_makes_the_signing_key_file_once_and_later_commands_read_it(
    config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key_file = tmp_path / "var" / "signing-key"
    assert main(["--config", str(config), "init"]) == 0
    assert f"signing key created in {key_file}" in capsys.readouterr().out
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    key = key_file.read_text(encoding="utf-8").strip()
    assert len(key) >= 43 and set(key) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")

    assert main(["--config", str(config), "init"]) == 0
    assert f"signing key kept in {key_file}" in capsys.readouterr().out
    assert key_file.read_text(encoding="utf-8").strip() == key
    settings = load_settings(config, environ={})
    assert signing_keys(settings) == [key]
    assert settings.origins["secret_key"] == ("key file", str(key_file))
    # The environment wins over the file.
    assert signing_keys(load_settings(config, environ={"SYNDICATION_SECRET_KEY": KEY})) == [KEY]


def test_init_makes_no_key_file_when_a_key_is_set(
    config: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SYNDICATION_SECRET_KEY", KEY)
    assert main(["--config", str(config), "init"]) == 0
    assert not (tmp_path / "var" / "signing-key").exists()


def test_a_shared_store_gets_no_key_file_and_requires_a_key(config: Path, tmp_path: Path) -> None:
    (tmp_path / "var").mkdir()
    (tmp_path / "var" / "signing-key").write_text(KEY, encoding="utf-8")  # never read for a shared store
    shared = load_settings(config, environ={"SYNDICATION_DATABASE__URL": "postgresql+psycopg://news@db.internal/news"})
    assert signing_key_path(shared) is None
    assert ensure_signing_key(shared) is None
    assert shared.secret_key is None
    with pytest.raises(ConfigError) as caught:
        signing_keys(shared)
    assert "no signing key: set SYNDICATION_SECRET_KEY" in str(caught.value)
    assert "the same for every process of this store" in str(caught.value)


def test_a_key_file_too_short_or_unreadable_is_refused_naming_it(config: Path, tmp_path: Path) -> None:
    key_file = tmp_path / "var" / "signing-key"
    key_file.parent.mkdir()
    key_file.write_text("short\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=re.escape(f"signing key file {key_file} holds fewer than 16 characters")):
        load_settings(config, environ={})
    key_file.unlink()
    key_file.mkdir()
    with pytest.raises(ConfigError, match=re.escape(f"signing key file {key_file} cannot be read")):
        load_settings(config, environ={})


def test_subscribers_add_works_after_init_in_a_clean_environment(tmp_path: Path) -> None:
    with smtp_server() as server:
        relay = server.settings()
        config = write_config(
            tmp_path, "sqlite:///var/store.db", f'[smtp]\nhost = "{relay.host}"\nport = {relay.port}\n'
        )
        environment = {"PATH": os.environ["PATH"], "HOME": str(tmp_path)}

        def syndication(*arguments: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [sys.executable, "-m", "syndication", "--config", str(config), *arguments],
                capture_output=True,
                text=True,
                timeout=120,
                env=environment,
                cwd=tmp_path,
            )

        first = syndication("init")
        assert first.returncode == 0, first.stderr
        added = syndication("subscribers", "add", "ana@example.org", "--themes", "climate-action")
        assert added.returncode == 0, added.stderr
        assert server.wait_for(1)
        assert server.received_for("ana@example.org")
