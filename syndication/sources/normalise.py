"""Turning one raw item (a JSON Lines object, a feed entry, a WordPress post) into a valid, clean Post.

Every source maps its format to the JSON Lines field names and calls ``build_post``; the rules of what is
accepted, refused or warned about therefore hold the same way for every source.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from syndication.core.languages import canonical_tag
from syndication.core.models import Author, Image, Post, Region, Theme
from syndication.core.slugs import name_key, slugify
from syndication.errors import ItemError
from syndication.sources.cleaning import (
    absolute_url,
    is_web_url,
    percent_encode_unsafe,
    plain_text,
    sanitise_html,
    single_line,
    summary_from_html,
)

# Longer values are refused, not cut: they are not what the writer meant, and names end up in file names.
MAX_GUID_LENGTH = 2048
MAX_TITLE_LENGTH = 1000
MAX_AUTHOR_LENGTH = 200
MAX_SUMMARY_LENGTH = 2000  # cut rather than refused: a summary only introduces the post
_LANGUAGE = re.compile(r"^[A-Za-z]{2,3}(?:[-_][A-Za-z0-9]{2,8})*$")


@dataclass(frozen=True)
class Vocabulary:
    """What the configuration knows: themes and regions (with their aliases), default language, summary length."""

    themes: Sequence[Theme]
    regions: Sequence[Region] = ()
    language: str = "en"
    summary_words: int = 50
    _theme_terms: dict[str, str] = field(init=False, repr=False)
    _region_terms: dict[str, str] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        theme_terms = {term.casefold(): t.slug for t in self.themes for term in (t.slug, t.name, *t.aliases)}
        region_terms = {term.casefold(): r.slug for r in self.regions for term in (r.slug, r.name, *r.aliases)}
        object.__setattr__(self, "_theme_terms", theme_terms)
        object.__setattr__(self, "_region_terms", region_terms)

    def theme_for(self, term: str) -> str | None:
        """The theme slug that ``term`` (a slug, name or alias, any case) stands for, if any."""
        return self._theme_terms.get(term.strip().casefold())

    def region_for(self, term: str) -> str | None:
        """The region slug for ``term``; with no regions configured, any name is its own slugified region."""
        if not self.regions:
            return slugify(term) if term.strip() else None
        return self._region_terms.get(term.strip().casefold())


@dataclass
class BuiltPost:
    """A post that passed, and what was worth a warning on the way."""

    post: Post
    warnings: list[str]


def build_post(fields: Any, where: str, vocabulary: Vocabulary) -> BuiltPost:
    """Validate and clean one item given with the JSON Lines field names, or raise ItemError naming it.

    As in JSON Lines, ``content_html`` is HTML and every other field is text (``summary`` included): a source
    whose format gives a title or summary as HTML turns it into text (``html_to_text``) before calling this.
    """
    if not isinstance(fields, Mapping):
        raise ItemError(where, f"not a JSON object (got {type(fields).__name__})")
    warnings: list[str] = []
    title = _bounded(plain_text(_text(fields, "title", where)), "title", MAX_TITLE_LENGTH, where)
    if not title:
        raise ItemError(where, "missing title")
    raw_url = percent_encode_unsafe(single_line(_text(fields, "url", where)))
    if not raw_url:
        raise ItemError(where, "missing url")
    if not is_web_url(raw_url):
        raise ItemError(where, f"invalid URL {raw_url!r} (an absolute http or https URL is needed)")
    guid = _bounded(single_line(_text(fields, "guid", where)) or raw_url, "guid", MAX_GUID_LENGTH, where)
    published = _timestamp(fields, "published", where, warnings, required=True)
    assert published is not None
    updated = _timestamp(fields, "updated", where, warnings, required=False) or published
    if updated < published:
        updated = published
    content_html = sanitise_html(_text(fields, "content_html", where), raw_url)
    summary = plain_text(_text(fields, "summary", where))
    if len(summary) > MAX_SUMMARY_LENGTH:
        # A teaser, not the post: shown in every digest and feed item, it must not swell them.
        summary = summary[:MAX_SUMMARY_LENGTH].rsplit(" ", 1)[0].rstrip(",;:.-–—") + "…"
        warnings.append(f"summary longer than {MAX_SUMMARY_LENGTH} characters: cut")
    if not summary:
        summary = summary_from_html(content_html, vocabulary.summary_words)
    language = single_line(_text(fields, "language", where)) or vocabulary.language
    if not _LANGUAGE.match(language):
        warnings.append(f"language {language!r} is not a language tag; using {vocabulary.language!r}")
        language = vocabulary.language
    themes = _slugs(_strings(fields, "themes", where), vocabulary.theme_for, "theme", warnings)
    regions = _slugs(_strings(fields, "regions", where), vocabulary.region_for, "region", warnings)
    authors: list[Author] = []
    for name in _strings(fields, "authors", where):
        clean = _bounded(plain_text(name), "author name", MAX_AUTHOR_LENGTH, where)
        # One name once; its slug here is provisional: the store gives each author its own for good.
        if clean and all(name_key(a.name) != name_key(clean) for a in authors):
            authors.append(Author(slugify(clean), clean))
    image = _image(fields.get("image"), raw_url, where, warnings)
    post = Post(
        guid=guid,
        title=title,
        url=raw_url,
        summary=summary,
        content_html=content_html,
        published=published,
        updated=updated,
        language=canonical_tag(language),
        authors=tuple(authors),
        themes=tuple(themes),
        regions=tuple(regions),
        image=image,
    )
    return BuiltPost(post, warnings)


def _slugs(terms: list[str], lookup: Callable[[str], str | None], kind: str, warnings: list[str]) -> list[str]:
    """The known slugs ``terms`` stand for, each once, in order; unknown terms are reported and ignored."""
    slugs: list[str] = []
    for term in terms:
        slug = lookup(term)
        if slug is None:
            warnings.append(f"unknown {kind} {term!r} ignored")
        elif slug not in slugs:
            slugs.append(slug)
    return slugs


def _bounded(value: str, name: str, limit: int, where: str) -> str:
    """``value``, or ItemError when it is longer than ``limit`` characters."""
    if len(value) > limit:
        raise ItemError(where, f"{name} longer than {limit} characters ({len(value)})")
    return value


def _text(fields: Mapping[str, Any], key: str, where: str) -> str:
    """The string under ``key``, as given: each field's own cleaning decides what a control character becomes
    (a space in text, nothing in a URL or guid)."""
    value = fields.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ItemError(where, f"{key} must be a string (got {type(value).__name__})")
    return value


def _strings(fields: Mapping[str, Any], key: str, where: str) -> list[str]:
    value = fields.get(key)
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ItemError(where, f"{key} must be a list of strings")
    return [item for item in value if item.strip()]


class DateOutOfRange(ValueError):
    """A valid date and offset whose UTC time is before year 1 or after year 9999."""


def parse_timestamp(value: str) -> tuple[datetime, bool]:
    """Parse an ISO 8601 timestamp; returns it in UTC and whether an offset was given.

    Raises ValueError when unparseable, and its subclass DateOutOfRange when out of range in UTC.
    """
    text = value.strip()
    if not text:
        raise ValueError("empty")
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC), False
    return _in_utc(moment), True


def _in_utc(moment: datetime) -> datetime:
    """``moment`` in UTC; DateOutOfRange when that falls outside years 1 to 9999 (an offset at either end)."""
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        raise DateOutOfRange(f"date {moment.isoformat()} is out of range once in UTC") from None


def _timestamp(
    fields: Mapping[str, Any], key: str, where: str, warnings: list[str], *, required: bool
) -> datetime | None:
    value = fields.get(key)
    if value is None or value == "":
        if required:
            raise ItemError(where, f"missing {key} date")
        return None
    if isinstance(value, datetime):
        if value.tzinfo is None:
            warnings.append(f"{key} has no time zone offset; taken as UTC")
            return value.replace(tzinfo=UTC)
        try:
            return _in_utc(value)
        except DateOutOfRange:
            raise ItemError(where, f"{key} date {value.isoformat()} is out of range") from None
    if not isinstance(value, str):
        raise ItemError(where, f"unparseable {key} date {value!r}")
    shown = single_line(value)[:80]
    try:
        moment, had_offset = parse_timestamp(value)
    except DateOutOfRange:
        raise ItemError(where, f"{key} date {shown!r} is out of range") from None
    except ValueError:
        raise ItemError(where, f"unparseable {key} date {shown!r}") from None
    if not had_offset:
        warnings.append(f"{key} {value!r} has no time zone offset; taken as UTC")
    return moment


def _image(value: Any, base: str, where: str, warnings: list[str]) -> Image | None:
    if value is None or value == "" or value == {}:
        return None
    if isinstance(value, str):
        value = {"url": value}
    if not isinstance(value, Mapping) or not isinstance(value.get("url"), str):
        warnings.append("image must be an object with a 'url'; image ignored")
        return None
    url = absolute_url(value["url"], base)
    url = None if url is None else percent_encode_unsafe(url)
    if url is None or not is_web_url(url):
        warnings.append(f"image URL {single_line(value['url'])[:200]!r} is not an http(s) URL; image ignored")
        return None
    alt = value.get("alt", "")
    return Image(url, plain_text(alt) if isinstance(alt, str) else "")
