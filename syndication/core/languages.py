"""Language tags (RFC 5646) as the service keeps them, and their names as readers see them."""

from __future__ import annotations

from functools import lru_cache

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


@lru_cache(maxsize=1024)
def language_name(tag: str, in_language: str | None = None) -> str:
    """A language's name in itself ("Español", "日本語") or in ``in_language``; its tag when Babel does not know it."""
    try:
        locale = Locale.parse(tag.replace("-", "_"))
        name = locale.get_display_name((in_language or tag).replace("-", "_"))
    except (UnknownLocaleError, ValueError):
        return tag
    return name[:1].upper() + name[1:] if name else tag
