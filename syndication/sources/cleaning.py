"""Making outside text safe once, at the door: sanitised HTML, no XML-forbidden characters, one-line fields.

Everything a source hands over passes through here before it is stored, so feeds, emails and pages can
trust what the store gives them.
"""

from __future__ import annotations

import html
import re
from contextvars import ContextVar
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
SAFE_SCHEMES = frozenset({"http", "https", "mailto"})

# XML 1.0 allows tab, LF, CR and everything from U+0020 except surrogates, U+FFFE and U+FFFF.
_XML_FORBIDDEN = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
# C0 controls, DEL and C1 controls (Unicode category Cc), tab, CR and LF among them.
_CONTROLS = re.compile("[\x00-\x1f\x7f-\x9f]")
# Every kind of line break and run of white space, so a one-line field can never carry CR or LF.
_WHITESPACE = re.compile(r"[\s\u2028\u2029\x85]+")
# Bidirectional embeddings, overrides and isolates: one left open in a title or a name turns the rest of the line
# around it (in a subject, a feed reader's list), which lets text pose as something else.
BIDI_CONTROLS = re.compile("[\u202a-\u202e\u2066-\u2069]")
# A space before block-level tags keeps words apart when the tags are stripped for plain text.
_WEB_URL = re.compile(
    r"https?://(?:[^/?#\s@]*@)?(?:\[[0-9a-f:.]+\]|[^/?#\s:@\[\]]+)(?::\d*)?(?:[/?#][^\s]*)?\Z", re.IGNORECASE
)
_SERIALISED_TAG = re.compile(r'<[^>"]*(?:"[^"]*"[^>"]*)*>')
_SERIALISED_BLOCK_TAG = re.compile(
    r'</?(?:p|div|br|li|ul|ol|h[1-6]|tr|td|th|blockquote|figcaption|hr|dd|dt)\b[^>"]*(?:"[^"]*"[^>"]*)*>'
)
_BLOCK_TAG = re.compile(r"<(/?(?:p|div|br|li|ul|ol|h[1-6]|tr|td|th|blockquote|figcaption|hr|dd|dt)\b)", re.I)


def remove_forbidden_characters(text: str) -> str:
    """Drop the characters XML 1.0 forbids (control characters, lone surrogates, U+FFFE/U+FFFF)."""
    return _XML_FORBIDDEN.sub("", text) if _XML_FORBIDDEN.search(text) else text


def single_line(text: str) -> str:
    """An identifier or address on one line (guid, URL, language tag, a value quoted in a message): forbidden
    characters and bidirectional controls out, every line break a space.

    Text a reader reads (a title, a name) goes through ``plain_text`` instead, which keeps words apart.
    """
    # Most fields are already clean; isprintable() is false for every control (bidi ones too) and line separator.
    if text.isprintable() and "  " not in text and text == text.strip():
        return text
    return _WHITESPACE.sub(" ", BIDI_CONTROLS.sub("", remove_forbidden_characters(text))).strip()


def plain_text(text: str) -> str:
    """A plain-text field on one line (title, summary, author name, image alt), kept as the writer wrote it.

    ``<``, ``>`` and ``&`` are text here, not markup: whatever writes the field out (XML writers, autoescaped
    templates) escapes them. A control character becomes a space, as a line break does, so the words on either
    side of it stay two words; runs of white space become one space. Bidirectional controls and the characters
    XML forbids that are not controls (lone surrogates, U+FFFE, U+FFFF) go.
    """
    if text.isprintable() and "  " not in text and text == text.strip():
        return text
    return single_line(_CONTROLS.sub(" ", text))


def absolute_url(value: str, base: str) -> str | None:
    """``value`` resolved against ``base`` if the result is an http(s) or mailto URL, else None."""
    return UrlResolver(base).resolve(value)


class UrlResolver:
    """Resolves the URLs of one document against its base; the common shapes skip ``urljoin``, the costly step."""

    def __init__(self, base: str) -> None:
        self.base = base
        parts = urlsplit(base)
        self.scheme = parts.scheme
        self.origin = f"{parts.scheme}://{parts.netloc}"
        self.directory = self.origin + (parts.path[: parts.path.rfind("/") + 1] or "/")

    def resolve(self, value: str) -> str | None:
        """The absolute form of ``value`` when its scheme is safe, else None (``javascript:``, ``data:``)."""
        value = single_line(value).replace(" ", "%20")
        head = value.split("/", 1)[0].split("?", 1)[0].split("#", 1)[0]
        if ":" in head:  # it names a scheme of its own
            return value if head.split(":", 1)[0].lower() in SAFE_SCHEMES else None
        if "./" not in value and value not in (".", "..") and not value.startswith(("?", "#")):
            if value.startswith("//"):
                return f"{self.scheme}:{value}"
            if value.startswith("/"):
                return self.origin + value
            if value:
                return self.directory + value
        candidate = urljoin(self.base, value)
        return candidate if urlsplit(candidate).scheme.lower() in SAFE_SCHEMES else None


def is_web_url(value: str) -> bool:
    """Whether ``value`` is an absolute http(s) URL with a host, on one line."""
    return _WEB_URL.match(value) is not None


# Characters RFC 3986 leaves out of URLs: browsers send them percent-encoded, and raw they break a URL out of the
# text around it (a plain-text email, a feed reader's list).
_NOT_IN_URLS = re.compile(r'["<>\\^`{|}]')


def percent_encode_unsafe(url: str) -> str:
    """``url`` with the characters no URL may hold raw (quotes, angle brackets and the like) percent-encoded."""
    return _NOT_IN_URLS.sub(lambda match: f"%{ord(match.group()):02X}", url)


# The document being sanitised: the reusable cleaner asks it to resolve each relative URL.
_document: ContextVar[UrlResolver] = ContextVar("document")


def _resolve_relative(url: str) -> str | None:
    return _document.get().resolve(url)


# Built once: passing the allow-lists on every call costs more than the sanitising itself.
_CLEANER = nh3.Cleaner(
    tags=set(ALLOWED_TAGS),
    attributes={tag: set(names) for tag, names in ALLOWED_ATTRIBUTES.items()},
    url_schemes=set(SAFE_SCHEMES),
    url_relative=_resolve_relative,
    link_rel="noopener noreferrer",
    strip_comments=True,
)


def sanitise_html(fragment: str, base_url: str) -> str:
    """An allow-listed copy of ``fragment``: no script, style, iframe, event handler or unsafe URL survives,
    and every link or image URL is made absolute against ``base_url``."""
    token = _document.set(UrlResolver(base_url))
    try:
        return str(_CLEANER.clean(remove_forbidden_characters(fragment))).strip()
    finally:
        _document.reset(token)


def html_to_text(fragment: str) -> str:
    """The readable text of an HTML fragment on one line (tags and script/style content dropped, character
    references read once), cleaned as ``plain_text`` cleans text."""
    if "<" not in fragment and "&" not in fragment:
        return plain_text(fragment)
    # Controls become spaces before parsing, as in plain text: between two words they are a word break.
    spaced = remove_forbidden_characters(_CONTROLS.sub(" ", fragment))
    stripped = nh3.clean(_BLOCK_TAG.sub(r" <\1", spaced), tags=set())
    return plain_text(html.unescape(stripped))


def sanitised_html_to_text(fragment: str) -> str:
    """The text of HTML that ``sanitise_html`` produced, without parsing it a second time.

    Its output is well-formed, every attribute value double-quoted with ``"`` escaped, and comments are gone,
    so a quote-aware pattern finds every tag.
    """
    return single_line(html.unescape(_SERIALISED_TAG.sub("", _SERIALISED_BLOCK_TAG.sub(" ", fragment))))


def summary_from_html(sanitised: str, words: int) -> str:
    """The first ``words`` words of sanitised HTML, reading only as long a prefix as they need."""
    limit = words * 12
    while True:
        prefix = sanitised[:limit]
        cut = len(sanitised) > limit
        if cut:
            last_open = prefix.rfind("<")
            if last_open >= 0 and not _SERIALISED_TAG.match(prefix, last_open):
                prefix = prefix[:last_open]  # the cut fell inside a tag
        text = html.unescape(_SERIALISED_TAG.sub("", _SERIALISED_BLOCK_TAG.sub(" ", prefix)))
        parts = remove_forbidden_characters(text).split()
        if cut:
            parts = parts[:-1]  # the last word may be cut short
        if not cut or len(parts) > words:
            break
        limit *= 4  # markup-heavy content: read further
    if len(parts) <= words and not cut:
        return " ".join(parts)
    return " ".join(parts[:words]).rstrip(",;:.-–—") + "…"


def summarise(text: str, words: int) -> str:
    """The first ``words`` words of ``text``, cut at a word, with an ellipsis when something was cut."""
    parts = text.split()
    if len(parts) <= words:
        return " ".join(parts)
    return " ".join(parts[:words]).rstrip(",;:.-–—") + "…"
