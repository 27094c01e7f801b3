"""The feed history under random edits: what readers and the web app see stays exact after every incremental build.

A Hypothesis state machine keeps a real SQLite store, applies random edits to it (new posts, edits, re-tagging, new
authors, unpublishing, embargoes lifting, back-dated posts, deletions, the clock moving on), builds the feeds
incrementally into one folder after each edit, and checks the folder as a reader would, only through the files a
build writes and the links inside them:

1. incremental = full: a full build into an empty folder writes the same files with the same bytes, and its
   manifest lists the same documents with the same ETags;
2. every chain is exact: from each feed's subscription document (RSS, Atom and JSON Feed), following
   ``prev-archive`` (JSON Feed: ``next_url``) to the oldest page finds every published post of the feed in
   exactly one document (the subscription document counts: it repeats no archived post), no unpublished,
   deleted or departed post, each with its current title; each archive page is marked ``fh:archive`` and its
   ``next-archive`` leads to the next newer document of the chain (the newest archive page's to the
   subscription document);
3. no future-dated (or deleted) post in any document of the folder, reachable or not;
4. each document's Last-Modified never goes back from one build to the next, and moves whenever its ETag does.

Archive page URLs are opaque: pages are only ever found by following links.

The suite runs a fixed, derandomised set of examples. A longer run is one command:

    FEED_HISTORY_EXAMPLES=2000 python -m pytest -q tests/test_feed_history.py

``FEED_HISTORY_STEPS`` sets the edits per example (10 by default). A failure lists every problem of the failing
build and the edits that led to it, as generated: shrinking them to a minimal sequence costs about a second a try
and can take Hypothesis its full five minutes, so it is done only with ``FEED_HISTORY_SHRINK=1`` added to either
command.

Plain scenarios after the state machine pin the defects issue 18 is about (an archived post unpublished, a
back-dated post, a post re-tagged out of a theme) and one the state machine found: a post re-tagged into a feed at
the same clock reading as the last build's newest change.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections import Counter
from collections.abc import Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from email.utils import parsedate_to_datetime
from itertools import pairwise
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import orjson
from hypothesis import HealthCheck, Phase, note, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, precondition, rule, run_state_machine_as_test
from lxml import etree

from syndication.app.gathering import import_file
from syndication.app.posts import delete_posts, iso_time
from syndication.app.publishing import publish_feeds
from syndication.app.service import Service, init_store
from syndication.config import load_settings
from tests.support import NOW, post_record, write_config, write_jsonl

EXAMPLES = int(os.environ.get("FEED_HISTORY_EXAMPLES", "4"))
STEPS = int(os.environ.get("FEED_HISTORY_STEPS", "10"))
SHRINK = os.environ.get("FEED_HISTORY_SHRINK", "") not in ("", "0")

BASE_URL = "https://news.example.org/feeds/"
# The smallest pages the settings allow, so a few dozen posts make chains of several pages.
FEEDS_CONFIG = """
[feeds]
items = 10
archive_page_size = 10
"""
FORMATS = ("rss", "atom", "json")
THEMES = ("climate-action", "resilience", "circular-economy")  # tests/support.py's FIXTURE_THEMES
AUTHORS = {"Ana Perez": "ana-perez", "Bo Li": "bo-li", "Chidi Okafor": "chidi-okafor"}  # name: feed slug
REGIONS = ("europe", "africa")

ATOM = "{http://www.w3.org/2005/Atom}"
HISTORY = "{http://purl.org/syndication/history/1.0}"
MANIFEST = "manifest.json"


# The store, as the test knows it.


class MovableClock:
    """The service's clock: it stays where it is until the test moves it forward."""

    def __init__(self, moment: datetime) -> None:
        self.now = moment

    def __call__(self) -> datetime:
        """The time the clock was left at."""
        return self.now

    def advance(self, by: timedelta) -> None:
        """Move the clock ``by`` forward (never back: a store's clock does not run backwards)."""
        assert by >= timedelta(0)
        self.now += by


@dataclass(frozen=True)
class PostState:
    """One post as last imported: what every feed that holds it must show."""

    number: int
    title: str
    published: datetime
    updated: datetime
    themes: tuple[str, ...]
    authors: tuple[str, ...]
    region: str

    @property
    def language(self) -> str:
        """The post's language, one of three by its number (a tag given in lower case, stored canonical)."""
        return ("en", "es", "pt-br")[self.number % 3]

    @property
    def guid(self) -> str:
        """The guid post_record gives post ``number``; an IRI, so also its Atom id."""
        return f"urn:test:post:{self.number}"

    def record(self) -> dict[str, Any]:
        """The JSON Lines record that imports this version of the post."""
        return post_record(
            self.number,
            title=self.title,
            published=iso_time(self.published),
            updated=iso_time(self.updated),
            themes=list(self.themes),
            authors=list(self.authors),
            regions=[self.region],
            language=self.language,
        )

    def feeds(self) -> set[str]:
        """The paths of the feeds this post belongs to."""
        themes = {f"themes/{slug}" for slug in self.themes}
        authors = {f"authors/{AUTHORS[name]}" for name in self.authors}
        return {"all", f"regions/{self.region}", f"languages/{self.language}", *themes, *authors}


class History:
    """A real SQLite store on a clock the test moves, the folder its feeds are built into, and a model of the
    posts the store holds (what the feeds must show)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.clock = MovableClock(NOW)
        settings = load_settings(write_config(root, f"sqlite:///{root / 'store.db'}", FEEDS_CONFIG), environ={})
        init_store(settings)
        self.service = Service.open(settings, self.clock)
        self.output = root / "feeds"
        self.posts: dict[str, PostState] = {}
        self.deleted: set[str] = set()
        self.last_number = 0
        self.versions = 0
        self.manifest: dict[str, dict[str, Any]] = {}  # the documents of the last build's manifest

    def close(self) -> None:
        """Close the store."""
        self.service.close()

    def new_post(self, published: datetime, themes: Iterable[str], authors: Iterable[str], region: str) -> PostState:
        """A post the store has not seen, with the next number."""
        self.last_number += 1
        published = published.replace(microsecond=0)
        return PostState(
            self.last_number, f"Post {self.last_number}", published, published, tuple(themes), tuple(authors), region
        )

    def next_version(self, post: PostState, **changes: Any) -> PostState:
        """``post`` changed, with an ``updated`` newer than the stored one (else the import would ignore it)."""
        self.versions += 1
        updated = max(self.clock.now, post.updated + timedelta(seconds=1))
        changed = replace(post, updated=updated, **changes)
        # The import raises an ``updated`` earlier than ``published`` to ``published``.
        return replace(changed, updated=max(changed.updated, changed.published))

    def store(self, *posts: PostState) -> None:
        """Import ``posts`` through the real import and note them in the model; the import must agree."""
        path = write_jsonl(self.root / "import.jsonl", [post.record() for post in posts])
        report = import_file(self.service, path)
        assert report.failure is None and not report.rejections, report
        new = sum(1 for post in posts if post.guid not in self.posts)
        assert (report.added, report.updated) == (new, len(posts) - new), (
            f"the store disagrees with the model: {report}"
        )
        self.posts.update((post.guid, post) for post in posts)

    def delete(self, post: PostState) -> None:
        """Delete ``post`` through the use case."""
        assert delete_posts(self.service, [post.guid]) == 1
        del self.posts[post.guid]
        self.deleted.add(post.guid)

    def build(self) -> None:
        """An incremental build into the one folder this history keeps."""
        publish_feeds(self.service, self.output)

    def published(self) -> list[PostState]:
        """The posts readers may see now."""
        return [post for post in self.posts.values() if post.published <= self.clock.now]

    def hidden(self) -> set[str]:
        """Guids no document may show: posts dated in the future, and deleted posts."""
        return {guid for guid, post in self.posts.items() if post.published > self.clock.now} | self.deleted

    def expected_feeds(self) -> dict[str, dict[str, str]]:
        """Every feed a post may be in (empty ones too), each with its published posts' guids and titles."""
        feeds: dict[str, dict[str, str]] = {"all": {}}
        feeds.update({f"themes/{slug}": {} for slug in THEMES})
        feeds.update({f"regions/{slug}": {} for slug in REGIONS})
        feeds.update({f"authors/{slug}": {} for slug in AUTHORS.values()})
        feeds.update({f"languages/{tag}": {} for tag in ("en", "es", "pt-br")})
        for post in self.published():
            for feed in post.feeds():
                feeds[feed][post.guid] = post.title
        return feeds


@dataclass
class Document:
    """One feed document as a reader parses it."""

    path: str
    items: list[tuple[str, str]]  # (id, title) in document order
    links: dict[str, list[str]] = field(default_factory=dict)  # feed-level links by rel, as absolute URLs
    archive_marker: bool = False  # RFC 5005's fh:archive

    @property
    def url(self) -> str:
        """Where the document is served."""
        return BASE_URL + self.path

    def ids(self) -> list[str]:
        """The ids of its items, in document order."""
        return [item_id for item_id, _title in self.items]


def read_document(directory: Path, path: str) -> Document:
    """Parse the RSS, Atom or JSON Feed document at ``path`` (by its suffix): items, feed links, archive marker."""
    body = (directory / path).read_bytes()
    url = BASE_URL + path
    if path.endswith(".json"):
        data = orjson.loads(body)
        following = {"next": [urljoin(url, data["next_url"])]} if "next_url" in data else {}
        return Document(path, [(item["id"], item.get("title", "")) for item in data.get("items", [])], following)
    root = etree.fromstring(body)
    if path.endswith(".rss"):
        channel = root.find("channel")
        assert channel is not None, f"{path}: no RSS channel"
        items = [(item.findtext("guid") or "", item.findtext("title") or "") for item in channel.findall("item")]
        holder = channel
    else:
        items = [
            (entry.findtext(f"{ATOM}id") or "", entry.findtext(f"{ATOM}title") or "")
            for entry in root.findall(f"{ATOM}entry")
        ]
        holder = root
    links: dict[str, list[str]] = {}
    for link in holder.findall(f"{ATOM}link"):
        links.setdefault(link.get("rel", "alternate"), []).append(urljoin(url, link.get("href", "")))
    return Document(path, items, links, holder.find(f"{HISTORY}archive") is not None)


def older_link(document: Document) -> str | None:
    """The link to the next older page: RFC 5005's ``prev-archive``, JSON Feed's ``next_url``."""
    hrefs = document.links.get("next" if document.path.endswith(".json") else "prev-archive", [])
    return hrefs[0] if hrefs else None


def follow_chain(directory: Path, start: str, problems: list[str]) -> list[Document]:
    """The documents from the subscription document ``start`` to the oldest archive page, newest first, as a
    backfilling reader follows them; broken links, cycles and links out of the feeds are noted in ``problems``."""
    chain: list[Document] = []
    path: str | None = start
    seen: set[str] = set()
    while path is not None:
        if path in seen:
            problems.append(f"{start}: the archive chain loops back to {path}")
            break
        if not (directory / path).is_file():
            problems.append(f"{start}: {chain[-1].path if chain else start} links to {path}, which is not there")
            break
        seen.add(path)
        document = read_document(directory, path)
        chain.append(document)
        older = older_link(document)
        if older is not None and not older.startswith(BASE_URL):
            problems.append(f"{start}: {path} links to {older}, outside the feeds")
            break
        path = older.removeprefix(BASE_URL) if older is not None else None
    return chain


def membership_problems(chain: list[Document], expected: Mapping[str, str], hidden: Collection[str]) -> list[str]:
    """What is wrong with the posts of one chain: ``expected`` maps each published post of the feed to its title;
    ``hidden`` are guids that may appear nowhere (future-dated, deleted)."""
    if not chain:
        return []
    start, pages = chain[0].path, chain[1:]
    problems = [
        f"{start}: {document.path} lists post {guid} {count} times"
        for document in chain
        for guid, count in Counter(document.ids()).items()
        if count > 1
    ]
    holding = Counter(guid for document in chain for guid in set(document.ids()))
    problems += [
        f"{start}: post {guid} is in {count} documents of the chain ({', '.join(where(chain, guid))})"
        for guid, count in holding.items()
        if count > 1
    ]
    present = set(holding)
    problems += [
        f"{start}: published post {guid} is in no document of the chain ({len(pages)} archive pages)"
        for guid in sorted(set(expected) - present)
    ]
    for guid in sorted(present - set(expected)):
        why = "hidden (dated in the future or deleted)" if guid in hidden else "not (or no longer) of this feed"
        problems.append(f"{start}: post {guid} is {why} but shown in {', '.join(where(chain, guid))}")
    problems += [
        f"{start}: {document.path} shows post {guid} as {title!r}, not {expected[guid]!r}"
        for document in chain
        for guid, title in document.items
        if guid in expected and title != expected[guid]
    ]
    return problems


def link_problems(chain: list[Document]) -> list[str]:
    """What is wrong with the RFC 5005 links of one RSS or Atom chain: each archive page is marked as one, and its
    ``next-archive`` leads to the next newer document of the chain (the newest page's to the subscription)."""
    if not chain:
        return []
    start = chain[0].path
    problems = [f"{start}: the subscription document is marked fh:archive"] if chain[0].archive_marker else []
    for newer, page in pairwise(chain):
        if not page.archive_marker:
            problems.append(f"{start}: archive page {page.path} is not marked fh:archive")
        if len(page.links.get("prev-archive", [])) > 1:
            problems.append(f"{start}: archive page {page.path} has several prev-archive links")
        following = page.links.get("next-archive", [])
        if not following:
            problems.append(f"{start}: archive page {page.path} has no next-archive link")
        elif following != [newer.url]:
            problems.append(f"{start}: next-archive of {page.path} leads to {following}, not to {newer.url}")
    return problems


def where(documents: Iterable[Document], guid: str) -> list[str]:
    """The paths of the documents that show ``guid``."""
    return [document.path for document in documents if guid in document.ids()]


def chains(directory: Path, feeds: Mapping[str, Mapping[str, str]], hidden: Collection[str]) -> list[str]:
    """Follow every feed's chain in every format and return what is wrong with any of them.

    ``feeds`` maps each feed path the model knows to its published posts. A feed with posts must have its
    subscription documents; one without may have them (then empty of posts) or not. Subscription documents of
    feeds the model does not know are checked too: they may hold no post.
    """
    problems: list[str] = []
    archive_pages: set[str] = set()
    for feed, expected in feeds.items():
        for fmt in FORMATS:
            start = f"{feed}.{fmt}"
            if not (directory / start).is_file():
                if expected:
                    problems.append(f"{start}: missing, though the feed has {len(expected)} published posts")
                continue
            chain = follow_chain(directory, start, problems)
            archive_pages.update(document.path for document in chain[1:])
            problems += membership_problems(chain, expected, hidden)
            if fmt != "json":  # JSON Feed has no link to newer pages
                problems += link_problems(chain)
    others = {path.relative_to(directory).as_posix() for path in subscription_candidates(directory)}
    for start in sorted(others - archive_pages - {f"{feed}.{fmt}" for feed in feeds for fmt in FORMATS}):
        chain = follow_chain(directory, start, problems)
        problems += membership_problems(chain, {}, hidden)
    return problems


def subscription_candidates(directory: Path) -> Iterator[Path]:
    """The files where subscription documents live: ``all.*`` and the direct children of the feed folders."""
    for fmt in FORMATS:
        yield from directory.glob(f"all.{fmt}")
        for folder in ("themes", "regions", "authors"):
            yield from directory.glob(f"{folder}/*.{fmt}")


def every_document(directory: Path) -> list[str]:
    """Every feed document in the folder, reachable or not (the manifest, a JSON file, is not one)."""
    return sorted(
        path.relative_to(directory).as_posix()
        for path in directory.rglob("*")
        if path.suffix[1:] in FORMATS and path.is_file() and path.relative_to(directory).as_posix() != MANIFEST
    )


def hidden_problems(directory: Path, hidden: Collection[str]) -> list[str]:
    """Hidden posts (future-dated, deleted) shown by any document of the folder."""
    return [
        f"{path} shows post {guid}, which is dated in the future or deleted"
        for path in every_document(directory)
        for guid in read_document(directory, path).ids()
        if guid in hidden
    ]


def files_of(directory: Path) -> dict[str, bytes]:
    """Every file of the folder but the manifest, by path."""
    return {
        path.relative_to(directory).as_posix(): path.read_bytes()
        for path in directory.rglob("*")
        if path.is_file() and path.relative_to(directory).as_posix() != MANIFEST
    }


def manifest_documents(directory: Path) -> dict[str, dict[str, Any]]:
    """The documents the folder's manifest lists."""
    documents: dict[str, dict[str, Any]] = json.loads((directory / MANIFEST).read_bytes())["documents"]
    return documents


def full_build_problems(history: History) -> list[str]:
    """How the incrementally kept folder differs from a full build of the same store into an empty folder."""
    with tempfile.TemporaryDirectory() as empty:
        full = Path(empty)
        publish_feeds(history.service, full, full=True)
        ours, theirs = files_of(history.output), files_of(full)
        problems = [
            f"{path}: kept by the incremental build, not written by a full build"
            for path in sorted(set(ours) - set(theirs))
        ]
        problems += [
            f"{path}: written by a full build, missing from the incremental one"
            for path in sorted(set(theirs) - set(ours))
        ]
        problems += [
            f"{path}: the incremental build's bytes differ from a full build's"
            for path in sorted(set(ours) & set(theirs))
            if ours[path] != theirs[path]
        ]
        our_etags = {path: entry["etag"] for path, entry in manifest_documents(history.output).items()}
        full_etags = {path: entry["etag"] for path, entry in manifest_documents(full).items()}
        if our_etags != full_etags:
            differing = sorted(
                path for path in set(our_etags) | set(full_etags) if our_etags.get(path) != full_etags.get(path)
            )
            problems.append(f"the manifests list different documents or ETags: {differing[:10]}")
    return problems


def last_modified_problems(
    before: Mapping[str, Mapping[str, Any]], after: Mapping[str, Mapping[str, Any]]
) -> list[str]:
    """Documents of both manifests whose Last-Modified went back, or stayed while their ETag changed."""
    problems = []
    for path in sorted(set(before) & set(after)):
        then, now = (
            parsedate_to_datetime(before[path]["last_modified"]),
            parsedate_to_datetime(after[path]["last_modified"]),
        )
        if now < then:
            problems.append(f"{path}: Last-Modified went back from {then} to {now}")
        elif before[path]["etag"] != after[path]["etag"] and now == then:
            problems.append(f"{path}: its ETag changed but Last-Modified stayed at {then}")
    return problems


def build_and_check(history: History) -> None:
    """Build incrementally, then check the four properties; one failure lists every problem found."""
    history.build()
    hidden = history.hidden()
    manifest = manifest_documents(history.output)
    found = {
        "1 (incremental = full)": full_build_problems(history),
        "2 (every chain exact)": chains(history.output, history.expected_feeds(), hidden),
        "3 (no future post anywhere)": hidden_problems(history.output, hidden),
        "4 (Last-Modified monotonic)": last_modified_problems(history.manifest, manifest),
    }
    history.manifest = manifest
    failed = {name: problems for name, problems in found.items() if problems}
    if failed:
        lines = [f"after the build at {history.clock.now.isoformat()}:"]
        for name, problems in failed.items():
            lines.append(f"property {name}: {len(problems)} problems")
            lines += [f"  {problem}" for problem in problems[:15]]
        raise AssertionError("\n".join(lines))


# The state machine.

THEME_SETS = st.frozensets(st.sampled_from(THEMES), max_size=2).map(lambda themes: tuple(sorted(themes)))
AUTHOR_SETS = st.frozensets(st.sampled_from(tuple(AUTHORS)), min_size=1, max_size=2).map(
    lambda names: tuple(sorted(names))
)
LINKS = st.tuples(THEME_SETS, AUTHOR_SETS, st.sampled_from(REGIONS))


class FeedHistory(RuleBasedStateMachine):
    """Random edits to a store, each followed by an incremental build and the four checks."""

    def __init__(self) -> None:
        super().__init__()
        self.folder = tempfile.TemporaryDirectory()
        self.history = History(Path(self.folder.name))

    def teardown(self) -> None:
        """Close the store and remove its folder."""
        self.history.close()
        self.folder.cleanup()

    def pick(self, data: st.DataObject, posts: Iterable[PostState]) -> PostState:
        """One of ``posts``, drawn so that Hypothesis shrinks towards the oldest."""
        return data.draw(st.sampled_from(sorted(posts, key=lambda post: post.number)), label="post")

    @initialize(links=st.lists(LINKS, min_size=22, max_size=36))
    def seed(self, links: list[tuple[tuple[str, ...], tuple[str, ...], str]]) -> None:
        """A few dozen posts over the month before the clock: several archive pages for the site."""
        start = self.history.clock.now - timedelta(days=30)
        spacing = timedelta(days=30) / len(links)
        self.history.store(
            *(
                self.history.new_post(start + index * spacing, themes, authors, region)
                for index, (themes, authors, region) in enumerate(links)
            )
        )
        build_and_check(self.history)

    @rule(links=st.lists(LINKS, min_size=1, max_size=12))
    def import_new(self, links: list[tuple[tuple[str, ...], tuple[str, ...], str]]) -> None:
        """New posts, dated in the last minutes."""
        now = self.history.clock.now
        self.history.store(
            *(
                self.history.new_post(now - timedelta(minutes=len(links) - index), *post_links)
                for index, post_links in enumerate(links)
            )
        )
        build_and_check(self.history)

    @precondition(lambda self: bool(self.history.posts))
    @rule(data=st.data())
    def edit(self, data: st.DataObject) -> None:
        """A new version of a post (same guid, newer ``updated``) with a new title."""
        post = self.pick(data, self.history.posts.values())
        self.history.store(
            self.history.next_version(post, title=f"Post {post.number}, version {self.history.versions + 1}")
        )
        build_and_check(self.history)

    @precondition(lambda self: bool(self.history.posts))
    @rule(data=st.data(), themes=THEME_SETS)
    def retag(self, data: st.DataObject, themes: tuple[str, ...]) -> None:
        """A post moved to other themes (it leaves the feeds of those it loses)."""
        post = self.pick(data, self.history.posts.values())
        self.history.store(self.history.next_version(post, themes=themes))
        build_and_check(self.history)

    @precondition(lambda self: bool(self.history.posts))
    @rule(data=st.data(), authors=AUTHOR_SETS)
    def change_authors(self, data: st.DataObject, authors: tuple[str, ...]) -> None:
        """A post credited to other authors (it leaves the feeds of those it loses)."""
        post = self.pick(data, self.history.posts.values())
        self.history.store(self.history.next_version(post, authors=authors))
        build_and_check(self.history)

    @precondition(lambda self: bool(self.history.published()))
    @rule(data=st.data(), hours=st.integers(1, 96))
    def unpublish(self, data: st.DataObject, hours: int) -> None:
        """A published post imported again with a future date: it is held until then."""
        post = self.pick(data, self.history.published())
        published = (self.history.clock.now + timedelta(hours=hours)).replace(microsecond=0)
        self.history.store(self.history.next_version(post, published=published))
        build_and_check(self.history)

    @rule(links=LINKS, hours=st.integers(1, 48))
    def embargoed(self, links: tuple[tuple[str, ...], tuple[str, ...], str], hours: int) -> None:
        """A new post dated in the future: held until its date."""
        self.history.store(self.history.new_post(self.history.clock.now + timedelta(hours=hours), *links))
        build_and_check(self.history)

    @precondition(lambda self: bool(self.history.hidden() - self.history.deleted))
    @rule(minutes=st.integers(0, 90))
    def lift_embargo(self, minutes: int) -> None:
        """The clock moves past the date of the next post held back (by ``minutes`` more)."""
        held = min(post.published for guid, post in self.history.posts.items() if guid in self.history.hidden())
        self.history.clock.advance(held - self.history.clock.now + timedelta(minutes=minutes))
        build_and_check(self.history)

    @rule(links=LINKS, days_back=st.integers(0, 45), minute=st.integers(0, 24 * 60 - 1))
    def back_dated(self, links: tuple[tuple[str, ...], tuple[str, ...], str], days_back: int, minute: int) -> None:
        """A new post dated in the past: it lands among the archived posts."""
        published = self.history.clock.now - timedelta(days=days_back, minutes=minute)
        self.history.store(self.history.new_post(published, *links))
        build_and_check(self.history)

    @precondition(lambda self: bool(self.history.posts))
    @rule(data=st.data())
    def delete(self, data: st.DataObject) -> None:
        """A post deleted from the store (published or held)."""
        self.history.delete(self.pick(data, self.history.posts.values()))
        build_and_check(self.history)

    @rule(
        by=st.one_of(
            st.integers(1, 3 * 24 * 60).map(lambda minutes: timedelta(minutes=minutes)), st.just(timedelta(days=40))
        )
    )
    def advance_clock(self, by: timedelta) -> None:
        """Time passes: minutes to days, or longer than the builder remembers departures for."""
        self.history.clock.advance(by)
        note(f"clock now {self.history.clock.now.isoformat()}")
        build_and_check(self.history)


def test_the_feed_history_holds_under_random_edits() -> None:
    """Every property after every build, over a fixed set of random edit sequences."""
    run_state_machine_as_test(
        FeedHistory,
        settings=settings(
            max_examples=EXAMPLES,
            stateful_step_count=STEPS,
            derandomize=True,  # the suite runs the same examples every time (and keeps no example database)
            deadline=None,  # a step is a real import and two real builds: its time says nothing
            phases=[phase for phase in Phase if SHRINK or phase is not Phase.shrink],
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        ),
    )


# The defects of issue 18, each as a scenario of its own.


def assert_none(problems: list[str], context: str = "") -> None:
    """Fail listing every problem, one a line (pytest's list diff would show only the first)."""
    assert not problems, "\n".join([f"{len(problems)} problems{context}:", *problems[:30]])


def chain_problems(history: History) -> list[str]:
    """What is wrong with the posts of any feed's chain in any format (links aside)."""
    problems: list[str] = []
    hidden = history.hidden()
    for feed, expected in history.expected_feeds().items():
        for fmt in FORMATS:
            if (history.output / f"{feed}.{fmt}").is_file() or expected:
                problems += membership_problems(
                    follow_chain(history.output, f"{feed}.{fmt}", problems), expected, hidden
                )
    return problems


def seeded(history: History, count: int, themes: tuple[str, ...] = ("climate-action",)) -> list[PostState]:
    """``count`` posts by Ana Perez in Europe, one a day up to the clock, imported and built."""
    posts = [
        history.new_post(history.clock.now - timedelta(days=count - index), themes, ["Ana Perez"], "europe")
        for index in range(count)
    ]
    history.store(*posts)
    history.build()
    return posts


def test_unpublishing_an_archived_post_removes_it_from_every_page_and_loses_no_other_post(tmp_path: Path) -> None:
    history = History(tmp_path)
    try:
        posts = seeded(history, 25)
        history.clock.advance(timedelta(hours=1))
        archived = posts[3]  # on the oldest archive page
        history.store(history.next_version(archived, published=history.clock.now + timedelta(days=7)))
        history.build()
        assert_none(hidden_problems(history.output, {archived.guid}), " once the archived post was unpublished")
        for batch in range(3):  # 60 new posts, built as they come: the site's chain grows by several pages
            history.clock.advance(timedelta(hours=1))
            history.store(
                *(
                    history.new_post(
                        history.clock.now - timedelta(minutes=20 - minute), ["resilience"], ["Bo Li"], "africa"
                    )
                    for minute in range(20)
                )
            )
            history.build()
            assert_none(chain_problems(history), f" after batch {batch + 1} of 20 new posts")
        assert_none(hidden_problems(history.output, {archived.guid}), " after 60 new posts")
    finally:
        history.close()


def test_a_back_dated_post_lands_in_the_chain_exactly_once_and_pushes_no_neighbour_out(tmp_path: Path) -> None:
    history = History(tmp_path)
    try:
        posts = seeded(history, 30)
        history.clock.advance(timedelta(hours=1))
        # Between the fourth and fifth posts: on the oldest archive page, which is full.
        late = history.new_post(posts[3].published + timedelta(hours=12), ["climate-action"], ["Ana Perez"], "europe")
        history.store(late)
        history.build()
        assert_none(chain_problems(history))
    finally:
        history.close()


def test_a_post_retagged_out_of_a_theme_leaves_all_of_its_pages(tmp_path: Path) -> None:
    history = History(tmp_path)
    try:
        posts = seeded(history, 25)
        history.clock.advance(timedelta(hours=1))
        moved = posts[2]  # on the theme's oldest archive page
        history.store(history.next_version(moved, themes=("resilience",)))
        history.build()
        theme = [
            document.path
            for fmt in FORMATS
            for document in follow_chain(history.output, f"themes/climate-action.{fmt}", [])
            if moved.guid in document.ids()
        ]
        assert theme == [], f"{moved.guid} was re-tagged out of climate-action but is still on {theme}"
        assert_none(chain_problems(history))
    finally:
        history.close()


def test_an_edit_stored_at_the_same_clock_reading_as_the_last_build_is_built(tmp_path: Path) -> None:
    # Writes within one tick of the store's clock (a coarse clock, or a fixed one) are as real as any: the
    # incremental build must not take the post for one it has already seen.
    history = History(tmp_path)
    try:
        posts = seeded(history, 12)
        newest = posts[-1]  # in the subscription documents only: no archive page is involved
        # Into a theme it was not in, so that nothing the post left behind points the build at it.
        history.store(history.next_version(newest, themes=("climate-action", "resilience")))  # at the same moment
        history.build()
        assert_none(chain_problems(history))
        assert_none(full_build_problems(history))
    finally:
        history.close()
