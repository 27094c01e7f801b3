"""Turning names into URL-safe slugs: ``slugify`` for region names met in sources (a rule that must not change: their
feed URLs are computed, not stored), and ``author_slug`` for authors, whose slugs the store keeps once given."""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Container
from functools import lru_cache

_NOT_SLUG = re.compile(r"[^a-z0-9]+")
# A slug names files (``authors/<slug>.atom``) and file names end at 255 bytes: longer slugs are cut, and end with
# a hash of the whole name so that two long names sharing a beginning still differ.
MAX_SLUG_LENGTH = 100


@lru_cache(maxsize=65536)  # names repeat across posts: authors, regions
def slugify(text: str) -> str:
    """``'São Paulo'`` → ``'sao-paulo'``; a name with no Latin letters keeps a stable hash-free fallback.

    Non-Latin names (``'北九州市'``) have no ASCII form, so their slug is their code points in hex, which is
    stable and URL-safe. No slug is longer than MAX_SLUG_LENGTH.
    """
    decomposed = unicodedata.normalize("NFKD", text)
    ascii_text = decomposed.encode("ascii", "ignore").decode("ascii").lower()
    slug = _NOT_SLUG.sub("-", ascii_text).strip("-")
    if not slug:
        stripped = text.strip()
        slug = "u-" + "-".join(f"{ord(ch):x}" for ch in stripped if not ch.isspace()) if stripped else "unnamed"
    if len(slug) <= MAX_SLUG_LENGTH:
        return slug
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:12]
    return slug[: MAX_SLUG_LENGTH - len(digest) - 1].rstrip("-") + "-" + digest


def name_key(name: str) -> str:
    """What makes two author names one author: the same letters once Unicode-normalised, whatever their case
    ("Ana Pérez" and "ANA PÉREZ"; "São Paulo" and "Sao Paulo" are two)."""
    return unicodedata.normalize("NFKC", " ".join(name.split())).casefold()


def author_slug(name: str, taken: Container[str]) -> str:
    """A new author's slug: the name transliterated to ASCII (``'ICLEI 한국사무소'`` → ``'iclei-hangugsamuso'``,
    ``'北九州市'`` → ``'bei-jiu-zhou-shi'``), and, when another author has that slug already (``taken``), a short
    hash of the name after it, so two different names never share a feed. The store keeps the slug it gave."""
    from slugify import slugify as transliterated_slug  # its transliteration tables: only when an author is new

    base = transliterated_slug(name, max_length=MAX_SLUG_LENGTH - 13, word_boundary=False) or "author"
    if base not in taken:
        return base
    digest = hashlib.sha256(name_key(name).encode("utf-8", "surrogatepass")).hexdigest()
    for length in (6, 12, 64):  # a longer hash only if a shorter one is taken too
        candidate = f"{base}-{digest[:length]}"
        if candidate not in taken:
            return candidate
    raise ValueError(f"no free slug for the author {name!r}")  # 64 hex digits taken: cannot happen
