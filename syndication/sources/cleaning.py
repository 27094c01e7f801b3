"""Making outside text safe once, at the door: sanitised HTML, no XML-forbidden characters, one-line fields.

Everything a source hands over passes through here before it is stored, so feeds, emails and pages can
trust what the store gives them.
"""

from __future__ import annotations

import html
import re
from urllib.parse import urljoin, urlsplit

import nh3

ALLOWED_TAGS = frozenset(
    {
        "a", "abbr", "b", "blockquote", "br", "caption", "cite", "code", "dd", "del", "details", "div", "dl",
        "dt", "em", "figcaption", "figure", "h1", "h2", "h3", "h4", "h5", "h6", "hr", "i", "img", "ins", "kbd",
        "li", "mark", "ol", "p", "pre", "q", "s", "small", "span", "strong", "sub", "summary", "sup", "table",
        "tbody", "td", "tfoot", "th", "thead", "time", "tr", "u", "ul",
    }
)  # fmt: skip
ALLOWED_ATTRIBUTES = {
    "a": {"href", "title", "hreflang"},
    "img": {"src", "alt", "title", "width", "height"},
    "blockquote": {"cite"},
    "q": {"cite"},
    "del": {"cite", "datetime"},
    "ins": {"cite", "datetime"},
    "time": {"datetime"},
    "td": {"colspan", "rowspan"},
    "th": {"colspan", "rowspan", "scope"},
    "abbr": {"title"},
    "*": {"lang", "dir"},
}
URL_ATTRIBUTES = frozenset({"href", "src", "cite"})
SAFE_SCHEMES = frozenset({"http", "https", "mailto"})

# XML 1.0 allows tab, LF, CR and everything from U+0020 except surrogates, U+FFFE and U+FFFF.
_XML_FORBIDDEN = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
# Every kind of line break and run of white space, so a one-line field can never carry CR or LF.
_WHITESPACE = re.compile(r"[\s\u2028\u2029\x85]+")
# A space before block-level tags keeps words apart when the tags are stripped for plain text.
_BLOCK_TAG = re.compile(r"<(/?(?:p|div|br|li|ul|ol|h[1-6]|tr|td|th|blockquote|figcaption|hr|dd|dt)\b)", re.I)


def remove_forbidden_characters(text: str) -> str:
    """Drop the characters XML 1.0 forbids (control characters, lone surrogates, U+FFFE/U+FFFF)."""
    return _XML_FORBIDDEN.sub("", text)


def single_line(text: str) -> str:
    """Text for a one-line field (title, name, guid): forbidden characters out, every line break a space."""
    return _WHITESPACE.sub(" ", remove_forbidden_characters(text)).strip()


def absolute_url(value: str, base: str) -> str | None:
    """``value`` resolved against ``base`` if the result is an http(s) or mailto URL, else None."""
    candidate = urljoin(base, single_line(value))
    scheme = urlsplit(candidate).scheme.lower()
    return candidate if scheme in SAFE_SCHEMES else None


def is_web_url(value: str) -> bool:
    """Whether ``value`` is an absolute http(s) URL with a host."""
    parts = urlsplit(value)
    return parts.scheme in ("http", "https") and bool(parts.hostname) and value == single_line(value)


def sanitise_html(fragment: str, base_url: str) -> str:
    """An allow-listed copy of ``fragment``: no script, style, iframe, event handler or unsafe URL survives,
    and every link or image URL is made absolute against ``base_url``."""

    def fix_url(tag: str, attribute: str, value: str) -> str | None:
        if attribute in URL_ATTRIBUTES:
            return absolute_url(value, base_url)
        return value

    return nh3.clean(
        remove_forbidden_characters(fragment),
        tags=set(ALLOWED_TAGS),
        attributes={tag: set(names) for tag, names in ALLOWED_ATTRIBUTES.items()},
        attribute_filter=fix_url,
        url_schemes=set(SAFE_SCHEMES),
        link_rel="noopener noreferrer",
        strip_comments=True,
    ).strip()


def html_to_text(fragment: str) -> str:
    """The readable text of an HTML fragment on one line (tags and script/style content dropped)."""
    stripped = nh3.clean(_BLOCK_TAG.sub(r" <\1", remove_forbidden_characters(fragment)), tags=set())
    return single_line(html.unescape(stripped))


def summarise(text: str, words: int) -> str:
    """The first ``words`` words of ``text``, cut at a word, with an ellipsis when something was cut."""
    parts = text.split()
    if len(parts) <= words:
        return " ".join(parts)
    return " ".join(parts[:words]).rstrip(",;:.-–—") + "…"
