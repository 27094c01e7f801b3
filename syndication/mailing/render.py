"""Digest and notice emails from Jinja2 templates: inlined HTML for mail clients and a plain-text twin.

Rendering is built to be done once per variant (edition x followed themes x language) and personalised
cheaply: the per-recipient links are rendered as placeholder URLs, premailer inlines the CSS once, and
``RenderedEmail.personalised`` puts each recipient's links in by substitution. The links are URLs of our own
(signed tokens: letters, digits, ``-_.~/:?=``), so substituting them gives exactly what rendering them would.

Templates live in ``templates/email`` (``[digest] templates_dir`` can hold replacements with the same names).
Strings go through gettext (Jinja2's i18n extension) with the catalogs in ``syndication/locales`` (domain
``messages``) (English, Spanish, French and Portuguese are shipped; a configured language without one is worded in
English); dates, numbers and lists ("A, B and C") are formatted by Babel in the reader's language, and themes are
named in it (the ``name`` filter: ``Theme.name_in``, which falls back to the site language's name). A renderer
refuses a language that is not in ``[digest] languages`` (RenderError): the sender fails the delivery of a reader
whose stored language is such, alone and with that reason.

Every link an email gives to the site's own pages leads to them in the email's language: the templates write
them with ``site_url(path)`` and ``theme_url(theme)``, which add ``lang=<language>`` (``core.languages
.with_language``, the rule the pages' own links keep), and the "view online" link the sender gives says it too.
A subscriber's personal links (confirm, rejoin, preferences, unsubscribe) carry no ``lang``: the pages they open
follow the language the subscriber chose, as it is when they open it, not as it was when the email was written
(an old email keeps working after they change it). An editor's links (approve, see the edition) carry none
either: editors choose no language, and their pages follow their browser's.

Every word a template shows is marked for translation (``tests/test_email_languages.py`` holds the rule: no
letters in a template's text outside ``{% trans %}`` blocks and ``_()`` calls), and the shipped catalogs
translate every one of them.
"""

from __future__ import annotations

import logging
import re
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from functools import cached_property
from typing import Any
from zoneinfo import ZoneInfo

from babel import Locale, UnknownLocaleError
from babel.dates import format_date, format_datetime
from babel.lists import format_list
from babel.numbers import format_decimal
from babel.support import Translations
from jinja2 import ChoiceLoader, Environment, FileSystemLoader, StrictUndefined, TemplateError, select_autoescape
from lxml import html as lxml_html
from markupsafe import escape
from premailer import Premailer

from syndication.config import Settings
from syndication.core.digest import Digest, with_shown
from syndication.core.languages import text_direction, with_language
from syndication.core.models import Theme
from syndication.errors import SyndicationError
from syndication.mailing.message import PreparedBody
from syndication.resources import catalog_file, catalogs, email_templates
from syndication.resources import translations as compiled_catalog

SHIPPED_TEMPLATES = email_templates()
LOCALES = catalogs()
GMAIL_CLIP_BYTES = 102 * 1024
# The language whose wording a language without a catalog of its own gets (the templates' msgids are English).
FALLBACK_LANGUAGE = "en"

# The emails the renderer makes (each: subject, preheader, HTML and text) and the parts they take in: the
# cadences' words (``_cadences.txt``) and the sentence saying what a reader receives (``preferences.summary.txt``).
EMAILS = ("digest", "confirm", "preferences", "approval", "paused", "invitation", "password_reset")
REQUIRED_TEMPLATES = (
    *(f"{name}{suffix}" for name in EMAILS for suffix in (".subject.txt", ".preheader.txt", ".html", ".txt")),
    "base.html",
    "_section.html",
    "_post.html",
    "_sender.txt",
    "_cadences.txt",
    "_roles.txt",
    "preferences.summary.txt",
    "styles.css",
)


class RenderError(SyndicationError):
    """A template is missing or broken, or a language has no catalog."""


@dataclass(frozen=True, slots=True)
class Links:
    """The links that differ for each recipient."""

    unsubscribe: str
    preferences: str
    view_online: str


# Placeholders rendered in a variant's place of each recipient's links; ".invalid" can never be a real host. A
# rendered email remembers the ones it holds (``RenderedEmail.links``) and only those are replaced, so they carry
# a secret made for this process: a post (its URL, title or summary) cannot hold them, and so cannot be given a
# reader's own unsubscribe or view link.
_PLACEHOLDER_SECRET = secrets.token_hex(16)
PLACEHOLDERS = Links(
    unsubscribe=f"https://recipient.invalid/{_PLACEHOLDER_SECRET}/unsubscribe",
    preferences=f"https://recipient.invalid/{_PLACEHOLDER_SECRET}/preferences",
    view_online=f"https://recipient.invalid/{_PLACEHOLDER_SECRET}/view",
)


@dataclass(frozen=True)
class RenderedEmail:
    """One rendered email: subject, preheader, inlined HTML and plain text, with the links it was given."""

    subject: str
    preheader: str
    html: str
    text: str
    language: str
    links: Links
    problems: tuple[str, ...] = field(default=())
    #: A digest email's digest as rendered: after the size cut, so its counts are what the email shows.
    digest: Digest | None = field(default=None)

    def personalised(self, links: Links) -> RenderedEmail:
        """The same email with another recipient's links, by substitution (no rendering)."""
        text_lines, html_lines = self._substitutions(links)
        return replace(self, html=html_lines(self.html), text=text_lines(self.text), links=links)

    def encoded_for(self, links: Links) -> tuple[bytes, bytes]:
        """The quoted-printable text and HTML bodies with ``links``: only the lines holding links are encoded
        anew, so this costs microseconds however long the digest is."""
        text_body, html_body = self._prepared
        text_lines, html_lines = self._substitutions(links)
        return text_body.encode(text_lines), html_body.encode(html_lines)

    @cached_property
    def _prepared(self) -> tuple[PreparedBody, PreparedBody]:
        placeholders = [self.links.unsubscribe, self.links.preferences, self.links.view_online]
        return (
            PreparedBody(self.text, placeholders),
            PreparedBody(self.html, [str(escape(placeholder)) for placeholder in placeholders]),
        )

    @cached_property
    def _placeholders(self) -> tuple[list[str], list[str]]:
        """This email's links (the placeholders a recipient's replace), as they are and HTML-escaped: the same for
        every recipient of the variant, so escaped once."""
        olds = [self.links.unsubscribe, self.links.preferences, self.links.view_online]
        return olds, [str(escape(old)) for old in olds]

    def _substitutions(self, links: Links) -> tuple[Callable[[str], str], Callable[[str], str]]:
        olds, escaped_olds = self._placeholders
        news = [links.unsubscribe, links.preferences, links.view_online]
        pairs = list(zip(olds, news, strict=True))
        escaped = [(old, str(escape(new))) for old, new in zip(escaped_olds, news, strict=True)]

        def text(line: str) -> str:
            for old, new in pairs:
                line = line.replace(old, new)
            return line

        def html(line: str) -> str:
            for old, new in escaped:
                line = line.replace(old, new)
            return line

        return text, html


class MailRenderer:
    """Renders emails for one site; keeps one Jinja2 environment per language."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        folders = [folder for folder in (settings.digest.templates_dir, SHIPPED_TEMPLATES) if folder is not None]
        missing = [name for name in REQUIRED_TEMPLATES if not any((folder / name).is_file() for folder in folders)]
        if missing:
            # Every email of that name would fail: refuse before any is made (a broken install, as a rule).
            shown = " or ".join(str(folder) for folder in folders)
            raise RenderError(f"email templates missing from {shown}: {', '.join(missing)}")
        self._loader = ChoiceLoader([FileSystemLoader(str(folder)) for folder in folders])
        self._environments: dict[str, Environment] = {}
        self._zone = ZoneInfo(settings.site.timezone)

    def render_digest(
        self, digest: Digest, language: str, links: Links = PLACEHOLDERS, intro: str | None = None
    ) -> RenderedEmail:
        """The digest email in ``language``; sections are cut (with their "N more" link) to stay unclipped.

        Over ``[digest] max_html_bytes`` it shows the most posts that fit (``with_shown``: the sections take
        turns), found by bisection on the number shown, so the budget is used to its limit; at least one post
        per section is shown (over the budget then, which ``problems`` says). ``.digest`` is what it shows."""
        budget = self.settings.digest.max_html_bytes

        def rendered(shown: Digest) -> RenderedEmail:
            return replace(self._render_digest_once(shown, language, links, intro), digest=shown)

        def size(email: RenderedEmail) -> int:
            return len(email.html.encode("utf-8"))

        email = rendered(digest)
        if size(email) > budget:
            low = sum(1 for section in digest.sections if section.items)  # the fewest shown: one per section
            high = digest.shown_count - 1  # the most that may fit
            best = rendered(with_shown(digest, low))
            if size(best) <= budget:
                while low < high:  # invariant: ``low`` fits (``best``), more than ``high`` does not
                    middle = (low + high + 1) // 2
                    candidate = rendered(with_shown(digest, middle))
                    if size(candidate) <= budget:
                        low, best = middle, candidate
                    else:
                        high = middle - 1
            email = best
        return replace(email, problems=check_email(email, budget))

    def _render_digest_once(self, digest: Digest, language: str, links: Links, intro: str | None) -> RenderedEmail:
        context = {"digest": digest, "intro": intro, "links": links}
        return self._render("digest", language, links, context)

    def render_notice(
        self, name: str, language: str, context: Mapping[str, Any], links: Links = PLACEHOLDERS
    ) -> RenderedEmail:
        """A short message (``confirm``, ``preferences``): ``name``.subject.txt, ``name``.html, ``name``.txt."""
        email = self._render(name, language, links, {**context, "links": links})
        return replace(email, problems=check_email(email, self.settings.digest.max_html_bytes))

    def subscription_summary(self, language: str, cadence: str, themes: Sequence[Theme] | None) -> str:
        """What a reader of ``language`` receives, in one sentence of that language ("A weekly digest in English:
        Climate action and Resilience."): the cadence in its words, the language by its own name, the themes
        (None: every theme) by their names in it. ``preferences.summary.txt`` writes it."""
        environment = self.environment(language)
        locale = _locale(language)
        # The language by its own name, without its region ("português" for pt-BR): the reader's own words for it.
        own_name = Locale(locale.language).get_display_name(locale) or language
        context = {
            "site": self.settings.site,
            "language": language,
            "language_name": own_name,
            "cadence": cadence,
            "themes": None if themes is None else tuple(themes),
        }
        try:
            return _one_line(environment.get_template("preferences.summary.txt").render(context))
        except TemplateError as error:
            raise RenderError(f"template 'preferences.summary.txt' ({language}): {error}") from error

    def _render(self, name: str, language: str, links: Links, context: Mapping[str, Any]) -> RenderedEmail:
        environment = self.environment(language)
        site = self.settings.site
        # The footer's sender: who sends (``organisation``: [site] organisation, else the title) and where
        # (``postal_lines``: [site] postal_address, one item a line; empty when unset), for the templates to place.
        sender = {"organisation": site.sender_name, "postal_lines": site.postal_lines}
        shared = {"site": site, "language": language, "links": links, **sender, **context}
        try:
            subject = _one_line(environment.get_template(f"{name}.subject.txt").render(shared))
            shared["subject"] = subject
            preheader = _one_line(environment.get_template(f"{name}.preheader.txt").render(shared))
            shared["preheader"] = preheader
            html = inline_css(environment.get_template(f"{name}.html").render(shared))
            text = environment.get_template(f"{name}.txt").render(shared).strip() + "\n"
        except TemplateError as error:
            raise RenderError(f"template {name!r} ({language}): {error}") from error
        return RenderedEmail(subject, preheader, html, text, language, links)

    def environment(self, language: str) -> Environment:
        """The Jinja2 environment for ``language``, with its translations and Babel filters."""
        if language not in self._environments:
            if language not in self.settings.digest.languages:
                raise RenderError(
                    f"no digest language {language!r} (configured: {', '.join(self.settings.digest.languages)})"
                )
            self._environments[language] = self._make_environment(language)
        return self._environments[language]

    def _make_environment(self, language: str) -> Environment:
        locale = _locale(language)
        environment = Environment(
            loader=self._loader,
            autoescape=select_autoescape(enabled_extensions=("html",), default_for_string=True),
            undefined=StrictUndefined,
            extensions=["jinja2.ext.i18n"],
            trim_blocks=True,
            lstrip_blocks=True,
        )
        environment.install_gettext_translations(translations(language), newstyle=True)  # type: ignore[attr-defined]
        zone = self._zone
        environment.filters["date"] = lambda moment, form="long": format_date(
            moment.astimezone(zone), format=form, locale=locale
        )
        environment.filters["datetime"] = lambda moment, form="medium": format_datetime(
            moment, format=form, tzinfo=zone, locale=locale
        )
        environment.filters["number"] = lambda number: format_decimal(number, locale=locale)
        # A theme's (or region's) name in this language; "A, B and C" as this language writes a list.
        environment.filters["name"] = lambda named: named.name_in(language)
        environment.filters["direction"] = text_direction
        environment.filters["and_list"] = lambda items: format_list(list(items), locale=locale) if items else ""
        # Links to the site's pages, in this email's language (see the module's description).
        base = self.settings.site.base_url
        environment.globals["site_url"] = lambda path="/": with_language(f"{base}{path}", language)
        environment.globals["theme_url"] = lambda theme: with_language(f"{base}/themes/{theme.slug}", language)
        environment.globals["text_rule"] = "-" * 60
        return environment


def _one_line(text: str) -> str:
    """``text`` on one line: runs of ASCII whitespace (the templates' line breaks) become one space. A no-break
    space stays: French puts one before a colon."""
    return _ASCII_SPACES.sub(" ", text).strip(" ")


_ASCII_SPACES = re.compile(r"[ \t\r\n\f\v]+")


def _locale(language: str) -> Locale:
    try:
        return Locale.parse(language.replace("-", "_"))
    except (UnknownLocaleError, ValueError) as error:
        raise RenderError(f"unknown language {language!r}") from error


def catalog_language(language: str) -> str | None:
    """The shipped catalog that words ``language`` (its own, else its base language's: ``pt-BR`` is worded by
    ``pt``), by its folder's name; None when there is none (its readers get the English wording)."""
    po_file = catalog_file(LOCALES, language)
    return None if po_file is None else po_file.parent.parent.name


def translations(language: str) -> Translations:
    """The catalog of ``language`` (its base language's if there is no regional one), compiled in memory once per
    process (``resources.translations``); for a language with neither, the English one: its readers get English
    wording, with dates and numbers in their language (``[digest] languages`` takes only languages Babel knows)."""
    po_file = catalog_file(LOCALES, language) or catalog_file(LOCALES, FALLBACK_LANGUAGE)
    if po_file is None:
        raise RenderError(f"no message catalog for language {language!r} nor {FALLBACK_LANGUAGE!r} in {LOCALES}")
    return compiled_catalog(po_file)


def inline_css(html: str) -> str:
    """Move the stylesheet into ``style`` attributes, keeping ``@media`` rules (phones, dark mode) in the head.

    premailer as configured for mail, not its defaults. cssutils reports every property it does not know
    (mso-*, -webkit-*) at ERROR level, and mail CSS is full of them on purpose: its log is silenced.
    """
    premailer = Premailer(
        html,
        allow_network=False,  # never fetch a stylesheet
        strip_important=False,  # the default strips !important inside the kept @media rules: phones break
        keep_style_tags=False,
        remove_classes=False,
        disable_validation=True,
        align_floating_images=False,  # no floats in our CSS; it re-parses every image's style, half the time
        # Keep the templates' own width/height attributes: Outlook sizes images and tables by them, and
        # premailer would otherwise overwrite width="536" with the CSS's fluid 100%.
        disable_basic_attributes=["width", "height"],
        cssutils_logging_level=logging.CRITICAL,
    )
    result: str = premailer.transform(pretty_print=False)
    return result


def check_email(email: RenderedEmail, max_html_bytes: int) -> tuple[str, ...]:
    """What would make this email fail in a mail client: clipped size, relative links, images without alt."""
    problems = []
    size = len(email.html.encode("utf-8"))
    if size > max_html_bytes:
        problems.append(f"the HTML body is {size:,} bytes; over {max_html_bytes:,} Gmail clips it")
    if not email.text.strip():
        problems.append("the plain-text part is empty")
    if not email.html.strip():
        problems.append("the HTML part is empty")
    document = lxml_html.document_fromstring(email.html)
    for element, attribute in (("a", "href"), ("img", "src")):
        for node in document.iter(element):
            value = (node.get(attribute) or "").strip()
            if not value.lower().startswith(("https://", "http://", "mailto:")):
                problems.append(f"<{element} {attribute}={value!r}> is not an absolute URL")
    for image in document.iter("img"):
        if image.get("alt") is None:
            problems.append(f"<img src={image.get('src')!r}> has no alt text")
    return tuple(problems)


def format_window(since: datetime, until: datetime, language: str, zone: ZoneInfo) -> str:
    """``1 – 7 May 2024`` in the reader's language, for previews and subjects."""
    from babel.dates import format_interval

    locale = Locale.parse(language.replace("-", "_"))
    result: str = format_interval(since.astimezone(zone), until.astimezone(zone), skeleton="yMMMd", locale=locale)
    return result
