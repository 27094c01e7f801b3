"""Settings: the shipped file loads, wrong files are refused with one clear message, the environment overrides."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from syndication.config import JsonlSourceSettings, config_path_from, describe_keys, load_settings
from syndication.errors import ConfigError
from tests.support import FIXTURE_THEMES, write_config

ROOT = Path(__file__).resolve().parent.parent


def test_shipped_config_loads_with_themes_in_order() -> None:
    settings = load_settings(ROOT / "config.toml", environ={})
    slugs = [theme.slug for theme in settings.themes]
    assert slugs[:3] == ["climate-action", "resilience", "circular-economy"]
    assert len(slugs) == len(set(slugs)) >= 5
    assert settings.site.base_url.startswith("http")
    assert settings.database.url.endswith("/var/syndication.db")
    assert Path(settings.database.url.removeprefix("sqlite:///")).is_absolute()


def _refusal(tmp_path: Path, body: str) -> str:
    path = tmp_path / "config.toml"
    path.write_text(body, encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_settings(path, environ={})
    message = str(caught.value)
    assert message.startswith(f"{path}: ")
    return message


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ('[site]\ntitel = "x"\n', "site.titel: unknown key"),
        ('[smtp]\nport = "many"\n', "smtp.port:"),
        ("[smtp]\nport = 70000\n", "smtp.port:"),
        ('[site]\nbase_url = "not a url"\n', "site.base_url: 'not a url' is not an absolute http(s) URL"),
        ('[site]\nbase_url = "ftp://example.org"\n', "site.base_url:"),
        ('[site]\ntimezone = "Mars/Olympus"\n', "site.timezone: 'Mars/Olympus' is not an IANA time zone"),
        ('[database]\nurl = "::::"\n', "database.url: '::::' is not a valid SQLAlchemy database URL"),
        ('[database]\nurl = "mysql://localhost/x"\n', "database.url:"),
        ('[[themes]]\nname = "No slug"\n', "themes[0].slug: Field required"),
        ('[[themes]]\nslug = "Bad Slug"\nname = "x"\n', "themes[0].slug:"),
        (
            '[[themes]]\nslug = "a"\nname = "A"\n[[themes]]\nslug = "a"\nname = "B"\n',
            "themes[1].slug: 'a' is used twice",
        ),
        ('[[sources]]\nname = "x"\nkind = "carrier-pigeon"\n', "sources[0]: unknown kind"),
        ('[[sources]]\nname = "x"\nkind = "jsonl"\n', "sources[0].path: Field required"),
        ('[[sources]]\nname = "x"\nkind = "feed"\n', "exactly one of 'url' or 'path'"),
        ('secret_key = "in-the-file"\n', "secret_key: not a configuration key"),
        ("[site\n", "not valid TOML"),
        ("[digest]\nlanguages = []\n", "digest: languages is empty"),
        ('[digest]\ntemplates_dir = "no-such-folder"\n', "no-such-folder is not a folder"),
        ('[digest]\nlanguages = ["es"]\n', "leave out the site's language 'en'"),
    ],
)
def test_wrong_file_is_refused_naming_the_key(tmp_path: Path, body: str, expected: str) -> None:
    assert expected in _refusal(tmp_path, body)


def test_missing_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such configuration file"):
        load_settings(tmp_path / "absent.toml", environ={})


def test_environment_overrides_file(tmp_path: Path) -> None:
    path = write_config(tmp_path, "sqlite:///from-file.db", '[smtp]\nhost = "file-host"\nport = 25\n')
    settings = load_settings(
        path,
        environ={
            "SYNDICATION_DATABASE_URL": "postgresql+psycopg://u@db.example/prod",
            "SYNDICATION_SMTP_HOST": "relay.example",
            "SYNDICATION_SMTP_PORT": "587",
            "SYNDICATION_SMTP_USERNAME": "mailer",
            "SYNDICATION_SMTP_PASSWORD": "s3cret",
            "SYNDICATION_SECRET_KEY": "k" * 32,
        },
    )
    assert settings.database.url == "postgresql+psycopg://u@db.example/prod"
    assert (settings.smtp.host, settings.smtp.port, settings.smtp.username) == (
        "relay.example",
        587,
        "mailer",
    )
    assert settings.smtp.password is not None and settings.smtp.password.get_secret_value() == "s3cret"
    assert settings.secret_key is not None and settings.secret_key.get_secret_value() == "k" * 32
    assert "s3cret" not in repr(settings)


def test_bad_environment_value_is_refused(tmp_path: Path) -> None:
    path = write_config(tmp_path, "sqlite:///x.db")
    with pytest.raises(ConfigError, match=r"smtp\.port"):
        load_settings(path, environ={"SYNDICATION_SMTP_PORT": "twenty-five"})


def test_relative_paths_are_taken_from_the_config_folder(tmp_path: Path) -> None:
    path = write_config(
        tmp_path, "sqlite:///var/store.db", '[[sources]]\nname = "n"\nkind = "jsonl"\npath = "in.jsonl"\n'
    )
    settings = load_settings(path, environ={})
    assert settings.database.url == f"sqlite:///{tmp_path / 'var' / 'store.db'}"
    assert isinstance(settings.sources[0], JsonlSourceSettings)
    assert settings.sources[0].path == tmp_path / "in.jsonl"


def test_config_path_precedence() -> None:
    assert config_path_from("a.toml", {"SYNDICATION_CONFIG": "b.toml"}) == Path("a.toml")
    assert config_path_from(None, {"SYNDICATION_CONFIG": "b.toml"}) == Path("b.toml")
    assert config_path_from(None, {}) == Path("config.toml")


def test_theme_aliases_may_not_be_shared(tmp_path: Path) -> None:
    body = FIXTURE_THEMES + '\n[[themes]]\nslug = "other"\nname = "Other"\naliases = ["climate"]\n'
    assert "alias 'climate' belongs to both 'climate-action' and 'other'" in _refusal(tmp_path, body)


def test_every_key_is_documented() -> None:
    docs = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    documented = {key for key in re.findall(r"^\| `([^`]+)` \|", docs, flags=re.MULTILINE) if "." in key}
    declared = {key for key, *_ in describe_keys()}
    assert declared - documented == set(), "keys missing from docs/configuration.md"
    assert documented - declared == set(), "docs/configuration.md documents keys that do not exist"


def test_command_line_refuses_wrong_file_with_status_2_and_no_traceback(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text('[site]\nbase_url = "nope"\n[smtp]\nportt = 1\n', encoding="utf-8")
    result = subprocess.run(
        [sys.executable, "-m", "syndication", "--config", str(path), "themes", "list"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert str(path) in result.stderr
    assert "site.base_url" in result.stderr and "smtp.portt: unknown key" in result.stderr


def test_the_old_mail_bounce_address_is_read_as_the_bounce_address(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text('[mail]\nbounce_address = "Bounces@News.example.org"\n', encoding="utf-8")
    assert load_settings(config).bounces.address == "bounces@news.example.org"
    config.write_text(
        '[mail]\nbounce_address = "a@news.example.org"\n[bounces]\naddress = "b@news.example.org"\n', encoding="utf-8"
    )
    with pytest.raises(ConfigError, match=r"mail\.bounce_address and bounces\.address differ"):
        load_settings(config)


# [digest]: what the configuration accepts must not fail at sending (issue #16).


def test_a_language_babel_does_not_know_is_refused_naming_it(tmp_path: Path) -> None:
    message = _refusal(tmp_path, '[digest]\nlanguages = ["en", "xx-notalang"]\n')
    assert "digest.languages: 'xx-notalang' is not a language Babel knows" in message


def test_a_language_without_a_catalog_is_accepted_when_babel_knows_it(tmp_path: Path) -> None:
    # No German catalog is shipped: German readers get the English wording, with German dates and numbers.
    path = tmp_path / "config.toml"
    path.write_text('[digest]\nlanguages = ["en", "de", "es-MX"]\n', encoding="utf-8")
    assert load_settings(path, environ={}).digest.languages == ("en", "de", "es-MX")


def test_the_shipped_config_names_its_themes_and_regions_in_each_of_its_languages() -> None:
    settings = load_settings(ROOT / "config.toml", environ={})
    assert settings.digest.languages == ("en", "es", "fr", "pt")
    for slug, names in [(item.slug, item.names) for item in settings.theme_list + settings.region_list]:
        assert {language for language, _ in names} == {"es", "fr", "pt"}, slug
    climate = settings.theme_list[0]
    assert (climate.name_in("en"), climate.name_in("fr"), climate.name_in("pt-BR")) == (
        "Climate action",
        "Action climatique",
        "Ação climática",
    )


def test_a_template_override_jinja_cannot_parse_is_refused_with_its_file_and_line(tmp_path: Path) -> None:
    templates = tmp_path / "mine"
    templates.mkdir()
    (templates / "digest.txt").write_text("{{ digest.title }}\n", encoding="utf-8")  # fine: it parses
    (templates / "digest.html").write_text(
        '{% extends "base.html" %}\n{% block body %}\n{% if digest %}\n{% endblock %}\n', encoding="utf-8"
    )
    message = _refusal(tmp_path, '[digest]\ntemplates_dir = "mine"\n')
    assert f"digest.templates_dir: {templates / 'digest.html'}, line 4:" in message


def test_template_overrides_that_parse_are_accepted(tmp_path: Path) -> None:
    templates = tmp_path / "mine"
    templates.mkdir()
    # The shipped digest.html, i18n tags and all, and a file the renderer never loads (not parsed).
    shipped = ROOT / "templates" / "email" / "digest.html"
    (templates / "digest.html").write_text(shipped.read_text(encoding="utf-8"), encoding="utf-8")
    (templates / "README.md").write_text("{% not a template\n", encoding="utf-8")
    path = tmp_path / "config.toml"
    path.write_text('[digest]\ntemplates_dir = "mine"\n', encoding="utf-8")
    assert load_settings(path, environ={}).digest.templates_dir == templates.resolve()


def test_a_cadence_crontab_that_cannot_fire_is_refused(tmp_path: Path) -> None:
    message = _refusal(tmp_path, '[schedule.cadences]\nweekly = "0 8 * * funday"\n')
    assert "schedule.cadences:" in message


_DKIM = '[dkim]\ndomain = "news.example.org"\nselector = "rsa2024"\nkey_file = "/keys/rsa.pem"\n'


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            _DKIM + 'ed25519_selector = "ed2024"\n',
            "dkim: ed25519_selector is set but ed25519_key_file is not",
        ),
        (
            _DKIM + 'ed25519_key_file = "/keys/ed25519.pem"\n',
            "dkim: ed25519_key_file /keys/ed25519.pem is set but ed25519_selector is not",
        ),
        (
            '[dkim]\ned25519_selector = "ed2024"\ned25519_key_file = "/keys/ed25519.pem"\n',
            "dkim: ed25519_selector is set but domain is not",
        ),
        (
            _DKIM + 'ed25519_selector = "rsa2024"\ned25519_key_file = "/keys/ed25519.pem"\n',
            "dkim: ed25519_selector 'rsa2024' is the RSA selector too",
        ),
        (_DKIM + "ed25519_key_file = 7\n", "dkim.ed25519_key_file:"),
    ],
)
def test_half_an_ed25519_dkim_key_is_refused_naming_the_setting(tmp_path: Path, body: str, expected: str) -> None:
    assert expected in _refusal(tmp_path, body)


def test_an_ed25519_dkim_key_beside_the_rsa_one_loads(tmp_path: Path) -> None:
    body = _DKIM + 'ed25519_selector = "ed2024"\ned25519_key_file = "/keys/ed25519.pem"\n'
    path = tmp_path / "config.toml"
    path.write_text(body, encoding="utf-8")
    dkim = load_settings(path, environ={}).dkim
    assert (dkim.selector, dkim.ed25519_selector, dkim.ed25519_key_file) == (
        "rsa2024",
        "ed2024",
        Path("/keys/ed25519.pem"),
    )
