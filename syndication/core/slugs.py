"""Turning names into URL-safe slugs, the same way everywhere (author feeds, region names)."""

from __future__ import annotations

import hashlib
import re
import unicodedata
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
