"""The web pages in every language they are offered in: the catalogs, the templates' marking, the choice of a
page's language (``?lang=``, the subscriber's own, ``Accept-Language``, the site's), the switcher and the
hreflang alternates, and every page worded in English, Spanish, French and Portuguese, over real HTTP.

Two rules hold the wording complete:

- **Every word a template shows is marked.** A template's text outside ``{% trans %}`` blocks, and the values
  of the attributes a reader sees or hears (``title``, ``alt``, ``placeholder``, ``aria-label``, ``label``), hold
  no natural-language word: no run of two letters or more once its ``{{ … }}`` outputs are taken out (the
  ``body_class`` block, which base.html places in an attribute, holds class names). Each
  output that lands in such a place holds no string constant with a word either (``{{ 'hard' if … }}``), unless
  it is a gettext call. (Strings set with ``{% set %}`` are not followed: a template keeps its words in
  gettext calls.) ``unmarked_words`` applies the rule; a control template shows it finds what it should.
- **Every page is worded in its language.** Each page, asked for with ``Accept-Language`` and with ``?lang=``,
  says its language in ``<html lang>``, and no text of the web catalog is left in English on a Spanish, French or
  Portuguese page: a catalog text made of several words must not appear in the page's visible text, a one-word
  text must not be a whole text of it, unless its translation is the same (``Feeds``, ``Site``). What a page shows
  in ``<code>`` is left out: identifiers, never worded (a token's scope ``posts``, an event ``post.published``, a
  command). Python's own strings (titles, refusals, field errors) are in the same catalog, so this holds them too.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from babel.messages.catalog import Catalog, Message
from babel.messages.extract import extract_from_dir
from babel.messages.frontend import parse_mapping_cfg
from babel.messages.plurals import get_plural
from babel.messages.pofile import read_po
from jinja2 import Environment, nodes
from starlette.requests import Request

from syndication.app.editions import deliver, plan_edition
from syndication.app.subscribers import add_subscriber, find_subscriber, preferences_url, subscriber_token
from syndication.app.team import add_person, invite
from syndication.config import load_settings
from syndication.core.models import Subscriber
from syndication.core.team import Role
from syndication.resources import catalog_languages, catalogs, web_templates
from syndication.web.languages import DOMAIN, SOURCE_LANGUAGE, Languages, preferred_languages, with_language
from tests.support import write_config
from tests.web_site import EDITOR, PASSWORD, WebSite, csrf_of, form_post, web_site

ROOT = Path(__file__).resolve().parent.parent
LANGUAGES = ("en", "es", "fr", "pt")
# Every shipped catalog but English's (the msgids' own language), a language added later included.
TRANSLATED = tuple(language for language in catalog_languages(catalogs(), DOMAIN) if language != SOURCE_LANGUAGE)
SINCE, UNTIL = datetime(2024, 5, 1, tzinfo=UTC), datetime(2024, 6, 1, tzinfo=UTC)
# The site offers the four shipped languages, and names a theme of its own in each.
EXTRA = """
[digest]
languages = ["en", "es", "fr", "pt"]

[[themes]]
slug = "energy"
name = "Energy"
names = { es = "Energía", fr = "Énergie", pt = "Energia" }
"""


# --- The catalogs --------------------------------------------------------------------------------------------


def catalog(language: str) -> Catalog:
    with (catalogs() / language / "LC_MESSAGES" / f"{DOMAIN}.po").open("rb") as handle:
        return read_po(handle, locale=language)


def ids_of(message: Message) -> tuple[str, ...]:
    """A catalog entry's msgid, or its singular and plural."""
    return tuple(message.id) if isinstance(message.id, tuple | list) else (str(message.id),)


def forms_of(message: Message) -> tuple[str, ...]:
    """A catalog entry's translation, or each of its plural forms ('' when untranslated)."""
    if isinstance(message.string, tuple | list):
        return tuple(form or "" for form in message.string)
    return (message.string or "",)


def extracted_ids() -> set[tuple[str | None, str]]:
    """(context, msgid) of every string the templates and the web's Python mark, read as ``make messages`` reads
    them (babel.cfg), the emails' folders left out."""
    with (ROOT / "babel.cfg").open(encoding="utf-8") as handle:
        method_map, options_map = parse_mapping_cfg(handle)  # type: ignore[no-untyped-call]

    def outside_the_emails(path: str) -> bool:
        return not Path(path).name.startswith((".", "_")) and Path(path).name != "email"

    found = set()
    for _, _, message, _, context in extract_from_dir(
        str(ROOT), method_map, options_map, directory_filter=outside_the_emails
    ):
        found.add((context, message[0] if isinstance(message, tuple) else message))
    return found


def test_the_four_languages_are_shipped() -> None:
    assert set(LANGUAGES) <= set(catalog_languages(catalogs(), DOMAIN))


def test_the_catalogs_hold_exactly_what_the_templates_and_the_code_mark() -> None:
    wanted = extracted_ids()
    assert len(wanted) > 200, "the extraction found too little: babel.cfg no longer maps the web"
    for language in (SOURCE_LANGUAGE, *TRANSLATED):
        held = {(message.context, ids_of(message)[0]) for message in catalog(language) if message.id}
        assert held == wanted, (
            f"{language}: run `make messages` and translate: missing {sorted(map(str, wanted - held))[:5]},"
            f" stale {sorted(map(str, held - wanted))[:5]}"
        )


@pytest.mark.parametrize("language", TRANSLATED)
def test_every_string_is_translated_none_fuzzy_with_the_plural_forms_of_its_language(language: str) -> None:
    shipped = catalog(language)
    plural = get_plural(language)
    assert shipped.num_plurals == plural.num_plurals and shipped.plural_expr == plural.plural_expr
    untranslated, fuzzy, broken = [], [], []
    for message in shipped:
        if not message.id:
            continue
        forms = forms_of(message)
        if message.pluralizable and len(forms) != plural.num_plurals:
            broken.append(f"{message.id!r}: {len(forms)} forms")
        if not all(form.strip() for form in forms):
            untranslated.append(message.id)
        if message.fuzzy:
            fuzzy.append(message.id)
        # Each form fills the placeholders its msgid has (a plural form may leave out the number it words).
        wanted = set(re.findall(r"%\(\w+\)s", " ".join(ids_of(message))))
        for form in forms:
            extra = set(re.findall(r"%\(\w+\)s", form)) - wanted
            missing = wanted - set(re.findall(r"%\(\w+\)s", form)) - {"%(num)s", "%(count)s"}
            if extra or missing or re.search(r"%(?!\(\w+\)s|%)", form):
                broken.append(f"{message.id!r}: {form!r}")
    assert untranslated == [], f"{language}: untranslated: {untranslated}"
    assert fuzzy == [], f"{language}: fuzzy: {fuzzy}"
    assert broken == [], f"{language}: placeholders or plural forms: {broken}"


def test_the_english_catalog_has_no_fuzzy_entry() -> None:
    assert [message.id for message in catalog(SOURCE_LANGUAGE) if message.fuzzy and message.id] == []


# --- Every word of a template is marked ------------------------------------------------------------------------

VISIBLE_ATTRIBUTES = frozenset({"title", "alt", "placeholder", "aria-label", "label"})
WORD = re.compile(r"[^\W\d_]{2,}")
MARKER = re.compile(r"\x00(\d+)\x00")
GETTEXT = frozenset({"_", "gettext", "ngettext", "pgettext", "npgettext"})
# Blocks that base.html places inside an attribute (``<body class="{% block body_class %}">``): their text is a
# class name, not words.
ATTRIBUTE_BLOCKS = frozenset({"body_class"})


class _Visible(HTMLParser):
    """The text nodes and visible attribute values of an HTML page (or of a template made into one)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.texts: list[str] = []
        self._hidden = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("script", "style"):
            self._hidden += 1
        self.texts.extend(value for name, value in attrs if name in VISIBLE_ATTRIBUTES and value)

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style"):
            self._hidden = max(0, self._hidden - 1)

    def handle_data(self, data: str) -> None:
        if not self._hidden and data.strip():
            self.texts.append(data)


def visible_texts(page: str) -> list[str]:
    """What a reader of ``page`` sees or hears: its text nodes and visible attributes, white space collapsed."""
    parser = _Visible()
    parser.feed(page)
    parser.close()
    return [" ".join(text.split()) for text in parser.texts]


def _output_constants(node: nodes.Node) -> Iterator[str]:
    """The string constants an output expression may print: through ``a if … else b``, ``a or b``, ``~`` and
    filters, not through calls (a gettext call is marked; another call's strings are its arguments)."""
    if isinstance(node, nodes.Const) and isinstance(node.value, str):
        yield node.value
    elif isinstance(node, nodes.CondExpr):
        yield from _output_constants(node.expr1)
        if node.expr2 is not None:
            yield from _output_constants(node.expr2)
    elif isinstance(node, nodes.Or | nodes.And | nodes.Add):
        yield from _output_constants(node.left)
        yield from _output_constants(node.right)
    elif isinstance(node, nodes.Concat):
        for part in node.nodes:
            yield from _output_constants(part)
    elif isinstance(node, nodes.Filter) and node.node is not None:
        yield from _output_constants(node.node)
        if node.name in ("default", "d"):  # ``x|default('none')`` prints its argument
            for argument in node.args:
                yield from _output_constants(argument)


def unmarked_words(source: str) -> list[str]:
    """The natural-language words ``source`` (a Jinja2 HTML template) shows outside gettext (the rule of this
    module's docstring)."""
    environment = Environment(extensions=["jinja2.ext.i18n"])
    html_parts: list[str] = []
    outputs: list[str] = []
    tag: list[tuple[str, str]] = []
    in_trans = in_attribute = False
    for _, kind, value in environment.lex(source):
        if kind in ("block_begin", "variable_begin"):
            tag = [(kind, value)]
            continue
        if tag:
            tag.append((kind, value))
            if kind == "block_end":
                names = [token for token_kind, token in tag if token_kind == "name"]
                if names and names[0] == "trans":
                    in_trans, html_parts = True, [*html_parts, "\x00-1\x00"]
                elif names and names[0] == "endtrans":
                    in_trans = False
                elif names[:2] in (["block", name] for name in ATTRIBUTE_BLOCKS):
                    in_attribute = True
                elif names and names[0] == "endblock":
                    in_attribute = False
                tag = []
            elif kind == "variable_end":
                if not in_trans:
                    outputs.append("".join(token for _, token in tag))
                    html_parts.append(f"\x00{len(outputs) - 1}\x00")
                tag = []
            continue
        if kind == "data" and not in_trans and not in_attribute:
            html_parts.append(value)
    found = []
    for text in visible_texts("".join(html_parts)):
        found.extend(WORD.findall(MARKER.sub(" ", text)))
        for number in MARKER.findall(text):
            if number == "-1":
                continue
            template = environment.parse(outputs[int(number)])
            for output in template.find_all(nodes.Output):
                for expression in output.nodes:
                    if isinstance(expression, nodes.Call) and getattr(expression.node, "name", "") in GETTEXT:
                        continue
                    found.extend(word for constant in _output_constants(expression) for word in WORD.findall(constant))
    return found


def web_template_files() -> list[Path]:
    """Every template of the pages, the editor's and the feeds' index page (built in the site's language) too."""
    return sorted(web_templates().glob("*.html"))


@pytest.mark.parametrize("path", web_template_files(), ids=lambda path: path.name)
def test_every_word_of_a_template_is_marked_for_translation(path: Path) -> None:
    assert unmarked_words(path.read_text(encoding="utf-8")) == []


def test_the_rule_finds_words_left_unmarked() -> None:
    control = """{% extends "base.html" %}{% block content %}
<h1>{{ title }}</h1><p>Nothing here yet</p><input placeholder="your address" value="{{ x }}">
<p>{{ 'hard' if bounce else _('soft') }} {{ x|default('none') }} {{ url('/subscribe') }}</p>
<p>{% trans %}Marked text{% endtrans %} {{ _("Marked too") }} <span class="{{ 'hint' }}">{{ 42 }}</span></p>
{% endblock %}"""
    # Text nodes, a visible attribute and printed constants are found; classes, paths and gettext are not.
    assert unmarked_words(control) == ["Nothing", "here", "yet", "your", "address", "hard", "none"]


# --- Choosing a page's language --------------------------------------------------------------------------------


def test_accept_language_is_read_by_its_weights() -> None:
    assert preferred_languages("fr-CH, fr;q=0.9, en;q=0.8, de;q=0.7, *;q=0.5") == ["fr-CH", "fr", "en", "de"]
    assert preferred_languages("es;q=0.2, pt;q=0.9, en") == ["en", "pt", "es"]
    assert preferred_languages("es;q=0, pt") == ["pt"]  # q=0: not acceptable
    assert preferred_languages("es;q=2, pt;q=abc, fr;q=0.5000, en;q=0.5") == ["en"]  # malformed weights: left out
    assert preferred_languages("pt-BR;q=0.8, es-419;q=0.8") == ["pt-BR", "es-419"]  # equal weights keep order
    assert preferred_languages("") == [] and preferred_languages("<script>, ;q=1") == []


def test_a_language_in_a_link_keeps_the_rest_of_the_link() -> None:
    assert with_language("/subscribe?themes=a&themes=b", "es") == "/subscribe?themes=a&themes=b&lang=es"
    assert with_language("/preferences/abc.def?lang=fr#top", "pt") == "/preferences/abc.def?lang=pt#top"
    assert with_language("https://x.example/p", "fr") == "https://x.example/p?lang=fr"


def _request(query: str = "", accept_language: str | None = None) -> Request:
    """A request as the server hands one to the app (a real Starlette Request on an ASGI scope)."""
    headers = [(b"accept-language", accept_language.encode())] if accept_language is not None else []
    scope = {"type": "http", "method": "GET", "path": "/subscribe", "query_string": query.encode(), "headers": headers}
    return Request(scope)


def test_the_url_beats_the_subscriber_who_beats_the_browser_who_beats_the_site(tmp_path: Path) -> None:
    # A Portuguese site offering four languages: each source is shown to win over those after it.
    config = write_config(tmp_path, "sqlite:///x.db", '[digest]\nlanguages = ["pt-BR", "en", "es", "fr"]\n').read_text(
        encoding="utf-8"
    )
    (tmp_path / "config.toml").write_text(config.replace('language = "en"', 'language = "pt-BR"'), encoding="utf-8")
    languages = Languages(load_settings(tmp_path / "config.toml", environ={}))
    assert languages.offered == ("pt-BR", "en", "es", "fr") and languages.default == "pt-BR"

    def chosen(query: str = "", header: str | None = None, stored: str | None = None) -> tuple[str, str]:
        words = languages.choose(_request(query, header), stored)
        return words.language, words.source

    assert chosen("lang=fr", "es", stored="en") == ("fr", "url")
    assert chosen("", "es", stored="en") == ("en", "subscriber")
    assert chosen("", "es;q=0.5, fr;q=0.9") == ("fr", "browser")
    assert chosen("", "de, it") == ("pt-BR", "browser")  # nothing offered: the site's
    assert chosen("") == ("pt-BR", "browser")
    # Tags are matched without case, and by their language when no variant is offered.
    assert chosen("lang=ES") == ("es", "url") and chosen("", "es-MX") == ("es", "browser")
    assert chosen("", "pt-PT") == ("pt-BR", "browser") and chosen("lang=pt") == ("pt-BR", "url")
    assert chosen("lang=tlh", "fr") == ("fr", "browser")  # a language not offered in the URL: as if none
    assert chosen("", None, stored="de") == ("pt-BR", "browser")
    # The Portuguese of Brazil is worded with the shipped pt catalog.
    assert languages.words("pt-BR").gettext("Subscribe") == "Inscrever-se"


def test_only_configured_languages_with_a_catalog_are_offered(tmp_path: Path) -> None:
    path = write_config(tmp_path, "sqlite:///x.db", '[digest]\nlanguages = ["en", "de", "es"]\n')
    languages = Languages(load_settings(path, environ={}))
    assert languages.offered == ("en", "es")  # German: no web catalog (its readers' emails are English-worded)
    assert languages.words("de").language == "en"


# --- Every page in every language, over HTTP -----------------------------------------------------------------


@pytest.fixture
def site(tmp_path: Path, database_url: str) -> Iterator[WebSite]:
    """A site in four languages with a sent edition, and a subscriber of each language."""
    with web_site(tmp_path, database_url, EXTRA) as running:
        service = running.service
        for language in LANGUAGES:
            add_subscriber(service, f"reader-{language}@example.org", language=language, confirmed=True)
            add_subscriber(service, f"pending-{language}@example.org", language=language)
        plan = plan_edition(service, "weekly", SINCE, UNTIL)
        assert plan.edition is not None
        deliver(service)
        yield running


def subscriber(site: WebSite, address: str) -> Subscriber:
    found = find_subscriber(site.service, address)
    assert found is not None
    return found


def untranslated(page: str, language: str) -> list[str]:
    """The catalog's English texts left on ``page``, which should be in ``language`` (see the module's rule)."""
    texts = visible_texts(re.sub(r"<code>.*?</code>", " ", page, flags=re.DOTALL))  # identifiers, not words
    whole = {text.strip(" .:,;()?!·") for text in texts}
    joined = " ".join(texts)
    left = []
    for message in catalog(language):
        if not message.id:
            continue
        ids, forms = ids_of(message), forms_of(message)
        if set(ids) & set(forms):
            continue  # worded the same in this language
        translated = " ".join(forms)
        for english in ids:
            for segment in re.split(r"%\(\w+\)s|<[^>]+>|%%", html.unescape(english)):
                segment = " ".join(segment.split()).strip(" .:,;()?!·'")
                if not re.search(r"[^\W\d_]{3,}", segment) or segment in translated:
                    continue
                if (" " in segment and segment in joined) or segment in whole:
                    left.append(segment)
    return left


def assert_in_language(response: httpx.Response, language: str, what: str) -> None:
    assert f'<html lang="{language}">' in response.text, f"{what}: not in {language}"
    if language != SOURCE_LANGUAGE:
        assert untranslated(response.text, language) == [], f"{what} ({language})"


VIEWER_PASSWORD = "a long enough password 42"


def signed_in(client: httpx.Client) -> None:
    answer = form_post(client, "/editor/login", {"name": EDITOR, "password": PASSWORD})
    assert answer.status_code == 303, answer.text


def test_every_page_is_worded_in_each_language_asked_for(site: WebSite) -> None:
    reader = {language: subscriber(site, f"reader-{language}@example.org") for language in LANGUAGES}
    pending = {language: subscriber(site, f"pending-{language}@example.org") for language in LANGUAGES}
    public = ["/subscribe", "/subscribe?themes=energy", "/editions/", "/themes/", "/themes/climate-action",
              "/themes/energy", "/no-such-page", "/themes/no-such-theme", "/editions/999",
              "/preferences/not-a-token", "/editor/login", "/editor/forgot"]  # fmt: skip
    # Someone invited to the team (their welcome page), and a viewer (refused the owner's pages).
    invitation = invite(site.service, "lea", "lea@example.org", Role.EDITOR, actor="cli:test")
    welcome = "/editor/welcome/" + invitation.url.rsplit("/", 1)[1]
    add_person(site.service, "vic", None, Role.VIEWER, VIEWER_PASSWORD, actor="cli:test")
    with site.client() as client:  # the check sees English where it is: on an English page, read as Spanish
        left = untranslated(client.get("/subscribe").text, "es")
        assert {"Skip to the content", "Email address", "Language of the emails", "Subscribe"} <= set(left)
    for language in LANGUAGES:
        other = next(lang for lang in LANGUAGES if lang != language)
        with site.client() as client:
            for path in public:
                by_header = client.get(path, headers={"Accept-Language": f"{language}-XX, {other};q=0.5"})
                assert_in_language(by_header, language, f"{path} (Accept-Language)")
                assert by_header.headers["vary"] == "Accept-Language", path
                by_url = client.get(with_language(path, language), headers={"Accept-Language": other})
                assert_in_language(by_url, language, f"{path} (?lang=)")
                assert "vary" not in by_url.headers, path
            # The reader's own pages: in their language whatever the browser says, or in the URL's.
            for token_path in (
                f"/subscribe/confirm/{subscriber_token(site.service, 'confirm', pending[language])}",
                f"/preferences/{subscriber_token(site.service, 'preferences', reader[language])}",
                f"/unsubscribe/{subscriber_token(site.service, 'unsubscribe', reader[language])}",
            ):
                theirs = client.get(token_path, headers={"Accept-Language": other})
                assert_in_language(theirs, language, f"{token_path} (the subscriber's)")
                assert "vary" not in theirs.headers
                chosen = client.get(f"{token_path}?lang={other}", headers={"Accept-Language": language})
                assert_in_language(chosen, other, f"{token_path} (?lang=)")
            # Answers to forms, and their refusals, field by field.
            headers = {"Accept-Language": language}
            form = client.get("/subscribe", headers=headers).text
            refused = form_post(
                client, "/subscribe", {"email": "x", "name": "n" * 300, "themes": ["nope"], "cadence": "hourly",
                                       "language": "tlh"}, form, **headers,
            )  # fmt: skip
            assert refused.status_code == 400 and refused.text.count('class="error"') == 5
            assert_in_language(refused, language, "the refused subscribe form")
            answer = form_post(
                client, "/subscribe", {"email": f"new-{language}@example.org", "cadence": "weekly",
                                       "language": language}, form, **headers,
            )  # fmt: skip
            assert answer.status_code == 200
            assert_in_language(answer, language, "the answer to the subscribe form")
            expired = client.post("/subscribe", data={"email": "a@example.org"}, headers=headers)
            assert expired.status_code == 403
            assert_in_language(expired, language, "the subscribe form without its token")
            one_click = client.post(f"/unsubscribe/{subscriber_token(site.service, 'unsubscribe', reader[language])}")
            assert_in_language(one_click, language, "the one-click unsubscribe answer")
            welcomed = client.get(welcome, headers=headers)
            assert welcomed.status_code == 200
            assert_in_language(welcomed, language, "the welcome page of an invitation")
            # The editor's pages, the owner's too.
            signed_in(client)
            for path in ("/editor/", "/editor/bounces?subscriber=nobody@example.org", "/editor/editions/1",
                         "/editor/editions/1?themes=nope&subscriber=", "/editor/editions/999", "/editor/people",
                         "/editor/tokens", "/editor/webhooks"):  # fmt: skip
                page = client.get(path, headers=headers)
                assert_in_language(page, language, path)
            # The owner's forms refused, field by field.
            refusals: list[tuple[str, dict[str, str | list[str]], int]] = [
                ("/editor/people", {"name": "a b", "email": "", "role": "nope"}, 3),
                ("/editor/tokens", {"name": "", "scopes": ["nope"]}, 2),
                ("/editor/webhooks", {"url": "ftp://example.org/x", "events": ["nope"]}, 2),
            ]
            for path, fields, count in refusals:
                refused = form_post(client, path, fields, client.get(path, headers=headers).text, **headers)
                assert refused.status_code == 400 and refused.text.count('class="error"') == count, path
                assert_in_language(refused, language, f"the refused form of {path}")
            progress = client.get("/editor/editions/1/progress.json", headers=headers).json()
            assert progress["status_label"] == catalog_word(language, "sent", "edition")
        # A viewer refused an owner's page.
        with site.client() as client:
            assert form_post(client, "/editor/login", {"name": "vic", "password": VIEWER_PASSWORD}).status_code == 303
            refused = client.get("/editor/people", headers={"Accept-Language": language})
            assert refused.status_code == 403
            assert_in_language(refused, language, "a viewer refused the people page")


def catalog_word(language: str, msgid: str, context: str | None = None) -> str:
    found = catalog(language).get(msgid, context=context)
    assert found is not None
    return str(found.string or msgid)


def test_public_pages_list_their_languages_and_token_pages_do_not(site: WebSite) -> None:
    base = site.settings.site.base_url
    preferences = (
        f"/preferences/{subscriber_token(site.service, 'preferences', subscriber(site, 'reader-en@example.org'))}"
    )
    with site.client() as client:
        page = client.get("/subscribe?themes=energy&lang=fr")
        own = client.get(preferences, headers={"Accept-Language": "es"})
    alternates = [
        (hreflang, html.unescape(href))
        for hreflang, href in re.findall(r'<link rel="alternate" hreflang="([^"]+)" href="([^"]+)">', page.text)
    ]
    assert alternates == [
        *((language, f"{base}/subscribe?themes=energy&lang={language}") for language in LANGUAGES),
        ("x-default", f"{base}/subscribe?themes=energy"),
    ]
    switcher = re.findall(r'<a href="([^"]+)" hreflang="([^"]+)" lang="\2"( aria-current="true")?>([^<]+)</a>',
                          page.text)  # fmt: skip
    assert switcher == [
        ("/subscribe?themes=energy&amp;lang=en", "en", "", "English"),
        ("/subscribe?themes=energy&amp;lang=es", "es", "", "Español"),
        ("/subscribe?themes=energy&amp;lang=fr", "fr", ' aria-current="true"', "Français"),
        ("/subscribe?themes=energy&amp;lang=pt", "pt", "", "Português"),
    ]
    # The signed link's page: a switcher that keeps its token, no alternate address published.
    assert "hreflang=" in own.text and 'rel="alternate"' not in own.text
    links = re.findall(r'<a href="([^"]+)" hreflang="(\w+)"', own.text)
    assert [href for href, _ in links] == [html.escape(f"{preferences}?lang={language}") for language in LANGUAGES]
    # Once a language is chosen in the URL, the page's links and forms keep it.
    assert 'action="/subscribe?lang=fr"' in page.text and 'href="/editions/?lang=fr"' in page.text


def test_a_spanish_subscribers_link_opens_spanish_pages(site: WebSite) -> None:
    """The links the emails carry say the subscriber's language (``lang=``): each opens a page in it, and the
    pages it leads on to stay in it, whatever the browser asks for."""
    english = subscriber(site, "reader-en@example.org")
    link = urlsplit(preferences_url(site.service, english) + "?lang=es")  # a link made for a Spanish reader
    with site.client() as client:
        page = client.get(f"{link.path}?{link.query}", headers={"Accept-Language": "en"})
        assert_in_language(page, "es", "the preferences page")
        assert "Guardar mis preferencias" in page.text and f'action="{link.path}?lang=es"' in page.text
        saved = form_post(
            client, f"{link.path}?lang=es", {"cadence": "monthly", "language": "en"}, page.text,
            **{"Accept-Language": "en"},
        )  # fmt: skip
        assert saved.status_code == 200
        assert_in_language(saved, "es", "the saved preferences")
        assert "Guardado. Un correo cada mes en inglés: todos los temas." in saved.text


def test_dates_and_plurals_follow_the_language(site: WebSite) -> None:
    with site.client() as client:
        editions = {language: client.get(f"/editions/?lang={language}").text for language in LANGUAGES}
        themes = {language: client.get(f"/themes/?lang={language}").text for language in LANGUAGES}
    assert "Weekly · sent 1 Jun 2024" in editions["en"]
    assert "Semanal · enviada el 1 jun 2024" in editions["es"]
    assert "Hebdomadaire · envoyée le 1 juin 2024" in editions["fr"]
    assert "Semanal · enviada em 1 de jun. de 2024" in editions["pt"]
    assert "Boletim semanal, de 1 de mai. de 2024 a 1 de jun. de 2024" in editions["pt"]
    # One post (singular in each language), two posts, and none.
    assert "1 post<" in themes["en"] and "2 posts<" in themes["en"] and "No posts yet" in themes["en"]
    assert "1 artículo<" in themes["es"] and "2 artículos<" in themes["es"]
    assert "1 article<" in themes["fr"] and "2 articles<" in themes["fr"] and "Pas encore d’articles" in themes["fr"]
    assert "1 artigo<" in themes["pt"] and "2 artigos<" in themes["pt"]
    assert ">Energía</a>" in themes["es"] and ">Énergie</a>" in themes["fr"] and ">Energy</a>" in themes["en"]


def test_the_editor_works_in_spanish(site: WebSite) -> None:
    with site.client() as client:
        login = client.get("/editor/login?lang=es")
        answer = client.post(
            "/editor/login?lang=es", data={"csrf_token": csrf_of(login.text), "name": EDITOR, "password": PASSWORD}
        )
        assert answer.status_code == 303 and answer.headers["location"] == "/editor/?lang=es"
        dashboard = client.get(answer.headers["location"])
        assert_in_language(dashboard, "es", "the dashboard")
        assert "Próximas ediciones" in dashboard.text and 'href="/editor/editions/1?lang=es"' in dashboard.text
        edition = client.get("/editor/editions/1?lang=es")
        assert "Edición 1: resumen semanal" in edition.text and 'name="lang" value="es"' in edition.text
