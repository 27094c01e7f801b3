"""Every email in the reader's language (issue 19): the shipped catalogs translate every word the templates show,
no word of a template escapes translation, a Spanish, French or Portuguese digest and notice hold no English,
and themes and regions are named in the reader's language, falling back as documented; ``check-config`` reports
the names left out.

The rule for "marked for translation" (``untranslated_text``), over Jinja2's own lexer so that it sees a template
as the renderer does: every letter a template shows is inside a ``{% trans %}`` block or a gettext call. What is
left of the template's text once the ``trans`` blocks are taken out, each ``{{ ... }}`` and ``{% ... %}`` replaced
by a neutral mark, HTML comments and ``<style>`` blocks dropped, the values of the attributes readers see (``alt``,
``title``, ``aria-label``, ``placeholder``) kept, every other tag and every character reference dropped, holds no
letter; and no ``{{ ... }}`` begins with a string literal that holds one (``{{ "Hello" }}``). String literals
elsewhere in expressions are code (``map("name")``, ``"base.html"``), not text. ``styles.css`` is a stylesheet.
"""

from __future__ import annotations

import configparser
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from babel.messages.catalog import Catalog, Message
from babel.messages.extract import extract_from_dir
from babel.messages.pofile import read_po
from jinja2 import Environment
from lxml import html as lxml_html

from syndication.app.mailcheck import language_warnings
from syndication.app.notices import preferences_summary
from syndication.cli import main
from syndication.config import Settings, load_settings, settings_from_mapping, untranslated_names
from syndication.core.digest import Digest, compose_digest
from syndication.core.models import Consent, Post, Region, Subscriber, Theme
from syndication.feeds.catalog import FeedDocument, Site, feeds_of
from syndication.feeds.rss_atom import render_atom
from syndication.mailing.render import EMAILS, LOCALES, SHIPPED_TEMPLATES, MailRenderer, RenderedEmail

ROOT = Path(__file__).resolve().parent.parent
SHIPPED_LANGUAGES = ("en", "es", "fr", "pt")
# Each catalog's plural rule, as gettext writes it. French counts 0 as singular; Portuguese is one catalog for
# Brazil and Portugal, which differ only at 0 (no email shows a count of 0: an empty digest is not sent).
PLURAL_FORMS = {"en": "(n != 1)", "es": "(n != 1)", "fr": "(n > 1)", "pt": "(n != 1)"}
SINCE = datetime(2024, 5, 1, tzinfo=UTC)
UNTIL = SINCE + timedelta(days=7)

THEMES_TOML = [
    {"slug": "climate-action", "name": "Climate action",
     "names": {"es": "Acción climática", "fr": "Action climatique", "pt": "Ação climática"}},
    {"slug": "resilience", "name": "Resilience",
     "names": {"es": "Resiliencia", "fr": "Résilience", "pt": "Resiliência"}},
    {"slug": "circular-economy", "name": "Circular economy",
     "names": {"es": "Economía circular", "fr": "Économie circulaire", "pt": "Economia circular"}},
    {"slug": "sustainable-mobility", "name": "Sustainable mobility",
     "names": {"es": "Movilidad sostenible", "fr": "Mobilité durable", "pt": "Mobilidade sustentável"}},
]  # fmt: skip


def make_settings(**digest: Any) -> Settings:
    """Settings of a site written in English, its themes named in es, fr and pt, emails in every shipped language."""
    raw: dict[str, Any] = {
        "site": {"title": "Test Network", "base_url": "https://news.example.org", "timezone": "Europe/Berlin",
                 "organisation": "Test Network e.V.", "postal_address": "Hauptstraße 1\n10115 Berlin"},
        "database": {"url": "sqlite:///:memory:"},
        "themes": THEMES_TOML,
        "regions": [{"slug": "europe", "name": "Europe", "names": {"es": "Europa", "fr": "Europe", "pt": "Europa"}}],
        "digest": {"languages": ["en", "es", "fr", "pt", "pt-BR"], "section_cap": 2, **digest},
    }  # fmt: skip
    return settings_from_mapping(raw, ROOT / "config.toml", environ={})


# --- The rule: every word a template shows is marked for translation ------------------------------------------

_SEEN_ATTRIBUTES = re.compile(r"""\b(?:alt|title|aria-label|placeholder)\s*=\s*("[^"]*"|'[^']*')""", re.IGNORECASE)
_LETTERS = re.compile(r"[^\W\d_]+")
_MARK = "\x00"  # stands for an expression or a tag of Jinja2: never a letter


def untranslated_text(source: str, name: str = "template") -> list[str]:
    """The words ``source`` (a Jinja2 template) shows outside translation, by the rule of this module's docstring."""
    environment = Environment(extensions=["jinja2.ext.i18n"], trim_blocks=True, lstrip_blocks=True)
    pieces: list[str] = []
    found: list[str] = []
    in_trans = False
    tokens = [(kind, value) for _line, kind, value in environment.lex(source, name) if kind != "whitespace"]
    for index, (kind, value) in enumerate(tokens):
        following = tokens[index + 1] if index + 1 < len(tokens) else ("", "")
        if kind == "block_begin" and following[0] == "name" and following[1] in ("trans", "endtrans"):
            in_trans = following[1] == "trans"
        elif kind == "data" and not in_trans:
            pieces.append(value)
        elif kind in ("variable_begin", "block_begin") and not in_trans:
            pieces.append(_MARK)
            if kind == "variable_begin" and following[0] == "string" and _LETTERS.search(following[1]):
                found.append(following[1])
    text = "".join(pieces)
    text = re.sub(r"<style\b.*?</style>|<!--.*?-->", _MARK, text, flags=re.DOTALL | re.IGNORECASE)
    found += [value for value in _SEEN_ATTRIBUTES.findall(text) if _LETTERS.search(value)]
    text = re.sub(r"<[^<>]*>", _MARK, text)
    text = re.sub(r"&#?\w+;", _MARK, text)
    found += _LETTERS.findall(text)
    return found


def shipped_templates() -> list[Path]:
    return sorted(path for path in SHIPPED_TEMPLATES.iterdir() if path.suffix in (".html", ".txt"))


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("<p>{{ _('Hello') }} {% trans name=x %}Hi {{ name }}{% endtrans %}</p>", []),
        ("{% trans count=n %}{{ count }} post{% pluralize %}{{ count }} posts{% endtrans %} &rarr; · -", []),
        ('<img src="{{ url }}" alt="{{ post.title }}"> {{ items|map("name")|join(", ") }}', []),
        ("<p>Hello {{ name }}</p>", ["Hello"]),
        ("{% if x %}Read more{% endif %}", ["Read", "more"]),
        ('<a href="{{ url }}" title="Open it">{{ _("Open") }}</a>', ['"Open it"']),
        ("{{ 'Welcome' }} {{ 'Welcome'|upper }}", ["'Welcome'", "'Welcome'"]),
        ("<style>p { color: red; }</style><!-- a note -->{{ x }}", []),
    ],
)
def test_the_rule_finds_words_outside_translation(source: str, expected: list[str]) -> None:
    assert untranslated_text(source) == expected


@pytest.mark.parametrize("template", shipped_templates(), ids=lambda path: path.name)
def test_every_word_of_an_email_template_is_marked_for_translation(template: Path) -> None:
    assert untranslated_text(template.read_text(encoding="utf-8"), template.name) == []


# --- The catalogs: complete, not fuzzy, plurals right -----------------------------------------------------------


def extracted_messages() -> dict[str, Message]:
    """Every message of the email templates, extracted as ``make messages`` does (babel.cfg's email sections)."""
    config = configparser.ConfigParser()
    config.read(ROOT / "babel.cfg", encoding="utf-8")
    email: list[tuple[str, str]] = []
    options_map: dict[str, dict[str, str]] = {}
    for section in config.sections():  # "[method: pattern]", as pybabel reads them
        method, _, pattern = (part.strip() for part in section.partition(":"))
        if pattern.startswith("templates/email/"):
            email.append((pattern, method))
            options_map[pattern] = dict(config.items(section))
    assert {pattern for pattern, _ in email} == {"templates/email/**.html", "templates/email/**.txt"}
    messages: dict[str, Message] = {}
    for _file, _line, text, _comments, _context in extract_from_dir(str(ROOT), email, options_map):
        key = text if isinstance(text, str) else text[0]
        messages[key] = Message(text)
    return messages


def shipped_catalog(language: str) -> Catalog:
    with (LOCALES / language / "LC_MESSAGES" / "messages.po").open("rb") as handle:
        return read_po(handle, locale=language)


def test_four_languages_are_shipped_and_the_template_file_is_current() -> None:
    found = sorted(path.parent.parent.name for path in LOCALES.glob("*/LC_MESSAGES/messages.po"))
    assert set(SHIPPED_LANGUAGES) <= set(found)  # and any language added since (one folder: README.md)
    with (LOCALES / "messages.pot").open("rb") as handle:
        template = read_po(handle)
    assert {message.id for message in template if message.id} == {
        message.id for message in extracted_messages().values()
    }


@pytest.mark.parametrize("language", sorted(path.parent.parent.name for path in LOCALES.glob("*/*/messages.po")))
def test_a_shipped_catalog_translates_every_template_string(language: str) -> None:
    catalog = shipped_catalog(language)
    if language in PLURAL_FORMS:  # a language added later keeps the rule ``pybabel init`` wrote (CLDR's)
        assert catalog.plural_forms == f"nplurals=2; plural={PLURAL_FORMS[language]};"
    wanted = extracted_messages()
    held = {message.id if isinstance(message.id, str) else message.id[0]: message for message in catalog if message.id}
    assert sorted(set(wanted) - set(held)) == [], "strings the templates show that the catalog lacks (make messages)"
    assert sorted(set(held) - set(wanted)) == [], "strings the catalog holds that no template shows"
    assert list(catalog.obsolete) == [], "obsolete entries: drop them"
    for key, message in held.items():
        assert message.id == wanted[key].id, f"{key!r}: its plural differs from the template's"
        assert not message.fuzzy, f"{language}: {key!r} is fuzzy"
        if language == "en":
            continue  # the templates' own language: an empty translation is the msgid itself
        raw = message.string
        strings = [str(string) for string in raw] if isinstance(raw, (list, tuple)) else [raw or ""]
        assert len(strings) == (catalog.num_plurals if message.pluralizable else 1), key
        assert all(string.strip() for string in strings), f"{language}: {key!r} is not translated"
    problems = [(message.id, [str(error) for error in errors]) for message, errors in catalog.check()]
    assert problems == []  # placeholders: the same names as the msgid's


# --- No English in a Spanish, French or Portuguese email --------------------------------------------------------


def post(number: int, hours: int, *themes: str) -> Post:
    moment = SINCE + timedelta(hours=hours)
    # Titles and summaries hold no English: only the emails' own words are looked for.
    return Post(f"g{number}", f"Lorem ipsum {number}", f"https://news.example.org/p/{number}", "Dolor sit amet.",
                "", moment, moment, "la", themes=themes)  # fmt: skip


def a_digest(settings: Settings) -> Digest:
    """Four themes (the subject's "and N more themes"), a post on several ("also in"), sections over their cap
    ("N more on"), and posts on no theme (the catch-all section and its "N more posts")."""
    posts = [post(1, 10, "climate-action", "resilience", "circular-economy"), post(2, 2, "climate-action"),
             post(3, 3, "climate-action"), post(4, 4, "resilience"), post(5, 5, "circular-economy"),
             post(6, 6, "sustainable-mobility"), post(7, 7), post(8, 8), post(9, 9)]  # fmt: skip
    digest = compose_digest(posts, settings.theme_list, since=SINCE, until=UNTIL, section_cap=2)
    assert digest is not None and digest.sections[-1].theme is None and digest.sections[-1].more == 1
    return digest


def every_email(settings: Settings, language: str) -> Iterator[tuple[str, RenderedEmail]]:
    """The digest and every notice the service sends, in ``language``."""
    renderer = MailRenderer(settings)
    yield "digest", renderer.render_digest(a_digest(settings), language, intro=None)
    editions = {"since": "2024-05-01 00:00 UTC", "until": "2024-05-08 00:00 UTC"}
    contexts: dict[str, dict[str, Any]] = {
        "confirm": {"confirm_url": "https://news.example.org/subscribe/confirm/x"},
        "preferences": {"summary": renderer.subscription_summary(language, "weekly", settings.theme_list[:3])},
        "approval": {"cadence": "monthly", **editions, "recipients": 12345, "preview_url": "https://news.example.org/e/1",
                     "approve_command": "syndication editions approve 1"},
        "paused": {"cadence": "daily", **editions, "reason": "554 5.7.1", "edition_url": "https://news.example.org/e/1",
                   "resume_command": "syndication editions resume 1"},
        # An owner's invitation, and short links as the approval's: Spanish and Portuguese word the role "editor" as
        # English does, and a real link's /editor/ path would be that English word to the check of English left over.
        "invitation": {"name": "lea", "role": "owner", "url": "https://news.example.org/w/x", "hours": 168},
        "password_reset": {"name": "lea", "role": "viewer", "url": "https://news.example.org/r/x", "hours": 1},
    }  # fmt: skip
    assert set(contexts) | {"digest"} == set(EMAILS), "a new email: add it here"
    for name, context in contexts.items():
        yield name, renderer.render_notice(name, language, context)


def readable(email: RenderedEmail) -> str:
    """Everything a reader of ``email`` reads: subject, preheader, text, and the HTML's text and seen attributes."""
    parts = [email.subject, email.preheader, email.text]
    if email.html:
        document = lxml_html.document_fromstring(email.html)
        for hidden in document.xpath("//style"):
            hidden.drop_tree()
        parts.append(document.text_content())
        parts += [value for attribute in ("alt", "title") for value in document.xpath(f"//@{attribute}")]
    return "\n".join(parts)


def english_fragments() -> list[str]:
    """The English text of the emails: each msgid (and plural) cut at its placeholders, fragments of 4 letters or
    more ("and", "The" alone are words other languages may use), and the names of months and languages."""
    fragments = set()
    for message in shipped_catalog("en"):
        for text in (message.id,) if isinstance(message.id, str) else message.id:
            for piece in re.split(r"%\(\w+\)s", text):
                piece = piece.strip(" .,:;!?-")
                if len(re.sub(r"\W", "", piece)) >= 4:
                    fragments.add(piece)
    months = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
              "November", "December", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday",
              "Sunday"]  # fmt: skip
    return sorted(fragments | set(months) | {"English", "Spanish", "French", "Portuguese"})


@pytest.mark.parametrize("language", ["es", "fr", "pt", "pt-BR"])
def test_an_email_in_another_language_holds_no_english_sentence_nor_english_theme_name(language: str) -> None:
    settings = make_settings()
    english_names = [theme.name for theme in settings.themes]
    fragments = english_fragments()
    assert "new posts on" in fragments and "Also in" in fragments and "Climate action" in english_names
    for name, email in every_email(settings, language):
        seen = readable(email)
        assert seen.strip(), name
        english = [text for text in fragments if re.search(rf"(?<!\w){re.escape(text)}(?!\w)", seen)]
        assert english == [], f"{language} {name}: English {english}"
        names = [theme for theme in english_names if theme in seen]
        assert names == [], f"{language} {name}: English theme names {names}"
    every_theme = MailRenderer(settings).subscription_summary(language, "daily", None)
    assert [text for text in fragments if text in every_theme] == [], every_theme


@pytest.mark.parametrize(
    ("language", "subject", "also_in", "more", "summary", "date", "number"),
    [
        ("en", "9 new posts on Climate action, Resilience and 2 more themes", "Also in Resilience, Circular economy",
         "1 more on Climate action", "A weekly digest in English: Climate action, Resilience, and Circular economy.",
         "May 1, 2024", "12,345"),
        ("es", "9 artículos nuevos sobre Acción climática, Resiliencia y 2 temas más",
         "También en Resiliencia, Economía circular", "1 más sobre Acción climática",
         "Un resumen semanal en español: Acción climática, Resiliencia y Economía circular.", "1 de mayo de 2024",
         "12.345"),
        ("fr", "9 nouveaux articles sur Action climatique, Résilience et 2 autres thèmes",
         "Également dans Résilience, Économie circulaire", "1 autre article sur Action climatique",
         "Un bulletin hebdomadaire en français\u00a0: Action climatique, Résilience et Économie circulaire.",
         "1 mai 2024", "12\u202f345"),
        ("pt-BR", "9 artigos novos sobre Ação climática, Resiliência e mais 2 temas",
         "Também em Resiliência, Economia circular", "Mais 1 artigo sobre Ação climática",
         "Um boletim semanal em português: Ação climática, Resiliência e Economia circular.", "1 de maio de 2024",
         "12.345"),
    ],
)  # fmt: skip
def test_each_language_names_themes_counts_and_dates_in_its_own_words(
    language: str, subject: str, also_in: str, more: str, summary: str, date: str, number: str
) -> None:
    emails = dict(every_email(make_settings(), language))
    digest = emails["digest"]
    assert digest.subject == subject
    assert also_in in digest.text and also_in in readable(digest)
    assert more in digest.text and date in digest.text
    assert emails["preferences"].text.count(summary) == 1
    assert number in emails["approval"].text  # Babel's grouping of the recipients' count
    assert f'<html lang="{language}">' in digest.html


def test_the_catch_all_section_and_the_cadences_are_worded_too() -> None:
    emails = dict(every_email(make_settings(), "fr"))
    assert "AUTRES ACTUALITÉS" in emails["digest"].text and "1 autre article" in emails["digest"].text
    assert emails["approval"].subject == "Le bulletin mensuel de Test Network attend votre approbation"
    assert "L’édition mensuelle du 2024-05-01 00:00 UTC" in emails["approval"].text
    assert emails["paused"].subject == "Le bulletin quotidien de Test Network est suspendu"
    every_theme = MailRenderer(make_settings()).subscription_summary("fr", "daily", None)
    assert every_theme == "Un bulletin quotidien en français, sur tous les thèmes."


@pytest.mark.parametrize("language", SHIPPED_LANGUAGES)
def test_every_link_to_the_site_says_the_emails_language_but_the_personal_ones(language: str) -> None:
    """The home page, a theme's page (the digest's "N more on <theme>") and the catch-all's "N more posts" open in
    the email's language (``?lang=``); a confirmation link and an editor's link carry none (mailing.render)."""
    settings = make_settings()
    base = settings.site.base_url
    personal = {"https://news.example.org/subscribe/confirm/x", "https://news.example.org/e/1",
                "https://news.example.org/w/x", "https://news.example.org/r/x"}  # fmt: skip
    for name, email in every_email(settings, language):
        hrefs = [str(href) for href in lxml_html.document_fromstring(email.html).xpath("//a/@href")]
        in_text = re.findall(r"https?://\S+", email.text)
        # The posts' own pages are the publisher's (here on the same host), not pages of this site.
        ours = [url for url in hrefs + in_text if url.startswith(base) and not url.startswith(f"{base}/p/")]
        assert f"{base}/?lang={language}" in hrefs, name  # the site's title, at the top of every email
        for url in ours:
            asked = parse_qs(urlsplit(url).query).get("lang")
            assert asked == (None if url in personal else [language]), f"{language} {name}: {url}"
        if name == "digest":
            for links in (hrefs, in_text):
                assert f"{base}/themes/climate-action?lang={language}" in links
                assert f"{base}/?lang={language}" in links  # "1 more post", the section on no theme


# --- Names per language, and their fallbacks --------------------------------------------------------------------


def test_a_name_falls_back_to_the_base_language_then_to_the_site_languages_name() -> None:
    theme = Theme("t", "Climate action", names=(("es", "Acción climática"), ("pt", "Ação climática"),
                                                 ("pt-PT", "Acção climática")))  # fmt: skip
    assert theme.name_in("es") == theme.name_in("es-MX") == theme.name_in("ES_mx") == "Acción climática"
    assert theme.name_in("pt-BR") == theme.name_in("pt") == "Ação climática"
    assert theme.name_in("pt-PT") == theme.name_in("pt_pt") == "Acção climática"  # its own before its base's
    assert theme.name_in("fr") == theme.name_in("en") == "Climate action"
    assert Region("r", "Europe", names=(("fr", "Europe"), ("de", "Europa"))).name_in("de-AT") == "Europa"
    assert Theme("u", "Unnamed").name_in("fr") == "Unnamed"


def test_names_are_keyed_by_canonical_tags_and_refused_when_malformed(tmp_path: Path) -> None:
    def loaded(names: str) -> Settings:
        path = tmp_path / "config.toml"
        path.write_text(f'[[themes]]\nslug = "t"\nname = "Theme"\nnames = {names}\n', encoding="utf-8")
        return load_settings(path, environ={})

    assert loaded('{ PT_br = "Tema", es = " Tema " }').themes[0].names == {"pt-BR": "Tema", "es": "Tema"}
    assert loaded('{ pt_br = "Tema" }').theme_list[0].name_in("pt-BR") == "Tema"
    for names, message in [
        ('{ "not a tag" = "x" }', "themes[0].names: 'not a tag' is not a language tag"),
        ('{ es = "" }', "themes[0].names: es: a name is one line of text"),
        ('{ pt-br = "a", pt_BR = "b" }', "names the language 'pt-BR' twice"),
    ]:
        with pytest.raises(Exception, match=re.escape(message)):
            loaded(names)


def test_a_reader_without_a_name_in_their_language_sees_the_site_languages_name() -> None:
    # German is configured but has neither names nor a catalog; "es" lacks the name of one theme.
    themes = [dict(theme) for theme in THEMES_TOML]
    themes[1] = {**themes[1], "names": {"fr": "Résilience"}}
    raw = {"themes": themes, "digest": {"languages": ["en", "es", "de"]}, "database": {"url": "sqlite:///:memory:"}}
    settings = settings_from_mapping(raw, ROOT / "config.toml", environ={})
    digest = compose_digest([post(1, 1, "climate-action"), post(2, 2, "resilience")], settings.theme_list,
                            since=SINCE, until=UNTIL)  # fmt: skip
    assert digest is not None
    renderer = MailRenderer(settings)
    assert renderer.render_digest(digest, "es").subject == "2 artículos nuevos sobre Acción climática y Resilience"
    german = renderer.render_digest(digest, "de")
    assert german.subject == "2 new posts on Climate action and Resilience"  # English words and names
    assert "1. Mai 2024" in german.text  # German dates all the same


def test_a_preferences_sentence_is_written_from_the_subscribers_choices() -> None:
    settings = make_settings()
    subscriber = Subscriber(1, "a@example.org", "", "pt-BR", ("resilience", "gone-theme"), "monthly", "active",
                            Consent(SINCE, "cli"), SINCE)  # fmt: skip
    assert preferences_summary(settings, subscriber) == "Um boletim mensal em português: Resiliência e gone-theme."


# --- Feeds: titles in the site's language, a language's feed labelled in it -------------------------------------


def test_feed_titles_use_the_site_languages_names_and_a_language_feed_its_own() -> None:
    theme = Theme("climate-action", "Acción climática", names=(("en", "Climate action"), ("fr", "Action climatique")))
    region = Region("europe", "Europa", names=(("en", "Europe"),))
    site = Site("Red", "https://news.example.org", "es", (theme,), (region,), full_content=False)
    feeds = {feed.path: feed for feed in feeds_of(site, (), ["fr"])}
    assert feeds["themes/climate-action"].title == "Red: Acción climática"
    assert feeds["regions/europe"].title == "Red: Europa"
    assert site.theme_name("climate-action") == "Acción climática" and site.theme_name("gone") == "gone"
    entry = post(1, 1, "climate-action")

    def labels(path: str) -> list[str]:
        document = FeedDocument(site, feeds[path], "atom", [entry], UNTIL)
        return re.findall(r'label="([^"]*)"', render_atom(document).decode("utf-8"))

    assert labels("all") == labels("themes/climate-action") == ["Acción climática"]
    assert labels("languages/fr") == ["Action climatique"]


# --- check-config -----------------------------------------------------------------------------------------------


def test_check_config_reports_each_missing_name_and_language(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "config.toml"
    path.write_text(
        '[digest]\nlanguages = ["en", "en-GB", "es", "fr", "de"]\n'
        '[[themes]]\nslug = "climate-action"\nname = "Climate action"\nnames = { es = "Acción climática", fr = "Action'
        ' climatique", de = "Klimaschutz" }\n'
        '[[themes]]\nslug = "resilience"\nname = "Resilience"\nnames = { es = "Resiliencia" }\n'
        '[[regions]]\nslug = "europe"\nname = "Europe"\nnames = { es-MX = "Europa" }\n',
        encoding="utf-8",
    )  # fmt: skip
    settings = load_settings(path, environ={})
    assert untranslated_names(settings) == [
        "theme 'resilience' has no name in fr, de: shown as 'Resilience' there",
        "region 'europe' has no name in es, fr, de: shown as 'Europe' there",  # es-MX's is no name for all of es
    ]
    assert language_warnings(settings)[0].startswith("digest language 'de' has no shipped catalog")
    assert main(["--config", str(path), "check-config"]) == 1
    out = capsys.readouterr().out
    assert "Warnings (3):" in out and "- theme 'resilience' has no name in fr, de" in out
    assert main(["--config", str(ROOT / "config.toml"), "check-config"]) == 0  # the shipped file names everything
    assert "No warnings." in capsys.readouterr().out
