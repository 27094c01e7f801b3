"""Turning names into URL-safe slugs, the same way everywhere (author feeds, region names)."""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

_NOT_SLUG = re.compile(r"[^a-z0-9]+")


@lru_cache(maxsize=65536)  # names repeat across posts: authors, regions
def slugify(text: str) -> str:
    """``'São Paulo'`` → ``'sao-paulo'``; a name with no Latin letters keeps a stable hash-free fallback.

    Non-Latin names (``'北九州市'``) have no ASCII form, so their slug is their code points in hex, which is
    stable and URL-safe.
    """
    decomposed = unicodedata.normalize("NFKD", text)
    ascii_text = decomposed.encode("ascii", "ignore").decode("ascii").lower()
    slug = _NOT_SLUG.sub("-", ascii_text).strip("-")
    if slug:
        return slug
    stripped = text.strip()
    return "u-" + "-".join(f"{ord(ch):x}" for ch in stripped if not ch.isspace()) if stripped else "unnamed"
