"""Every shipped message catalog (``syndication/locales/<language>/LC_MESSAGES``), of the emails (domain
``messages``) and of the web pages and feeds (domain ``web``), whatever its language: a language added later is
checked as the four shipped ones are, with no change here.

A catalog ships complete: every entry translated (English, the msgids' own language, leaves them empty), none
fuzzy, none obsolete, each placeholder of the msgid kept, as many plural forms as its header's ``Plural-Forms``
says, and exactly the entries of its template file (``messages.pot``, ``web.pot``: ``make messages`` keeps them
in step). A language is one folder holding both catalogs, so that its readers get both their
emails and their pages in it. Whether the templates mark every word they show, and whether the template files
hold what the templates and the code mark, is for ``tests/test_email_languages.py`` and
``tests/test_web_languages.py``.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from babel.messages.catalog import Catalog, Message
from babel.messages.pofile import read_po

from syndication.resources import catalog_languages, catalogs

SOURCE_LANGUAGE = "en"
FOLDER = catalogs()
DOMAINS = ("messages", "web")
SHIPPED = ("en", "es", "fr", "pt")
CATALOGS = [(domain, language) for domain in DOMAINS for language in catalog_languages(FOLDER, domain)]
PLACEHOLDER = re.compile(r"%\(\w+\)s")


def catalog(domain: str, language: str) -> Catalog:
    path = FOLDER / language / "LC_MESSAGES" / f"{domain}.po"
    with path.open("rb") as handle:
        return read_po(handle, locale=language)


def template(domain: str) -> Catalog:
    with (FOLDER / f"{domain}.pot").open("rb") as handle:
        return read_po(handle)


def key(message: Message) -> tuple[str | None, str]:
    return message.context, message.id if isinstance(message.id, str) else message.id[0]


def forms(message: Message) -> list[str]:
    strings = message.string if isinstance(message.string, list | tuple) else [message.string]
    return [string or "" for string in strings]


def test_the_four_languages_are_shipped_in_both_catalogs_and_no_language_in_one_only() -> None:
    languages = {domain: set(catalog_languages(FOLDER, domain)) for domain in DOMAINS}
    assert set(SHIPPED) <= languages["messages"]
    assert languages["messages"] == languages["web"], "a language's folder holds both catalogs"


def plural_counts(text: str) -> list[tuple[str, int]]:
    """Each plural entry of a catalog's text (as Babel writes it: entries apart by a blank line), with how many
    ``msgstr[N]`` forms it holds. Read the file itself: Babel's reader pads or cuts the forms to the header's
    count, with no more than a warning."""
    counts = []
    for block in text.split("\n\n"):
        if "\nmsgid_plural " in block and not block.lstrip().startswith("#~"):
            msgid = re.search(r"^msgid (.*)$", block, flags=re.MULTILINE)
            counts.append((msgid.group(1) if msgid else block, len(re.findall(r"^msgstr\[\d+\]", block, re.MULTILINE))))
    return counts


def problems(shipped: Catalog, language: str) -> list[str]:
    """What keeps ``shipped`` (a catalog of ``language``) from shipping, one line each."""
    entries = [message for message in shipped if message.id]
    found = [f"obsolete: {message.id!r}" for message in shipped.obsolete.values()]
    found += [f"fuzzy: {message.id!r}" for message in entries if message.fuzzy]
    if language == SOURCE_LANGUAGE:
        return found  # the msgids' own language: an empty translation is the msgid itself
    for message in entries:
        if not all(form.strip() for form in forms(message)):
            found.append(f"untranslated: {message.id!r}")
        ids = [message.id] if isinstance(message.id, str) else list(message.id)
        wanted = set(PLACEHOLDER.findall(" ".join(ids)))
        for form in forms(message):
            held = set(PLACEHOLDER.findall(form))
            # A plural form may leave out the number it words ("un artículo"); nothing else may go or come.
            if held - wanted or wanted - held - {"%(num)s", "%(count)s"} or re.search(r"%(?!\(\w+\)s|%)", form):
                found.append(f"placeholders: {message.id!r}: {form!r}")
    return found


@pytest.mark.parametrize(("domain", "language"), CATALOGS, ids=[f"{d}-{lang}" for d, lang in CATALOGS])
def test_a_shipped_catalog_is_complete_not_fuzzy_and_in_step_with_its_template(domain: str, language: str) -> None:
    shipped = catalog(domain, language)
    text = (FOLDER / language / "LC_MESSAGES" / f"{domain}.po").read_text(encoding="utf-8")
    wrong = [(msgid, count) for msgid, count in plural_counts(text) if count != shipped.num_plurals]
    assert wrong == [], f"{domain}/{language}: not the {shipped.num_plurals} plural forms of its header"
    held = {key(message) for message in shipped if message.id}
    assert held == {key(message) for message in template(domain) if message.id}, (
        f"{domain}/{language}: not in step with {domain}.pot: run `make messages`"
    )
    assert problems(shipped, language) == [], f"{domain}/{language}"


def test_the_rule_finds_what_keeps_a_catalog_from_shipping(tmp_path: Path) -> None:
    path = tmp_path / "messages.po"
    path.write_text(
        """msgid ""
msgstr ""
"Language: fr\\n"
"Plural-Forms: nplurals=2; plural=(n > 1);\\n"
"Content-Type: text/plain; charset=utf-8\\n"

msgid "Untranslated"
msgstr ""

#, fuzzy
msgid "Fuzzy"
msgstr "Flou"

#, python-format
msgid "Hello %(name)s"
msgstr "Bonjour %(nom)s"

#, python-format
msgid "%(num)s post"
msgid_plural "%(num)s posts"
msgstr[0] "un article"
msgstr[1] "%(num)s articles"
msgstr[2] "%(num)s articles"

#~ msgid "Gone"
#~ msgstr "Parti"
""",
        encoding="utf-8",
    )
    with path.open("rb") as handle:
        shipped = read_po(handle, locale="fr")
    assert problems(shipped, "fr") == [
        "obsolete: 'Gone'",
        "fuzzy: 'Fuzzy'",
        "untranslated: 'Untranslated'",
        "placeholders: 'Hello %(name)s': 'Bonjour %(nom)s'",
    ]
    assert plural_counts(path.read_text(encoding="utf-8")) == [('"%(num)s post"', 3)]  # the header says 2
