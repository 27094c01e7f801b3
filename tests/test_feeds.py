"""Feeds built from a store of hostile content: valid for every reader, complete, deterministic, with history."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from datetime import timedelta
from email.utils import parsedate_to_datetime
from functools import cache
from pathlib import Path
from typing import Any

import feedparser
import pytest
import rnc2rng
from lxml import etree

from syndication import resources
from syndication.app.gathering import import_file
from syndication.app.posts import delete_posts
from syndication.app.publishing import publish_feeds
from syndication.app.service import Service, init_store
from syndication.cli import main
from syndication.clock import fixed_clock
from syndication.config import Settings, load_settings
from syndication.core.languages import canonical_tag
from syndication.core.models import Author, Post, Region, Theme
from syndication.feeds import build as feed_build
from syndication.feeds.build import FeedBuildReport, feed_words
from syndication.feeds.catalog import FeedDocument, Site, feeds_of
from syndication.feeds.directory import render_index, render_opml
from syndication.feeds.json_feed import render_json
from syndication.feeds.rss_atom import atom_id
from tests.golden import check_golden
from tests.recorded import Reply, serving
from tests.support import NOW, post_record, write_config, write_jsonl

ATOM = "{http://www.w3.org/2005/Atom}"
HISTORY = "{http://purl.org/syndication/history/1.0}"
DC = "{http://purl.org/dc/elements/1.1/}"
XML_LANG = "{http://www.w3.org/XML/1998/namespace}lang"
SCHEMA = Path(__file__).resolve().parent / "schemas" / "atom.rnc"

HOSTILE_TITLE = 'Climate & <Cities> "quoted" in Malmö'


def hostile_records() -> list[dict[str, Any]]:
    """Posts a real network publishes, and what a careless or hostile source sends."""
    return [
        post_record(
            1,
            title=HOSTILE_TITLE,
            url="https://news.example.org/posts/malmo",
            content_html=(
                '<p onclick="steal()">Read <a href="/about">about</a><script>alert(1)</script>'
                '<img src="img/a.png" alt="A"> &amp; more</p><iframe src="https://evil.example"></iframe>'
            ),
            themes=["climate-action", "resilience"],
            authors=["Ana Pérez", "北九州市"],
            regions=["europe", "east-asia"],
            image={"url": "/img/lead.png", "alt": "Lead"},
            published="2024-05-10T08:00:00+02:00",
        ),
        post_record(
            2,
            title="São Paulo 🌍 electric buses",
            language="pt",
            themes=["climate-action"],
            published="2024-05-11T09:00:00Z",
            regions=["latin-america"],
        ),
        post_record(3, title="Tab\tand\x07bell \x0b and\r\nbreak", published="2024-05-12T09:00:00Z"),
        post_record(4, title="From the future", published="2024-09-01T00:00:00Z"),
        post_record(5, title="No theme at all", themes=[], published="2024-05-13T09:00:00Z"),
        post_record(
            6,
            guid="12345",
            title="Guid is not a URL",
            published="2024-05-14T09:00:00Z",
            themes=["circular-economy"],
            content_html=None,
            summary="Only a summary.",
        ),
        post_record(
            7,
            title="北九州市 plastics",
            themes=["circular-economy", "climate-action"],
            published="2024-05-15T09:00:00Z",
            regions=["east-asia"],
            authors=["北九州市"],
        ),
    ]


@cache
def atom_schema() -> etree.RelaxNG:
    # rnc2rng declares the empty namespace as a prefix, which XML forbids; RELAX NG names it by ns="" anyway.
    grammar = rnc2rng.dumps(rnc2rng.load(str(SCHEMA))).replace('xmlns:local=""', "")
    return etree.RelaxNG(etree.fromstring(grammar.encode()))


def build(service: Service, directory: Path, **kwargs: Any) -> FeedBuildReport:
    return publish_feeds(service, directory, **kwargs)


@pytest.fixture
def hostile(service: Service, tmp_path: Path) -> Service:
    report = import_file(service, write_jsonl(tmp_path / "hostile.jsonl", hostile_records()))
    assert report.added == 7 and not report.rejections
    return service


@pytest.fixture
def built(hostile: Service, tmp_path: Path) -> Path:
    directory = tmp_path / "feeds"
    build(hostile, directory)
    return directory


def documents(directory: Path, suffix: str) -> list[Path]:
    return sorted(path for path in directory.rglob(f"*{suffix}") if not path.name.startswith("."))


def test_every_feed_exists_in_every_format(built: Path) -> None:
    expected = ["all", "themes/climate-action", "themes/resilience", "themes/circular-economy",
                "regions/europe", "regions/east-asia", "regions/latin-america", "authors/ana-perez"]  # fmt: skip
    for path in expected:
        for fmt in ("rss", "atom", "json"):
            assert (built / f"{path}.{fmt}").is_file(), f"{path}.{fmt}"
    assert (built / "feeds.opml").is_file() and (built / "index.html").is_file()
    authors = {p.stem for p in (built / "authors").glob("*.atom")}
    assert len(authors) == 2  # Ana Pérez and 北九州市, whose slug is made of code points
    assert "ana-perez" in authors


def test_every_xml_feed_parses_without_bozo_and_atom_validates(built: Path) -> None:
    schema = atom_schema()
    xml = documents(built, ".rss") + documents(built, ".atom")
    assert len(xml) == 22  # site, 3 themes, 3 regions, 2 authors, 2 languages; RSS and Atom each
    for path in xml:
        parsed = feedparser.parse(path.read_bytes())
        assert not parsed.bozo, f"{path}: {parsed.get('bozo_exception')}"
        if path.suffix == ".atom":
            assert schema.validate(etree.parse(str(path))), f"{path}: {schema.error_log.last_error}"


def test_the_schema_check_can_fail(built: Path) -> None:
    tree = etree.parse(str(built / "all.atom"))
    entry = tree.getroot().find(f"{ATOM}entry")
    assert entry is not None
    entry.remove(entry.find(f"{ATOM}id"))
    assert not atom_schema().validate(tree)


def test_rss_meets_the_rss_2_spec(built: Path) -> None:
    for path in documents(built, ".rss"):
        channel = etree.parse(str(path)).getroot().find("channel")
        assert channel is not None
        for required in ("title", "link", "description"):
            assert (channel.findtext(required) or "").strip(), f"{path}: channel {required}"
        parsedate_to_datetime(channel.findtext("lastBuildDate") or "")
        for item in channel.findall("item"):
            assert item.findtext("title") or item.findtext("description")
            guids = item.findall("guid")
            assert len(guids) == 1
            permalink = guids[0].get("isPermaLink")
            assert permalink == ("true" if guids[0].text == item.findtext("link") else "false")
            assert parsedate_to_datetime(item.findtext("pubDate") or "").tzinfo is not None


def test_hostile_text_arrives_as_readers_expect(built: Path) -> None:
    for name in ("all.rss", "all.atom"):
        parsed = feedparser.parse((built / name).read_bytes())
        titles = [entry.title for entry in parsed.entries]
        assert HOSTILE_TITLE in titles
        assert "São Paulo 🌍 electric buses" in titles
        assert "北九州市 plastics" in titles
        assert "Tab and bell and break" in titles  # control characters and line breaks become spaces
        hostile = next(entry for entry in parsed.entries if entry.title == HOSTILE_TITLE)
        content = hostile.content[0].value
        for forbidden in ("<script", "onclick", "iframe", "alert("):
            assert forbidden not in content
        assert 'href="https://news.example.org/about"' in content
        assert 'src="https://news.example.org/posts/img/a.png"' in content
        assert "&amp; more" in content  # escaped once: a reader shows "& more"
    feed = json.loads((built / "all.json").read_bytes())
    assert HOSTILE_TITLE in [item["title"] for item in feed["items"]]
    raw = (built / "all.atom").read_text(encoding="utf-8")
    assert "Climate &amp; &lt;Cities&gt;" in raw and "&amp;amp;" not in raw.replace("&amp;amp; more", "")


def test_future_posts_never_appear(built: Path) -> None:
    for path in documents(built, ".rss") + documents(built, ".atom") + documents(built, ".json"):
        assert "From the future" not in path.read_text(encoding="utf-8"), path


def test_items_carry_authors_categories_dates_images_and_stable_ids(built: Path) -> None:
    atom = feedparser.parse((built / "all.atom").read_bytes())
    hostile = next(entry for entry in atom.entries if entry.title == HOSTILE_TITLE)
    assert [author.name for author in hostile.authors] == ["Ana Pérez", "北九州市"]
    assert [(tag.term, tag.label) for tag in hostile.tags] == [("climate-action", "Climate action"),
                                                               ("resilience", "Resilience")]  # fmt: skip
    assert hostile.id == "urn:test:post:1"
    assert hostile.published == "2024-05-10T06:00:00+00:00"
    assert hostile.enclosures[0].href == "https://news.example.org/img/lead.png"
    assert hostile.enclosures[0].type == "image/png"
    guid_only = next(entry for entry in atom.entries if entry.title == "Guid is not a URL")
    assert guid_only.id == "urn:syndication:guid:12345"
    rss_items = etree.parse(str(built / "all.rss")).getroot().findall("channel/item")
    hostile_item = next(item for item in rss_items if item.findtext("title") == HOSTILE_TITLE)
    assert [c.text for c in hostile_item.findall(f"{DC}creator")] == ["Ana Pérez", "北九州市"]
    assert hostile_item.find("enclosure").get("type") == "image/png"
    assert [c.text for c in hostile_item.findall("category")] == ["Climate action", "Resilience"]
    feed = json.loads((built / "all.json").read_bytes())
    item = next(i for i in feed["items"] if i["title"] == HOSTILE_TITLE)
    assert item["authors"] == [{"name": "Ana Pérez"}, {"name": "北九州市"}]
    assert item["tags"] == ["Climate action", "Resilience"]
    assert item["image"] == "https://news.example.org/img/lead.png"
    assert feed["version"] == "https://jsonfeed.org/version/1.1"


def test_feed_level_metadata_and_dates_come_from_the_newest_item(built: Path) -> None:
    atom = feedparser.parse((built / "themes/circular-economy.atom").read_bytes())
    assert atom.feed.title == "Test Network: Circular economy"
    links = {link.rel: link.href for link in atom.feed.links}
    assert links["self"] == "https://news.example.org/feeds/themes/circular-economy.atom"
    assert links["alternate"] == "https://news.example.org/"
    assert atom.feed.updated == "2024-05-15T09:00:00+00:00"  # the newest item's date, not the build's
    assert atom.feed.language == "en"
    channel = etree.parse(str(built / "themes/circular-economy.rss")).getroot().find("channel")
    assert channel is not None
    assert channel.findtext("link") == "https://news.example.org/"
    assert parsedate_to_datetime(channel.findtext("lastBuildDate") or "") == NOW.replace(month=5, day=15, hour=9)
    self_link = channel.find(f"{ATOM}link[@rel='self']")
    assert self_link is not None and self_link.get("href", "").endswith("/feeds/themes/circular-economy.rss")
    assert [e.title for e in atom.entries] == ["北九州市 plastics", "Guid is not a URL"]


def test_multi_theme_post_is_in_each_theme_feed(built: Path) -> None:
    for theme in ("climate-action", "resilience"):
        titles = [e.title for e in feedparser.parse((built / f"themes/{theme}.atom").read_bytes()).entries]
        assert HOSTILE_TITLE in titles
    assert "No theme at all" not in (built / "themes/climate-action.atom").read_text(encoding="utf-8")


def test_summary_mode_leaves_content_out(hostile: Service, tmp_path: Path) -> None:
    settings = hostile.settings.model_copy(
        update={"feeds": hostile.settings.feeds.model_copy(update={"content": "summary"})}
    )
    service = Service(settings, hostile.engine, hostile.clock)
    directory = tmp_path / "summary"
    build(service, directory)
    parsed = feedparser.parse((directory / "all.atom").read_bytes())
    assert all("content" not in entry for entry in parsed.entries)
    assert all("content_html" not in item for item in json.loads((directory / "all.json").read_bytes())["items"])


def test_building_twice_is_byte_identical_and_writes_nothing(hostile: Service, tmp_path: Path) -> None:
    first, second = tmp_path / "one", tmp_path / "two"
    build(hostile, first)
    build(hostile, second, full=True)
    names = [p.relative_to(first) for p in first.rglob("*") if p.is_file() and p.name != "manifest.json"]
    assert names
    for name in names:
        assert (first / name).read_bytes() == (second / name).read_bytes(), name
    again = build(hostile, first)
    assert not again.full and again.written == [] and again.feeds == 0


def test_each_language_has_a_feed_of_exactly_its_posts_and_every_entry_says_its_language(
    hostile: Service, tmp_path: Path
) -> None:
    more = [post_record(90, title="Resumen en español", language="es", published="2024-05-20T00:00:00Z"),
            post_record(91, title="Notícias", language="pt_br", published="2024-05-21T00:00:00Z"),
            post_record(92, title="Mais notícias", language="PT-BR", published="2024-05-22T00:00:00Z")]  # fmt: skip
    import_file(hostile, write_jsonl(tmp_path / "languages.jsonl", more))
    directory = tmp_path / "feeds"
    build(hostile, directory)
    published = [r for r in [*hostile_records(), *more] if r["title"] != "From the future"]
    by_language: dict[str, set[str]] = {}
    for record in published:
        by_language.setdefault(canonical_tag(record.get("language") or "en"), set()).add(record["guid"])
    assert by_language["pt-BR"] == {more[1]["guid"], more[2]["guid"]}  # one language whatever the tag's case
    for tag, guids in by_language.items():
        atom = etree.parse(str(directory / f"languages/{tag.lower()}.atom")).getroot()
        assert set(entry_ids(atom)) == {atom_id(guid) for guid in guids}, tag
        assert {entry.get(XML_LANG) for entry in atom.findall(f"{ATOM}entry")} == {tag}
        items = json.loads((directory / f"languages/{tag.lower()}.json").read_bytes())["items"]
        assert {item["id"] for item in items} == guids and {item["language"] for item in items} == {tag}
    rss = etree.parse(str(directory / "all.rss")).getroot()
    items = rss.findall("channel/item")
    assert len(items) == len(published) and all(item.findtext(f"{DC}language") for item in items)
    spanish = json.loads((directory / "languages/es.json").read_bytes())
    # A language's feed is named and described in that language, and says it is written in it.
    assert spanish["title"].endswith(": Español") and spanish["language"] == "es"
    assert spanish["description"].startswith("Artículos de ") and spanish["description"].endswith(" en español.")
    assert etree.parse(str(directory / "languages/es.atom")).getroot().get(XML_LANG) == "es"
    opml = (directory / "feeds.opml").read_text(encoding="utf-8")
    assert 'text="Languages"' in opml and "languages/pt-br.atom" in opml


def test_a_sites_feeds_and_their_lists_are_worded_in_its_language_and_a_language_feed_in_its_own() -> None:
    theme = Theme("climate-action", "Acción climática", names=(("en", "Climate action"), ("fr", "Action climatique")))
    site = Site("Red", "https://news.example.org", "es", (theme,), (Region("europe", "Europa"),), full_content=False)
    feeds = {feed.path: feed for feed in feeds_of(site, [Author("ana", "Ana")], ["fr", "ko"], feed_words)}
    assert [feeds[path].description for path in ("all", "themes/climate-action", "regions/europe", "authors/ana")] == [
        "Todo lo que publica Red.", "Acción climática: artículos de Red.", "Artículos de Red sobre Europa.",
        "Artículos de Ana en Red.",
    ]  # fmt: skip
    french, korean = feeds["languages/fr"], feeds["languages/ko"]
    assert (french.title, french.description) == ("Red: Français", "Articles de Red en français.")
    # No catalog of Korean: its feed is described in the site's language.
    assert (korean.title, korean.description) == ("Red: 한국어", "Artículos de Red en coreano.")
    entry = Post("g1", "Titre", "https://news.example.org/p/1", "", "", NOW, NOW, "fr", themes=("climate-action",))
    document = FeedDocument(site, french, "json", [entry], NOW)
    json_feed = json.loads(render_json(document))
    assert json_feed["language"] == "fr" and json_feed["items"][0]["tags"] == ["Action climatique"]  # as Atom's labels
    everything = json.loads(render_json(FeedDocument(site, feeds["all"], "json", [entry], NOW)))
    assert everything["language"] == "es" and everything["items"][0]["tags"] == ["Acción climática"]
    # The index page and the OPML list: in the site's language, its lang said.
    words = feed_words("es")
    assert words is not None
    index = render_index(site, list(feeds.values()), None, words).decode("utf-8")
    assert '<html lang="es">' in index and "<title>Red: feeds</title>" in index and "Sigue todo, o solo" in index
    assert "<h2>Temas</h2>" in index and "<h2>Idiomas</h2>" in index and "Follow" not in index
    opml = render_opml(site, list(feeds.values()), NOW, words).decode("utf-8")
    assert "<title>Red: feeds</title>" in opml and 'text="Regiones"' in opml and 'text="Todo"' in opml


def test_every_author_has_a_feed_of_their_own_under_a_slug_that_never_moves(service: Service, tmp_path: Path) -> None:
    names = ["ICLEI 한국사무소", "ICLEI 日本", "ICLEI Europe", "São Paulo", "Sao Paulo"]
    records = [post_record(100 + i, authors=[name]) for i, name in enumerate(names)]
    import_file(service, write_jsonl(tmp_path / "authors.jsonl", records))
    directory = tmp_path / "feeds"
    build(service, directory)
    slugs = {}
    for record in records:
        (author_feed,) = [path for path in (directory / "authors").glob("*.atom")
                          if record["guid"] in entry_ids(etree.parse(str(path)).getroot())]  # fmt: skip
        assert entry_ids(etree.parse(str(author_feed)).getroot()) == [record["guid"]]  # their posts only
        slugs[record["authors"][0]] = author_feed.stem
    assert len(set(slugs.values())) == len(names)  # two different names, two feeds
    assert slugs["ICLEI 한국사무소"] == "iclei-hangugsamuso" and slugs["ICLEI 日本"] == "iclei-ri-ben"
    assert slugs["São Paulo"] == "sao-paulo" and slugs["Sao Paulo"].startswith("sao-paulo-")
    # The same names again, in another order and another case: the same authors, the same slugs.
    again = [post_record(200 + i, authors=[name.upper()]) for i, name in enumerate(reversed(names))]
    import_file(service, write_jsonl(tmp_path / "again.jsonl", again))
    build(service, directory, full=True)
    assert sorted(path.stem for path in (directory / "authors").glob("*.atom")) == sorted(slugs.values())


def test_opml_and_index_list_every_feed(built: Path) -> None:
    opml = etree.parse(str(built / "feeds.opml")).getroot()
    assert opml.get("version") == "2.0"
    urls = {o.get("xmlUrl") for o in opml.iter("outline") if o.get("xmlUrl")}
    atoms = {f"https://news.example.org/feeds/{p.relative_to(built).as_posix()}" for p in documents(built, ".atom")}
    assert urls == atoms
    index = (built / "index.html").read_text(encoding="utf-8")
    assert 'rel="alternate" type="application/atom+xml"' in index
    assert 'href="https://news.example.org/feeds/themes/resilience.rss"' in index


# --- History: RFC 5005 archived feeds -------------------------------------------------------------------------


def small_pages(service: Service, items: int = 3, page: int = 3) -> Service:
    feeds = service.settings.feeds.model_copy(update={"items": items, "archive_page_size": page})
    return Service(service.settings.model_copy(update={"feeds": feeds}), service.engine, service.clock)


def walk_history(directory: Path, start: str) -> Iterator[tuple[str, etree._Element]]:
    """Follow prev-archive links from a subscription document, as a backfilling reader does: (path, root)."""
    path: str | None = start
    while path:
        root = etree.parse(str(directory / path)).getroot()
        yield path, root
        prev = root.find(f"{ATOM}link[@rel='prev-archive']")
        path = prev.get("href", "").removeprefix("https://news.example.org/feeds/") if prev is not None else None


def entry_ids(root: etree._Element) -> list[str]:
    """The ids of an Atom document's entries, in document order."""
    return [entry.findtext(f"{ATOM}id") or "" for entry in root.findall(f"{ATOM}entry")]


def test_archives_hold_the_whole_history_once(hostile: Service, tmp_path: Path) -> None:
    service = small_pages(hostile)
    directory = tmp_path / "feeds"
    build(service, directory)
    chain = list(walk_history(directory, "all.atom"))
    # Six published posts: the subscription document keeps the newest three (items), one page holds the rest.
    assert [len(entry_ids(root)) for _, root in chain] == [3, 3]
    ids = [entry for _, root in chain for entry in entry_ids(root)]
    published = [r["guid"] if r["guid"] != "12345" else "urn:syndication:guid:12345" for r in hostile_records()
                 if r["title"] != "From the future"]  # fmt: skip
    assert sorted(ids) == sorted(published)  # every post in exactly one document of the chain
    (page_path, page), (_, subscription) = chain[1], chain[0]
    assert page_path == "archive/all/first.atom"
    assert page.find(f"{HISTORY}archive") is not None and subscription.find(f"{HISTORY}archive") is None
    links = {link.get("rel"): link.get("href") for link in page.findall(f"{ATOM}link")}
    assert links["current"] == links["next-archive"] == "https://news.example.org/feeds/all.atom"
    assert "prev-archive" not in links  # the oldest page
    rss = etree.parse(str(directory / "archive/all/first.rss")).getroot().find("channel")
    assert rss is not None and rss.find(f"{HISTORY}archive") is not None
    assert rss.find(f"{ATOM}link[@rel='next-archive']").get("href").endswith("/feeds/all.rss")
    assert json.loads((directory / "all.json").read_bytes())["next_url"].endswith("/archive/all/first.json")
    manifest = json.loads((directory / "manifest.json").read_bytes())
    assert all("immutable" not in entry for entry in manifest["documents"].values())  # every page may change


def test_one_new_post_rewrites_only_what_it_changes(hostile: Service, tmp_path: Path) -> None:
    service = small_pages(hostile)
    directory = tmp_path / "feeds"
    build(service, directory)
    full_page = (directory / "archive/all/first.atom").read_bytes()
    untouched = (directory / "themes/circular-economy.atom").read_bytes()
    later = Service(service.settings, service.engine, fixed_clock(NOW + timedelta(hours=1)))
    record = post_record(50, title="Fresh resilience news", themes=["resilience"], authors=["Bo Li"],
                         regions=["europe"], published="2024-05-31T00:00:00Z")  # fmt: skip
    import_file(later, write_jsonl(tmp_path / "new.jsonl", [record]))
    report = build(later, directory)
    assert not report.full
    expected = {f"{path}.{fmt}" for path in ("all", "themes/resilience", "regions/europe", "authors/bo-li")
                for fmt in ("rss", "atom", "json")}  # fmt: skip
    assert expected <= set(report.written)
    assert not any(path.startswith("archive/all/") for path in report.written)  # four in the subscription: no cut
    assert not any(path.startswith("themes/circular-economy") for path in report.written)
    assert (directory / "archive/all/first.atom").read_bytes() == full_page
    assert (directory / "themes/circular-economy.atom").read_bytes() == untouched
    assert "Fresh resilience news" in (directory / "all.atom").read_text(encoding="utf-8")


def test_a_subscription_document_a_page_too_long_gives_its_oldest_page_to_the_archive(
    hostile: Service, tmp_path: Path
) -> None:
    service = small_pages(hostile)
    directory = tmp_path / "feeds"
    build(service, directory)
    later = Service(service.settings, service.engine, fixed_clock(NOW + timedelta(hours=1)))
    records = [post_record(60 + i, title=f"Filler {i}", published=f"2024-05-2{i}T00:00:00Z") for i in range(3)]
    import_file(later, write_jsonl(tmp_path / "more.jsonl", records))
    report = build(later, directory)
    chain = list(walk_history(directory, "all.atom"))
    assert [len(entry_ids(root)) for _, root in chain] == [3, 3, 3]
    new_page = chain[1][0]
    assert new_page in report.written and "archive/all/first.atom" in report.written  # its next-archive changed
    first = {link.get("rel"): link.get("href") for link in chain[2][1].findall(f"{ATOM}link")}
    assert first["next-archive"] == f"https://news.example.org/feeds/{new_page}"


def manifest_entry(directory: Path, path: str) -> dict[str, Any]:
    """The builder's manifest entry of ``path``."""
    entry: dict[str, Any] = json.loads((directory / "manifest.json").read_bytes())["documents"][path]
    return entry


def test_last_modified_is_when_the_bytes_changed_not_a_post_date(hostile: Service, tmp_path: Path) -> None:
    directory = tmp_path / "feeds"
    build(hostile, directory)
    first = manifest_entry(directory, "all.atom")
    assert parsedate_to_datetime(first["last_modified"]) == NOW.replace(microsecond=0)  # the build's time
    # A post back-dated a year changes the feed: Last-Modified is the second build's time, not the post's date,
    # so a reader that sends its last fetch time as If-Modified-Since hears of it.
    later = Service(hostile.settings, hostile.engine, fixed_clock(NOW + timedelta(days=2)))
    import_file(later, write_jsonl(tmp_path / "old.jsonl", [post_record(80, published="2023-05-01T00:00:00Z")]))
    build(later, directory)
    second = manifest_entry(directory, "all.atom")
    assert second["etag"] != first["etag"]
    assert parsedate_to_datetime(second["last_modified"]) == (NOW + timedelta(days=2)).replace(microsecond=0)
    untouched = manifest_entry(directory, "themes/circular-economy.atom")
    assert parsedate_to_datetime(untouched["last_modified"]) == NOW.replace(microsecond=0)  # bytes unchanged


def test_an_empty_feed_keeps_its_bytes_when_other_feeds_change(hostile: Service, tmp_path: Path) -> None:
    quiet = hostile.settings.themes[0].model_copy(update={"slug": "quiet", "name": "Quiet", "aliases": ()})
    settings = hostile.settings.model_copy(update={"themes": [*hostile.settings.themes, quiet]})
    hostile = Service(settings, hostile.engine, hostile.clock)
    directory = tmp_path / "feeds"
    build(hostile, directory)
    empty = [path for path in json.loads((directory / "manifest.json").read_bytes())["documents"]
             if path.endswith(".atom") and not feedparser.parse((directory / path).read_bytes()).entries]  # fmt: skip
    assert empty  # a configured theme no post is on yet
    before = {path: (directory / path).read_bytes() for path in empty}
    later = Service(hostile.settings, hostile.engine, fixed_clock(NOW + timedelta(hours=1)))
    import_file(later, write_jsonl(tmp_path / "new.jsonl", [post_record(81, published="2024-05-31T00:00:00Z")]))
    report = build(later, directory, full=True)
    assert "all.atom" in report.written
    assert {path: (directory / path).read_bytes() for path in empty} == before


def test_a_deleted_post_leaves_every_document_and_nothing_else_does(
    config_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--config", str(config_path), "init"]) == 0
    records = [post_record(n, themes=["resilience"], authors=["Bo Li"]) for n in range(1, 25)]
    write_jsonl(tmp_path / "p.jsonl", records)
    assert main(["--config", str(config_path), "import", str(tmp_path / "p.jsonl")]) == 0
    out = tmp_path / "out"
    assert main(["--config", str(config_path), "feeds", "build", "--out", str(out)]) == 0
    gone = records[0]["guid"]
    assert main(["--config", str(config_path), "posts", "delete", gone, "urn:test:no-such-post"]) == 1
    assert "1 posts deleted; 1 not found" in capsys.readouterr().out
    assert main(["--config", str(config_path), "feeds", "build", "--out", str(out)]) == 0
    for path in sorted(out.rglob("*.atom")):
        assert gone not in entry_ids(etree.parse(str(path)).getroot()), path
    for start in ("all.atom", "themes/resilience.atom", "authors/bo-li.atom"):
        kept = [entry for _, root in walk_history(out, start) for entry in entry_ids(root)]
        assert sorted(kept) == sorted(r["guid"] for r in records[1:])


def test_a_post_coming_of_age_enters_the_feeds(hostile: Service, tmp_path: Path) -> None:
    directory = tmp_path / "feeds"
    build(hostile, directory)
    when_published = Service(hostile.settings, hostile.engine, fixed_clock(NOW.replace(month=9, day=2)))
    report = build(when_published, directory)
    assert "all.atom" in report.written
    assert "From the future" in (directory / "all.atom").read_text(encoding="utf-8")


def test_a_document_that_cannot_be_written_fails_the_build_and_keeps_the_manifest(
    hostile: Service, tmp_path: Path
) -> None:
    directory = tmp_path / "feeds"
    build(hostile, directory)
    manifest = (directory / "manifest.json").read_bytes()
    # A folder where a document goes: renaming the new file over it fails, as a full disk or a lost permission would.
    (directory / "all.json").unlink()
    (directory / "all.json").mkdir()
    later = Service(hostile.settings, hostile.engine, fixed_clock(NOW + timedelta(hours=1)))
    import_file(later, write_jsonl(tmp_path / "new.jsonl", [post_record(70, published="2024-05-31T00:00:00Z")]))
    with pytest.raises(IsADirectoryError):
        build(later, directory)
    assert (directory / "manifest.json").read_bytes() == manifest  # the next build starts from the last good one
    assert not list(directory.rglob("*.tmp"))
    (directory / "all.json").rmdir()
    build(later, directory)
    assert "all.json" in json.loads((directory / "manifest.json").read_bytes())["documents"]
    assert json.loads((directory / "all.json").read_bytes())["items"][0]["id"] == post_record(70)["guid"]


# --- A build with nothing to do --------------------------------------------------------------------------------
# It stops before naming a feed when what the last build's documents follow from is the same (``_quiet_key``);
# each thing that key watches must still make the next build rewrite what it changed.


def with_settings(service: Service, **sections: Any) -> Service:
    return Service(service.settings.model_copy(update=sections), service.engine, service.clock)


def test_a_build_with_nothing_to_do_stops_before_naming_feeds_and_full_still_rebuilds(
    hostile: Service, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    directory = tmp_path / "feeds"
    first = build(hostile, directory)
    manifest = (directory / "manifest.json").read_bytes()

    def named(*args: object, **kwargs: object) -> None:
        raise AssertionError("a build with nothing to do named the feeds")

    with monkeypatch.context() as patched:
        patched.setattr(feed_build, "feeds_of", named)
        again = build(hostile, directory)
    assert (again.full, again.feeds, again.written, again.unchanged) == (False, 0, [], 0)
    assert (directory / "manifest.json").read_bytes() == manifest
    full = build(hostile, directory, full=True)
    assert full.full and full.feeds == first.feeds and full.written == []


def test_a_changed_theme_name_in_the_config_rewrites_what_names_it(hostile: Service, tmp_path: Path) -> None:
    directory = tmp_path / "feeds"
    build(hostile, directory)
    themes = [
        theme.model_copy(update={"names": {"pt": "Ação climática"}}) if theme.slug == "climate-action" else theme
        for theme in hostile.settings.themes
    ]
    report = build(with_settings(hostile, themes=themes), directory)
    assert report.full and "languages/pt.atom" in report.written  # its categories are labelled in Portuguese
    assert 'label="Ação climática"' in (directory / "languages/pt.atom").read_text(encoding="utf-8")


def test_a_changed_translation_rewrites_the_documents_it_words(
    hostile: Service, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    locales = tmp_path / "locales"
    shutil.copytree(resources.catalogs(), locales)
    monkeypatch.setattr(feed_build, "catalogs", lambda: locales)
    monkeypatch.setattr(resources, "_compiled", {})
    directory = tmp_path / "feeds"
    build(hostile, directory)
    english = locales / "en" / "LC_MESSAGES" / "web.po"
    wording = 'msgid "Everything published by %(site)s."\nmsgstr ""'
    assert wording in english.read_text(encoding="utf-8")
    english.write_text(
        english.read_text(encoding="utf-8").replace(
            wording, 'msgid "Everything published by %(site)s."\nmsgstr "All that %(site)s publishes."'
        ),
        encoding="utf-8",
    )
    monkeypatch.setattr(resources, "_compiled", {})  # as a new process: the catalogs are compiled afresh
    report = build(hostile, directory)
    assert report.full and "all.json" in report.written
    assert json.loads((directory / "all.json").read_bytes())["description"] == "All that Test Network publishes."


def test_a_changed_index_template_rewrites_the_index(hostile: Service, tmp_path: Path) -> None:
    templates = tmp_path / "templates"
    templates.mkdir()
    shutil.copy(resources.web_templates() / "feeds_index.html", templates / "feeds_index.html")
    service = with_settings(hostile, web=hostile.settings.web.model_copy(update={"templates_dir": templates}))
    directory = tmp_path / "feeds"
    build(service, directory)
    with (templates / "feeds_index.html").open("a", encoding="utf-8") as template:
        template.write("<!-- our own index -->\n")
    build(service, directory)
    assert "<!-- our own index -->" in (directory / "index.html").read_text(encoding="utf-8")


def test_a_deleted_document_or_list_is_written_again(hostile: Service, tmp_path: Path) -> None:
    directory = tmp_path / "feeds"
    build(hostile, directory)
    kept = {name: (directory / name).read_bytes() for name in ("themes/resilience.rss", "index.html", "feeds.opml")}
    for name in kept:
        (directory / name).unlink()
    report = build(hostile, directory)
    assert report.written == ["themes/resilience.rss"]
    assert {name: (directory / name).read_bytes() for name in kept} == kept


def test_a_post_coming_of_age_a_day_later_enters_the_feeds(hostile: Service, tmp_path: Path) -> None:
    # Nothing was written since the last build, but a scheduled post's time came (within the days departures are
    # kept, so the build does not rebuild every feed anyway).
    tomorrow = (NOW + timedelta(days=1)).isoformat()
    import_file(hostile, write_jsonl(tmp_path / "scheduled.jsonl", [post_record(80, published=tomorrow)]))
    directory = tmp_path / "feeds"
    build(hostile, directory)
    later = Service(hostile.settings, hostile.engine, fixed_clock(NOW + timedelta(days=2)))
    report = build(later, directory)
    assert "all.json" in report.written
    assert post_record(80)["guid"] in (directory / "all.json").read_text(encoding="utf-8")


def test_a_second_deletion_at_the_same_moment_as_the_first_is_seen(hostile: Service, tmp_path: Path) -> None:
    # The clock is fixed: both deletions are recorded at the same time, after the same newest post; the
    # store's change marker counts what is stored.
    directory = tmp_path / "feeds"
    assert delete_posts(hostile, [hostile_records()[4]["guid"]]) == 1
    build(hostile, directory)
    gone = hostile_records()[5]["guid"]
    assert gone in (directory / "all.json").read_text(encoding="utf-8")
    assert delete_posts(hostile, [gone]) == 1
    report = build(hostile, directory)
    assert "all.json" in report.written and gone not in (directory / "all.json").read_text(encoding="utf-8")


# --- WebSub ----------------------------------------------------------------------------------------------------


def with_hub(service: Service, hub: str) -> Service:
    feeds = service.settings.feeds.model_copy(update={"websub_hub": hub})
    return Service(service.settings.model_copy(update={"feeds": feeds}), service.engine, service.clock)


def test_websub_hub_is_announced_and_pinged_for_changed_feeds(hostile: Service, tmp_path: Path) -> None:
    with serving() as hub:
        hub.route("/hub", lambda _seen: Reply(204))
        service = with_hub(hostile, hub.url("/hub"))
        report = build(service, tmp_path / "feeds")
        assert report.hub_refused == []
        pinged = {seen.form["hub.url"] for seen in hub.requests if seen.path == "/hub"}
        assert "https://news.example.org/feeds/all.atom" in pinged
        assert "https://news.example.org/feeds/themes/resilience.rss" in pinged
        atom = feedparser.parse((tmp_path / "feeds/all.atom").read_bytes())
        assert {link.rel: link.href for link in atom.feed.links}["hub"] == hub.url("/hub")
        assert json.loads((tmp_path / "feeds/all.json").read_bytes())["hubs"][0]["url"] == hub.url("/hub")
        hub.requests.clear()
        build(service, tmp_path / "feeds")
        assert hub.requests == []  # nothing changed, nobody is told


def test_a_failing_hub_never_fails_the_build(hostile: Service, tmp_path: Path) -> None:
    with serving() as hub:
        hub.route("/hub", lambda _seen: Reply(500))
        report = build(with_hub(hostile, hub.url("/hub")), tmp_path / "feeds")
    assert "https://news.example.org/feeds/all.atom" in report.hub_refused
    assert (tmp_path / "feeds/all.atom").is_file()


# --- Golden files and the command line -----------------------------------------------------------------------


@pytest.fixture
def golden_store(tmp_path: Path) -> Iterator[Service]:
    config = write_config(tmp_path, f"sqlite:///{tmp_path / 'golden.db'}")
    settings: Settings = load_settings(config, environ={})
    init_store(settings)
    service = Service.open(settings, fixed_clock(NOW))
    records = [r for r in hostile_records() if r["title"] != "Tab\tand\x07bell \x0b and\r\nbreak"]
    import_file(service, write_jsonl(tmp_path / "golden.jsonl", records))
    yield service
    service.close()


@pytest.mark.parametrize("name", ["all.rss", "all.atom", "all.json", "themes/climate-action.atom", "feeds.opml"])
def test_golden_feeds(golden_store: Service, tmp_path: Path, regenerate_golden: bool, name: str) -> None:
    directory = tmp_path / "feeds"
    build(golden_store, directory)
    check_golden(f"feeds/{name}", (directory / name).read_bytes(), regenerate_golden)


def test_feeds_build_command(config_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--config", str(config_path), "init"]) == 0
    write_jsonl(tmp_path / "p.jsonl", [post_record(1), post_record(2, themes=["resilience"])])
    assert main(["--config", str(config_path), "import", str(tmp_path / "p.jsonl")]) == 0
    out = tmp_path / "out"
    assert main(["--config", str(config_path), "feeds", "build", "--out", str(out)]) == 0
    assert "full build of" in capsys.readouterr().out
    assert feedparser.parse((out / "themes/resilience.atom").read_bytes()).entries[0].title == "Post number 2"
    assert main(["--config", str(config_path), "feeds", "build", "--out", str(out)]) == 0
    assert "0 documents written" in capsys.readouterr().out


def test_a_large_build_split_over_two_processes_writes_the_same_files(
    hostile: Service, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import syndication.feeds.build as feed_build

    serial, parallel = tmp_path / "serial", tmp_path / "parallel"
    build(hostile, serial)
    monkeypatch.setattr(feed_build, "_PARALLEL_FROM_FEEDS", 2)  # this store's eleven feeds count as many
    report = build(hostile, parallel)
    assert report.feeds == 11 and len(report.written) == 33
    files = sorted(p.relative_to(serial) for p in serial.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(parallel) for p in parallel.rglob("*") if p.is_file())
    for name in files:
        if name.name != "manifest.json":
            assert (serial / name).read_bytes() == (parallel / name).read_bytes(), name
    manifests = [json.loads((d / "manifest.json").read_bytes())["documents"] for d in (serial, parallel)]
    assert manifests[0] == manifests[1]


def test_long_author_names_get_bounded_slugs_and_feeds_of_their_own(service: Service, tmp_path: Path) -> None:
    # A slug names a file: a long name (Latin or not) must still make a feed, and two that begin alike two feeds.
    long_latin = "Departamento de Medio Ambiente y Desarrollo Sostenible " * 3
    cjk = "北九州市環境局環境未来都市推進室" * 4  # 64 characters: a slug of 320 without the bound
    names = [long_latin + "de Bogotá", long_latin + "de Medellín", cjk]
    records = [post_record(90 + i, title=f"Long name {i}", authors=[name]) for i, name in enumerate(names)]
    import_file(service, write_jsonl(tmp_path / "long.jsonl", records))
    directory = tmp_path / "feeds"
    build(service, directory)
    author_feeds = sorted(path.name for path in (directory / "authors").glob("*.atom"))
    long_ones = [name for name in author_feeds if len(name) > 60]
    assert len(long_ones) == 3 and all(len(name.removesuffix(".atom")) <= 100 for name in long_ones)
    for number, name in enumerate(names):
        slug = next(n for n in long_ones if _authored(directory / "authors" / n, f"Long name {number}"))
        assert feedparser.parse((directory / "authors" / slug).read_bytes()).entries[0].author == name.strip()


def _authored(path: Path, title: str) -> bool:
    return any(entry.title == title for entry in feedparser.parse(path.read_bytes()).entries)
