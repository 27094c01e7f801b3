"""Content chosen by language (GitHub #19): each subscriber says which languages they read and whether their digest
holds every post, theirs first, or only theirs; the site sets the default.

The rule (``core.digest`` with ``core.languages.Reading``) on built posts; then whole editions sent through a real
SMTP server on SQLite and PostgreSQL; then the preference centre over real HTTP.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pydantic import SecretStr

from syndication.app.service import Service
from syndication.app.subscribers import (
    SubscriberError,
    add_subscriber,
    change_preferences,
    check_reads,
    reading_of,
    subscriber_token,
)
from syndication.config import Settings
from syndication.core.digest import Digest, compose_digest
from syndication.core.languages import Reading, reading
from syndication.core.models import Consent, Post, Subscriber, Theme
from syndication.store import database
from syndication.store import subscribers as subscriber_store
from tests.smtp_server import SmtpTestServer, smtp_server
from tests.support import NOW, post_record
from tests.test_late_posts import add_posts, send, texts_for
from tests.web_site import WebSite, form_post, web_site

SINCE = datetime(2024, 5, 1, tzinfo=UTC)
UNTIL = datetime(2024, 6, 1, tzinfo=UTC)
THEMES = (Theme("climate-action", "Climate action"), Theme("resilience", "Resilience"))
# One post a day, newest last: (language, theme).
LANGUAGES = ("es", "ko", "pt-BR", "en", "es-MX", "ar", "pt", "es")


def built_posts() -> list[Post]:
    posts = []
    for day, language in enumerate(LANGUAGES, start=1):
        moment = SINCE + timedelta(days=day)
        posts.append(
            Post(
                guid=f"urn:post:{day}",
                title=f"{language} post {day}",
                url=f"https://example.org/{day}",
                summary="",
                content_html="<p>x</p>",
                published=moment,
                updated=moment,
                language=language,
                themes=(THEMES[day % 2].slug,),
            )
        )
    return posts


def languages_of(digest: Digest | None) -> list[list[str]]:
    """Each section's posts' languages, in the order shown."""
    assert digest is not None
    return [[item.post.language for item in section.items] for section in digest.sections]


def test_only_keeps_the_readers_languages_and_matches_regional_tags() -> None:
    digest = compose_digest(built_posts(), THEMES, since=SINCE, until=UNTIL, reading=Reading(("es",), "only"))
    assert languages_of(digest) == [["es"], ["es-MX", "es"]]  # es-MX is Spanish; newest first
    both = compose_digest(built_posts(), THEMES, since=SINCE, until=UNTIL, reading=Reading(("pt", "ko"), "only"))
    assert sorted(lang for section in languages_of(both) for lang in section) == ["ko", "pt", "pt-BR"]
    assert compose_digest(built_posts(), THEMES, since=SINCE, until=UNTIL, reading=Reading(("de",), "only")) is None


def test_first_puts_the_readers_posts_first_in_each_section_each_part_newest_first() -> None:
    digest = compose_digest(built_posts(), THEMES, since=SINCE, until=UNTIL, reading=Reading(("es",), "first"))
    # climate-action holds the even days (ko, en, ar, es), resilience the odd ones (es, pt-BR, es-MX, pt).
    everything = compose_digest(built_posts(), THEMES, since=SINCE, until=UNTIL)
    assert languages_of(everything) == [["es", "ar", "en", "ko"], ["pt", "es-MX", "pt-BR", "es"]]
    assert languages_of(digest) == [["es", "ar", "en", "ko"], ["es-MX", "es", "pt", "pt-BR"]]
    capped = compose_digest(
        built_posts(), THEMES, since=SINCE, until=UNTIL, section_cap=2, reading=Reading(("es",), "first")
    )
    assert capped is not None and languages_of(capped)[1] == ["es-MX", "es"]  # the cap leaves the others out
    assert capped.sections[1].more == 2


def test_all_and_no_language_give_no_reading_so_such_readers_share_one_digest() -> None:
    assert reading(["es"], "all") is None
    assert reading([], "only") is None
    assert reading(["pt_br", "PT-BR", "es"], "first") == Reading(("pt-BR", "es"), "first")
    with pytest.raises(ValueError, match="unknown language choice"):
        Reading(("es",), "some")


def test_the_languages_a_subscriber_reads_are_checked_and_named_when_refused() -> None:
    assert check_reads(["pt_br", "es, fr", "es"]) == ("pt-BR", "es", "fr")
    with pytest.raises(SubscriberError, match="'español' is not a language tag"):
        check_reads(["es", "español"])


# --- Editions sent through a real SMTP server -----------------------------------------------------------------

WEEK = timedelta(days=7)
WINDOW = (NOW - WEEK, NOW)
TITLES = {"es": "Plan de acción climática", "ko": "기후 행동 계획", "pt": "Plano de ação climática",
          "en": "Climate action plan"}  # fmt: skip


@pytest.fixture
def server() -> Iterator[SmtpTestServer]:
    with smtp_server() as running:
        yield running


@pytest.fixture
def posted(service: Service, tmp_path: Path) -> Service:
    """One post in each of four languages in the last week, the Spanish one oldest; digests in four languages."""
    settings = service.settings
    digest = settings.digest.model_copy(update={"languages": ("en", "es", "fr", "pt")})
    service = Service(settings.model_copy(update={"digest": digest, "secret_key": SecretStr("k" * 40)}),
                      service.engine, service.clock)  # fmt: skip
    records = [
        post_record(number, title=title, language=language, published=f"2024-05-{26 + number:02d}T10:00:00Z")
        for number, (language, title) in enumerate(TITLES.items())
    ]
    add_posts(service, tmp_path, *records)
    return service


def subscribe(service: Service, address: str, language: str, reads: list[str], choice: str) -> None:
    """Add a reader, then make their choice as the preference centre does (through their signed link)."""
    subscriber = add_subscriber(service, address, cadence="weekly", language=language, confirmed=True).subscriber
    token = subscriber_token(service, "preferences", subscriber)
    change_preferences(
        service, token, themes=[], cadence="weekly", language=language, reads=reads, language_choice=choice
    )


def listed_titles(text: str) -> list[str]:
    """The post titles of a digest's text part, in order."""
    return [title for title in re.findall(r"^\* (.+)$", text, re.MULTILINE) if title in TITLES.values()]


def test_each_reader_gets_the_posts_of_their_languages_as_they_chose(posted: Service, server: SmtpTestServer) -> None:
    subscribe(posted, "only-es@example.org", "es", [], "only")
    subscribe(posted, "first-es@example.org", "es", [], "first")
    subscribe(posted, "pt-ko@example.org", "pt", ["ko"], "only")
    subscribe(posted, "site@example.org", "es", [], "default")  # the site's default: every post
    plan = send(posted, server, WINDOW)
    assert plan.recipients == 4 and plan.nothing_new == 0
    newest_first = [TITLES[language] for language in ("en", "pt", "ko", "es")]
    [only_es] = texts_for(server, "only-es@example.org")
    assert listed_titles(only_es) == [TITLES["es"]]
    [first_es] = texts_for(server, "first-es@example.org")
    assert listed_titles(first_es) == [TITLES["es"], *newest_first[:3]]
    [pt_ko] = texts_for(server, "pt-ko@example.org")
    assert listed_titles(pt_ko) == [TITLES["pt"], TITLES["ko"]]
    [everything] = texts_for(server, "site@example.org")
    assert listed_titles(everything) == newest_first


def test_a_reader_with_nothing_in_their_languages_gets_no_digest(posted: Service, server: SmtpTestServer) -> None:
    subscribe(posted, "fr@example.org", "fr", ["de"], "only")
    subscribe(posted, "en@example.org", "en", [], "only")
    plan = send(posted, server, WINDOW)
    assert plan.recipients == 2 and plan.nothing_new == 1
    assert not server.received_for("fr@example.org")
    assert listed_titles(texts_for(server, "en@example.org")[0]) == [TITLES["en"]]


def test_the_site_default_reaches_every_reader_who_did_not_choose(settings: Settings) -> None:
    subscriber = reader(language="es", reads=("pt",), choice=None)
    assert reading_of(settings, subscriber) is None  # the shipped default is "all"
    strict = settings.model_copy(update={"digest": settings.digest.model_copy(update={"language_choice": "only"})})
    assert reading_of(strict, subscriber) == Reading(("es", "pt"), "only")
    chose = reader(language="es", reads=(), choice="all")
    assert reading_of(strict, chose) is None


def reader(language: str, reads: tuple[str, ...], choice: str | None) -> Subscriber:
    """A subscriber as the store gives them, reading ``language`` and ``reads``, who chose ``choice``."""
    return Subscriber(
        id=1, email="a@example.org", name="", language=language, themes=None, cadence="weekly", status="active",
        consent=Consent(NOW, "cli"), created_at=NOW, reads=reads, language_choice=choice,
    )  # fmt: skip


# --- The preference centre ------------------------------------------------------------------------------------


@pytest.fixture
def site(tmp_path: Path, database_url: str) -> Iterator[WebSite]:
    with web_site(tmp_path, database_url, extra='[digest]\nlanguages = ["en", "es", "fr", "pt"]') as running:
        yield running


def test_the_preference_centre_saves_the_languages_read_and_the_choice(site: WebSite) -> None:
    kim = add_subscriber(site.service, "kim@example.org", language="es", confirmed=True).subscriber
    path = f"/preferences/{subscriber_token(site.service, 'preferences', kim)}"
    with site.client() as client:
        page = client.get(path)
        assert page.status_code == 200 and '<html lang="es">' in page.text
        assert re.search(r'value="default" id="language-choice-default"\s+checked>', page.text)
        assert 'lang="pt">Português</label>' in page.text  # each language named in itself
        chosen: dict[str, str | list[str]] = {
            "themes": [],
            "cadence": "weekly",
            "language": "es",
            "language_choice": "only",
            "reads": ["pt"],
        }
        saved = form_post(client, path, chosen, page.text)
        assert saved.status_code == 200 and 'role="status"' in saved.text
        assert re.search(r'value="only" id="language-choice-only"\s+checked>', saved.text)
        assert re.search(r'value="pt" id="reads-pt" checked>', saved.text)
        bad = form_post(client, path, {**chosen, "reads": ["pt", "<b>x</b>"]}, page.text)
        assert bad.status_code == 400 and "&lt;b&gt;x&lt;/b&gt;" in bad.text and "<b>x</b>" not in bad.text
        unknown = form_post(client, path, {**chosen, "language_choice": "most"}, page.text)
        assert unknown.status_code == 400
    with database.transaction(site.service.engine) as session:
        stored = subscriber_store.subscriber_by_email(session, "kim@example.org")
    assert stored is not None and (stored.reads, stored.language_choice) == (("pt",), "only")
    assert reading_of(site.service.settings, stored) == Reading(("es", "pt"), "only")
