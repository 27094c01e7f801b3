"""Text stays text from the door to every reader, and a post says its language wherever it is syndicated.

A title, summary, author name or image alt given as text keeps its ``<``, ``>`` and ``&`` (written escaped, once,
in feeds and emails) and a control character in it parts two words instead of joining them; HTML is still
sanitised. A post in another language than its feed's carries ``xml:lang`` in Atom and ``dc:language`` in RSS,
as it carries ``language`` in JSON Feed.
"""

from __future__ import annotations

import email
import email.policy
import json
from datetime import timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import feedparser
import lxml.html
import pytest
from lxml import etree

from syndication.app.digests import preview_digest
from syndication.app.gathering import import_file
from syndication.app.publishing import publish_feeds
from syndication.app.service import Service
from syndication.sources.cleaning import html_to_text, plain_text
from syndication.sources.normalise import Vocabulary, build_post
from tests.support import NOW, post_record, write_jsonl
from tests.test_feeds import atom_schema

ATOM = "{http://www.w3.org/2005/Atom}"
DC_LANGUAGE = "{http://purl.org/dc/elements/1.1/}language"
XML_LANG = "{http://www.w3.org/XML/1998/namespace}lang"

TEXT = "Ampersands & angle <brackets>"  # the summary, which came out as "Ampersands & angle"


# --- The cleaning functions --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (TEXT, TEXT),
        ("&amp; is text here, not a reference", "&amp; is text here, not a reference"),
        ("Control\x07chars", "Control chars"),
        ("NUL\x00DEL\x7fC1\x9dend", "NUL DEL C1 end"),
        ("  tab\tand\r\nline\u2028breaks \x0b ", "tab and line breaks"),
        ("bidi\u202eoverride", "bidioverride"),  # a control of direction, not of text: it goes
        ("lone\ud800surrogate\uffff", "lonesurrogate"),  # not characters at all: they go
    ],
)
def test_plain_text_keeps_the_text_and_parts_words_at_controls(given: str, expected: str) -> None:
    assert plain_text(given) == expected


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("Ampersands &amp; angle &lt;brackets&gt;", TEXT),
        ("Caf&eacute; &amp; more", "Café & more"),
        ("&amp;lt;b&amp;gt; is read once", "&lt;b&gt; is read once"),
        ("<p>Control\x07chars</p><p>and a <em>second</em> paragraph</p>", "Control chars and a second paragraph"),
        ("Control\x07chars without markup", "Control chars without markup"),
    ],
)
def test_html_to_text_reads_references_once_and_parts_words_at_controls(given: str, expected: str) -> None:
    assert html_to_text(given) == expected


def test_the_shared_normalisation_keeps_text_fields_as_text_and_still_sanitises_html() -> None:
    item = post_record(
        1,
        title=f"{TEXT} Control\x07chars",
        summary=f"{TEXT}\x1fControl\x07chars",
        authors=["Tom & <Jerry>\x07Smith"],
        image={"url": "https://news.example.org/a.png", "alt": "a < b & c\x07d"},
        content_html='<p onclick="x()">Body &amp; <b>bold</b></p><script>alert(1)</script>',
    )
    post = build_post(item, "line 1", Vocabulary(themes=())).post
    assert post.title == "Ampersands & angle <brackets> Control chars"
    assert post.summary == "Ampersands & angle <brackets> Control chars"
    assert [author.name for author in post.authors] == ["Tom & <Jerry> Smith"]
    assert post.image is not None and post.image.alt == "a < b & c d"
    assert post.content_html == "<p>Body &amp; <b>bold</b></p>"


def test_a_control_character_in_a_url_or_guid_still_goes_without_a_space() -> None:
    # Identifiers are not text: a space would make the URL invalid and the guid another post's.
    item = post_record(1, url="https://news.example.org/po\x07sts/1", guid="urn:test:\x07one")
    post = build_post(item, "line 1", Vocabulary(themes=())).post
    assert (post.url, post.guid) == ("https://news.example.org/posts/1", "urn:test:one")


# --- Out to the readers: feeds and the digest ---------------------------------------------------------------------


@pytest.fixture
def mixed(service: Service, tmp_path: Path) -> Service:
    """A store with a post of hostile text, one in Brazilian Portuguese and one whose tag differs only in case."""
    records = [
        post_record(
            1,
            title=f"{TEXT} Control\x07chars",
            summary=f"{TEXT} Control\x07chars",
            authors=["Tom & <Jerry>"],
            image={"url": "https://cdn.example.org/a.png", "alt": "a < b & c"},
            published="2024-05-23T10:00:00Z",  # the newest: the preheader shows it
        ),
        post_record(2, title="Ônibus elétricos em São Paulo", language="pt_BR", published="2024-05-21T10:00:00Z"),
        post_record(3, title="Same language", language="EN", published="2024-05-22T10:00:00Z"),
    ]
    report = import_file(service, write_jsonl(tmp_path / "mixed.jsonl", records))
    assert report.added == 3 and not report.rejections
    return service


TITLE = "Ampersands & angle <brackets> Control chars"


@pytest.fixture
def feeds(mixed: Service, tmp_path: Path) -> Path:
    directory = tmp_path / "feeds"
    publish_feeds(mixed, directory)
    return directory


def _by_title(elements: list[Any], path: str) -> dict[str, Any]:
    return {element.findtext(path): element for element in elements}


def test_feeds_carry_the_text_escaped_once(feeds: Path) -> None:
    atom = etree.parse(str(feeds / "all.atom")).getroot()
    entry = _by_title(atom.findall(f"{ATOM}entry"), f"{ATOM}title")[TITLE]
    assert entry.findtext(f"{ATOM}summary") == TITLE
    assert entry.findtext(f"{ATOM}author/{ATOM}name") == "Tom & <Jerry>"
    rss = etree.parse(str(feeds / "all.rss")).getroot()
    item = _by_title(rss.findall("channel/item"), "title")[TITLE]
    assert item.findtext("description") == TITLE
    raw = (feeds / "all.atom").read_text(encoding="utf-8")
    assert "Ampersands &amp; angle &lt;brackets&gt;" in raw and "&amp;amp;" not in raw
    for name in ("all.rss", "all.atom"):
        parsed = feedparser.parse((feeds / name).read_bytes())
        assert not parsed.bozo, parsed.get("bozo_exception")
        assert TITLE in [entry.title for entry in parsed.entries]
    items = {item["title"]: item for item in json.loads((feeds / "all.json").read_bytes())["items"]}
    assert items[TITLE]["summary"] == TITLE


def test_the_digest_carries_the_text_escaped_once(mixed: Service) -> None:
    preview = preview_digest(mixed, since=NOW - timedelta(days=30), until=NOW)
    assert preview is not None
    message = email.message_from_bytes(preview.message, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    html_part, text_part = message.get_body(("html",)), message.get_body(("plain",))
    assert html_part is not None and text_part is not None
    page = lxml.html.document_fromstring(html_part.get_content())
    titles = [link.text_content() for link in page.find_class("post-title")]
    assert TITLE in titles
    assert TITLE in [summary.text_content() for summary in page.find_class("post-summary")]
    assert "a < b & c" in [image.get("alt") for image in page.iter("img")]
    assert any("Tom & <Jerry>" in meta.text_content() for meta in page.find_class("post-meta"))
    text = text_part.get_content()
    assert {f"* {TITLE}", f"  {TITLE}"} <= set(text.splitlines())
    assert "&amp;" not in text and "&lt;" not in text
    assert TITLE in preview.email.preheader


# --- A post's language in Atom and RSS ----------------------------------------------------------------------------


def test_every_entry_says_its_language_in_atom_and_rss(feeds: Path) -> None:
    # A feed may mix languages (issue 19): each entry carries its own, the feed's included.
    atom = etree.parse(str(feeds / "all.atom"))
    entries = _by_title(atom.getroot().findall(f"{ATOM}entry"), f"{ATOM}title")
    assert entries["Ônibus elétricos em São Paulo"].get(XML_LANG) == "pt-BR"
    assert [entries[title].get(XML_LANG) for title in (TITLE, "Same language")] == ["en", "en"]
    assert atom_schema().validate(atom), atom_schema().error_log.last_error
    parsed = feedparser.parse((feeds / "all.atom").read_bytes())
    languages = {entry.title: entry.title_detail.language for entry in parsed.entries}
    assert languages == {"Ônibus elétricos em São Paulo": "pt-BR", TITLE: "en", "Same language": "en"}

    rss = etree.parse(str(feeds / "all.rss")).getroot()
    assert rss.findtext("channel/language") == "en"
    items = _by_title(rss.findall("channel/item"), "title")
    assert [element.text for element in items["Ônibus elétricos em São Paulo"].iter(DC_LANGUAGE)] == ["pt-BR"]
    assert [[e.text for e in items[title].iter(DC_LANGUAGE)] for title in (TITLE, "Same language")] == [["en"], ["en"]]
    parsed = feedparser.parse((feeds / "all.rss").read_bytes())
    assert not parsed.bozo
    assert {entry.title: entry.get("language") for entry in parsed.entries} == {
        "Ônibus elétricos em São Paulo": "pt-BR",
        TITLE: "en",
        "Same language": "en",
    }
    items_json = json.loads((feeds / "all.json").read_bytes())["items"]
    assert {item["title"]: item["language"] for item in items_json}["Ônibus elétricos em São Paulo"] == "pt-BR"
