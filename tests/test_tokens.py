"""Signed links: round trips, URL safety, forgery, expiry, purposes that do not mix, key rotation, the keys' config."""

from __future__ import annotations

import base64
import re
from datetime import timedelta
from pathlib import Path

import pytest

from syndication.config import load_settings, signing_keys
from syndication.core.tokens import PURPOSES, make_token, read_token
from syndication.errors import ConfigError, TokenError
from tests.support import NOW, write_config

KEY = "current-key-0123456789abcdef"
OLD = "retired-key-0123456789abcdef"
OTHER = "someone-elses-key-0123456789"
URL_SAFE = re.compile(r"[A-Za-z0-9._-]+")


@pytest.mark.parametrize("purpose", PURPOSES)
def test_a_token_gives_back_its_subject(purpose: str) -> None:
    for subject in ("1", "42:0a1b2c3d4e5f", "7:1234", "edition 9 / subscriber ü"):
        token = make_token([KEY], purpose, subject, now=NOW)
        assert URL_SAFE.fullmatch(token), token
        assert read_token([KEY], purpose, token, now=NOW) == subject


@pytest.mark.parametrize("made_for", PURPOSES)
def test_a_token_is_refused_for_every_other_purpose(made_for: str) -> None:
    token = make_token([KEY], made_for, "42", now=NOW)
    for purpose in PURPOSES:
        if purpose == made_for:
            continue
        with pytest.raises(TokenError, match=f"this {purpose} link is not valid"):
            read_token([KEY], purpose, token, now=NOW)


def test_forged_and_altered_tokens_are_refused() -> None:
    token = make_token([KEY], "unsubscribe", "42", now=NOW)
    payload, timestamp, signature = token.split(".")
    other_payload = base64.urlsafe_b64encode(b'"43"').rstrip(b"=").decode()
    flipped = signature[:-1] + ("A" if signature[-1] != "A" else "B")
    forgeries = [
        f"{other_payload}.{timestamp}.{signature}",  # someone else's id under this signature
        f"{payload}.{timestamp}.{flipped}",
        f"{payload}.{timestamp}",
        make_token([OTHER], "unsubscribe", "42", now=NOW),  # signed with a key we do not hold
        "42",
        "",
        "not.a.token",
    ]
    for forged in forgeries:
        with pytest.raises(TokenError):
            read_token([KEY], "unsubscribe", forged, now=NOW)


def test_tokens_cannot_be_guessed_from_an_id() -> None:
    first, second = (make_token([KEY], "unsubscribe", subject, now=NOW) for subject in ("41", "42"))
    assert first.split(".")[2] != second.split(".")[2]
    assert make_token([OTHER], "unsubscribe", "42", now=NOW) != second


def test_confirmation_links_expire_after_seven_days() -> None:
    token = make_token([KEY], "confirm", "42", now=NOW)
    week = timedelta(days=7)
    assert read_token([KEY], "confirm", token, now=NOW + week) == "42"
    with pytest.raises(TokenError, match="expired"):
        read_token([KEY], "confirm", token, now=NOW + week + timedelta(seconds=1))


def test_unsubscribe_and_preferences_links_do_not_expire_unless_asked() -> None:
    later = NOW + timedelta(days=5 * 365)
    for purpose in ("unsubscribe", "preferences"):
        token = make_token([KEY], purpose, "42", now=NOW)
        assert read_token([KEY], purpose, token, now=later) == "42"
        with pytest.raises(TokenError, match="expired"):
            read_token([KEY], purpose, token, max_age_seconds=3600, now=NOW + timedelta(hours=2))


def test_a_retired_key_still_reads_and_the_current_one_signs() -> None:
    old_token = make_token([OLD], "unsubscribe", "42", now=NOW)
    rotated = [KEY, OLD]
    assert read_token(rotated, "unsubscribe", old_token, now=NOW) == "42"
    new_token = make_token(rotated, "unsubscribe", "42", now=NOW)
    assert read_token([KEY], "unsubscribe", new_token, now=NOW) == "42"
    with pytest.raises(TokenError):
        read_token([OLD], "unsubscribe", new_token, now=NOW)
    # Once the old key is dropped, its links stop working.
    with pytest.raises(TokenError):
        read_token([KEY], "unsubscribe", old_token, now=NOW)


def test_unknown_purposes_and_empty_subjects_are_programming_errors() -> None:
    with pytest.raises(ValueError, match="unknown token purpose"):
        make_token([KEY], "login", "42")
    with pytest.raises(ValueError, match="unknown token purpose"):
        read_token([KEY], "login", "x")
    with pytest.raises(ValueError, match="subject"):
        make_token([KEY], "view", "")


def test_signing_keys_come_from_the_environment_only(tmp_path: Path) -> None:
    path = write_config(tmp_path, "sqlite:///x.db")
    environ = {"SYNDICATION_SECRET_KEY": KEY, "SYNDICATION_OLD_SECRET_KEYS": f" {OLD} , ,{OTHER},"}
    settings = load_settings(path, environ)
    assert signing_keys(settings) == [KEY, OLD, OTHER]
    assert OLD not in repr(settings) and KEY not in repr(settings)
    assert signing_keys(load_settings(path, {"SYNDICATION_SECRET_KEY": KEY})) == [KEY]

    with pytest.raises(ConfigError, match="set SYNDICATION_SECRET_KEY"):
        signing_keys(load_settings(path, {"SYNDICATION_OLD_SECRET_KEYS": OLD}))
    with pytest.raises(ConfigError, match="too short"):
        signing_keys(load_settings(path, {"SYNDICATION_SECRET_KEY": "short"}))
    with pytest.raises(ConfigError, match="SYNDICATION_OLD_SECRET_KEYS"):
        signing_keys(load_settings(path, {"SYNDICATION_SECRET_KEY": KEY, "SYNDICATION_OLD_SECRET_KEYS": "short"}))

    path.write_text('old_secret_keys = ["in-the-file"]\n' + path.read_text(encoding="utf-8"), encoding="utf-8")
    with pytest.raises(ConfigError, match="old_secret_keys: not a configuration key"):
        load_settings(path, {})
