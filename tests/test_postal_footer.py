"""The sender's name, postal address and the reason the reader gets the email, in both parts of every email."""

from __future__ import annotations

import email
import email.policy
from collections.abc import Iterator
from datetime import timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest

from syndication.app.digests import preview_digest, preview_links
from syndication.app.gathering import import_file
from syndication.app.notices import NoticeRenderer
from syndication.app.service import Service, init_store
from syndication.clock import fixed_clock
from syndication.config import load_settings
from syndication.errors import ConfigError
from syndication.mailing.render import Links, RenderedEmail
from tests.support import NOW, post_record, write_config, write_jsonl

ORGANISATION = "Green Cities Network e.V."
STREET, TOWN = "Hauptstraße 1", "10115 Berlin, Germany"
LINKS = Links(
    unsubscribe="https://news.example.org/unsubscribe/t",
    preferences="https://news.example.org/preferences/t",
    view_online="https://news.example.org/view/t",
)
NOTICES: dict[str, dict[str, Any]] = {
    "preferences": {"summary": "Weekly: Climate action"},
    "approval": {"cadence": "weekly", "since": "1 May", "until": "8 May", "recipients": 3,
                 "preview_url": "https://news.example.org/editions/1",
                 "approve_command": "syndication editions approve 1"},
    "paused": {"cadence": "weekly", "since": "1 May", "until": "8 May", "reason": "550 relay refused",
               "edition_url": "https://news.example.org/editions/1", "resume_command": "syndication editions resume 1"},
}  # fmt: skip
REASONS = {
    ("digest", "en"): "You receive this email because you subscribed to Test Network.",
    ("digest", "es"): "Recibes este correo porque te suscribiste a Test Network.",
    ("confirm", "en"): "You receive this email because this address was entered in our subscription form.",
    ("preferences", "en"): "You receive this email because you subscribed to Test Network.",
    ("approval", "en"): "You receive this email because you are an editor of this site.",
    ("paused", "en"): "You receive this email because you are an editor of this site.",
}


def _with_site(path: Path, lines: str) -> Path:
    path.write_text(path.read_text(encoding="utf-8").replace("[site]\n", f"[site]\n{lines}", 1), encoding="utf-8")
    return path


@pytest.fixture
def postal(tmp_path: Path, database_url: str) -> Iterator[Service]:
    site = f'organisation = "{ORGANISATION}"\npostal_address = """\n{STREET}\n  {TOWN}\n"""\n'
    extra = '[digest]\nlanguages = ["en", "es"]\n'
    settings = load_settings(_with_site(write_config(tmp_path, database_url, extra), site), environ={})
    init_store(settings)
    service = Service.open(settings, fixed_clock(NOW))
    records = [post_record(1, published="2024-05-20T10:00:00Z", title="Karachi's heat plan")]
    import_file(service, write_jsonl(tmp_path / "posts.jsonl", records))
    yield service
    service.engine.dispose()


def _parts(message: bytes) -> tuple[str, str]:
    parsed = email.message_from_bytes(message, policy=email.policy.default)
    assert isinstance(parsed, EmailMessage)
    text, html = parsed.get_body(("plain",)), parsed.get_body(("html",))
    assert text is not None and html is not None
    return text.get_content().replace("\r\n", "\n"), html.get_content().replace("\r\n", "\n")


def _assert_footer(text: str, html: str, reason: str) -> None:
    for part in (text, html):
        assert ORGANISATION in part
        assert STREET in part and TOWN in part
        assert reason in part
    # Shown as given, a line each: the text part has the lines on their own, the HTML breaks them.
    assert f"\n{ORGANISATION}\n{STREET}\n{TOWN}\n" in text
    assert f"{ORGANISATION}<br>{STREET}<br>{TOWN}" in html


def test_the_settings_read_the_organisation_and_the_lines_of_the_address(postal: Service) -> None:
    site = postal.settings.site
    assert site.sender_name == ORGANISATION
    assert site.postal_lines == (STREET, TOWN)


@pytest.mark.parametrize("language", ["en", "es"])
def test_both_parts_of_a_digest_show_the_sender_the_reason_and_the_unsubscribe_link(
    postal: Service, language: str
) -> None:
    preview = preview_digest(postal, since=NOW - timedelta(days=30), until=NOW, language=language)
    assert preview is not None
    text, html = _parts(preview.message)
    _assert_footer(text, html, REASONS["digest", language])
    unsubscribe = preview_links(postal.settings).unsubscribe
    assert unsubscribe in text and unsubscribe in html


def test_both_parts_of_every_notice_show_the_sender_and_the_reason(postal: Service) -> None:
    renderer = NoticeRenderer(postal)
    confirm, links = renderer.link_notice("en", "https://news.example.org/confirm/t")
    rendered: dict[str, RenderedEmail] = {"confirm": confirm.personalised(links)}
    for name, context in NOTICES.items():
        rendered[name] = renderer.render(name, "en", context, LINKS)
    for name, notice in rendered.items():
        _assert_footer(notice.text, notice.html, REASONS[name, "en"])
        assert not notice.problems, name
    # The preferences notice goes to a subscriber: its unsubscribe link is in both parts.
    assert LINKS.unsubscribe in rendered["preferences"].text and LINKS.unsubscribe in rendered["preferences"].html


def test_without_the_settings_the_footer_has_the_reason_and_no_address(service: Service, tmp_path: Path) -> None:
    import_file(service, write_jsonl(tmp_path / "posts.jsonl", [post_record(1, published="2024-05-20T10:00:00Z")]))
    preview = preview_digest(service, since=NOW - timedelta(days=30), until=NOW)
    assert preview is not None
    text, html = _parts(preview.message)
    assert REASONS["digest", "en"] in text and REASONS["digest", "en"] in html
    assert 'class="sender"' not in html


def test_only_the_organisation_shows_it_with_no_address(tmp_path: Path) -> None:
    settings = load_settings(_with_site(write_config(tmp_path, "sqlite://"), 'organisation = "Org"\n'), environ={})
    assert settings.site.sender_name == "Org" and settings.site.postal_lines == ()
    untitled = load_settings(_with_site(write_config(tmp_path, "sqlite://"), 'postal_address = "1 Road"\n'), {})
    assert untitled.site.sender_name == "Test Network" and untitled.site.postal_lines == ("1 Road",)


def test_an_organisation_on_two_lines_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"site\.organisation: must be on one line"):
        load_settings(_with_site(write_config(tmp_path, "sqlite://"), 'organisation = "A\\nB"\n'), environ={})
