"""Language tags (RFC 5646) as the service keeps them, their names as readers see them, and the one rule that
writes a language into a link (``with_language``: the pages' links and the emails' alike)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Final
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from babel import Locale, UnknownLocaleError


@lru_cache(maxsize=1024)
def canonical_tag(tag: str) -> str:
    """``tag`` in the case RFC 5646 recommends (``pt-br`` → ``pt-BR``, ``zh_hant_tw`` → ``zh-Hant-TW``), so that one
    language is one key everywhere (per-language feeds, subscribers' choices). Tags compare without case, so this
    changes no meaning."""
    parts = tag.strip().replace("_", "-").split("-")
    canonical = [parts[0].lower()]
    for part in parts[1:]:
        if len(part) == 2 and part.isalpha():
            canonical.append(part.upper())  # a region
        elif len(part) == 4 and part.isalpha():
            canonical.append(part.title())  # a script
        else:
            canonical.append(part.lower())
    return "-".join(canonical)


# The query parameter that chooses a page's language (``?lang=es``).
LANGUAGE_PARAMETER = "lang"


def with_language(href: str, language: str) -> str:
    """``href`` with ``lang=<language>`` in its query (in place of any it had), its fragment kept: how a page's
    links keep the language chosen, and how an email's links to the site ask for the email's language."""
    parts = urlsplit(href)
    kept = parse_qsl(parts.query, keep_blank_values=True)
    query = [(name, value) for name, value in kept if name != LANGUAGE_PARAMETER]
    query.append((LANGUAGE_PARAMETER, language))
    return urlunsplit(parts._replace(query=urlencode(query)))


@lru_cache(maxsize=1024)
def language_name(tag: str, in_language: str | None = None) -> str:
    """A language's name in itself ("Español", "日本語") or in ``in_language``; its tag when Babel does not know it."""
    try:
        locale = Locale.parse(tag.replace("-", "_"))
        name = locale.get_display_name((in_language or tag).replace("-", "_"))
    except (UnknownLocaleError, ValueError):
        return tag
    return name[:1].upper() + name[1:] if name else tag


# What a digest does with posts in languages its reader does not read: ``all`` shows every post as published,
# ``first`` puts the posts in the reader's languages first in each section, ``only`` leaves the others out.
LANGUAGE_CHOICES: Final = ("all", "first", "only")
# A language tag as the service takes it from a reader (RFC 5646's shape, not its registry).
_TAG = re.compile(r"[A-Za-z]{2,8}(?:-[A-Za-z0-9]{1,8})*")


def is_language_tag(value: str) -> bool:
    """Whether ``value`` has the shape of a language tag (``es``, ``pt-BR``, ``zh-Hant``; ``_`` read as ``-``)."""
    return _TAG.fullmatch(value.strip().replace("_", "-")) is not None


def primary_subtag(tag: str) -> str:
    """The language of ``tag`` without its script or region, in lower case: ``pt`` for ``pt-BR``."""
    return tag.strip().replace("_", "-").split("-")[0].lower()


@dataclass(frozen=True, slots=True)
class Reading:
    """The languages one reader reads (canonical tags, the language of their emails first) and what their digest
    does with posts in others (``first`` or ``only``; a reader of ``all`` needs no Reading).

    A post is in a reader's language when their primary subtags match: a reader of ``pt`` reads ``pt-BR`` posts,
    and one of ``es-MX`` reads ``es`` ones."""

    languages: tuple[str, ...]
    choice: str
    _primary: frozenset[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.choice not in LANGUAGE_CHOICES[1:]:
            raise ValueError(f"unknown language choice {self.choice!r}")
        object.__setattr__(self, "_primary", frozenset(primary_subtag(tag) for tag in self.languages))

    def reads(self, tag: str) -> bool:
        """Whether a post in ``tag`` is in one of the reader's languages."""
        return primary_subtag(tag) in self._primary


def reading(languages: Iterable[str], choice: str) -> Reading | None:
    """The Reading of a reader of ``languages`` (theirs first; repeats left out) who chose ``choice``; None for
    ``all`` (every post as published) or no language, so that every such reader shares one digest."""
    tags = tuple(dict.fromkeys(canonical_tag(tag) for tag in languages if tag.strip()))
    if choice == "all" or not tags:
        return None
    return Reading(tags, choice)


@lru_cache(maxsize=1024)
def text_direction(tag: str) -> str:
    """The ``dir`` of text in ``tag``: ``rtl`` for a language written right to left (Arabic, Hebrew, Persian,
    Urdu... as Babel knows them), else ``auto``, so that the browser or mail client reads the direction off the
    text itself (a post labelled wrongly still reads right). Said outright for right-to-left languages because
    a title opening with a Latin word ("COP28 ...") would read left to right with ``auto``, and some mail
    clients ignore ``auto``."""
    try:
        order = Locale.parse(tag.replace("-", "_")).character_order
    except (UnknownLocaleError, ValueError):
        return "auto"
    return "rtl" if order == "right-to-left" else "auto"
