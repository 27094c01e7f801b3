"""The language of each page, and the words it is written with.

A page's language is, in this order:

1. the one its URL chooses, ``?lang=es`` (any page; the language switcher's links, and the links the emails
   carry, say it);
2. on a page reached by a subscriber's signed link (confirm, rejoin, preferences, unsubscribe), the language the
   subscriber chose for their emails;
3. the browser's ``Accept-Language``, by its q-values (RFC 9110 section 12.5.4);
4. the site's, ``[site] language``.

The languages offered are those of ``[digest] languages`` that have a shipped web catalog
(``syndication/locales/<language>/LC_MESSAGES/web.po``; a regional tag such as ``pt-BR`` is worded with
``pt``'s catalog when it has none of its own). A reader can so get the emails in every language a page is
shown in, and a site names its languages once. English, the language of the templates' own text, stands in
when no configured language has a catalog.

A tag matches an offered one when they are equal (without case, ``_`` read as ``-``), else when their primary
language subtags are (``es-MX`` gets ``es``, ``pt`` gets ``pt-BR``). A language chosen in the URL or by the
subscriber stays chosen: the page's links and forms carry ``lang`` on (``Words.url``); one negotiated from the
browser is not written into any URL, and its answers say ``Vary: Accept-Language``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from datetime import datetime
from gettext import NullTranslations
from typing import Final, Literal
from zoneinfo import ZoneInfo

from babel import Locale, UnknownLocaleError
from babel.dates import format_date, format_datetime
from starlette.requests import Request

from syndication.config import Settings
from syndication.core.audit import SYSTEM
from syndication.core.languages import LANGUAGE_PARAMETER, canonical_tag, language_name
from syndication.core.languages import with_language as with_language  # the pages' name for the one rule
from syndication.resources import catalog_file, catalogs, translations

CATALOGS: Final = catalogs()
DOMAIN: Final = "web"
# The language the templates and the Python sources are written in: its catalog translates nothing.
SOURCE_LANGUAGE: Final = "en"
# The query parameter that chooses a page's language (``with_language`` writes it into a link).
PARAMETER: Final = LANGUAGE_PARAMETER
# At most this many entries of an Accept-Language header are read (browsers send a handful).
MAX_PREFERENCES: Final = 32

# One entry of Accept-Language: a language range and its weight (RFC 9110 section 12.4.2: at most three decimals).
_RANGE = re.compile(r"[A-Za-z]{1,8}(?:[-_][A-Za-z0-9]{1,8})*")
_QVALUE = re.compile(r"0(?:\.[0-9]{0,3})?|1(?:\.0{0,3})?")

Source = Literal["url", "subscriber", "browser"]


def N_(message: str) -> str:
    """Marks ``message`` for the catalog where it cannot be worded yet (no request at hand): it is worded where
    it is shown, with ``Words.gettext``."""
    return message


def preferred_languages(header: str) -> list[str]:
    """The language ranges of an ``Accept-Language`` header, most wanted first (equal weights keep their order);
    ranges weighted 0 (not acceptable), ``*`` and malformed entries are left out."""
    weighted: list[tuple[float, int, str]] = []
    for position, entry in enumerate(header.split(",")[:MAX_PREFERENCES]):
        tag, *parameters = (part.strip() for part in entry.split(";"))
        if not _RANGE.fullmatch(tag):
            continue
        weight = 1.0
        for parameter in parameters:
            name, _, value = parameter.partition("=")
            if name.strip().lower() == "q":
                value = value.strip()
                weight = float(value) if _QVALUE.fullmatch(value) else 0.0  # a weight we cannot read: not wanted
        if weight > 0:
            weighted.append((-weight, position, tag))
    return [tag for _, _, tag in sorted(weighted)]


@dataclass(frozen=True)
class Words:
    """A page's language (``language``, its ``lang`` attribute), the translations it is worded with, and where
    the language came from (``source``: the URL, the subscriber's choice, or the browser and the site)."""

    language: str
    translations: NullTranslations
    locale: Locale
    zone: ZoneInfo
    source: Source = "browser"

    @property
    def negotiated(self) -> bool:
        """Whether the browser's Accept-Language decided (the answer varies by it)."""
        return self.source == "browser"

    def gettext(self, message: str, **values: object) -> str:
        """``message`` in this language, its ``%(name)s`` placeholders filled from ``values`` (always formatted,
        as the templates' newstyle gettext does: a literal ``%`` is written ``%%``)."""
        return self.translations.gettext(message) % values

    def ngettext(self, singular: str, plural: str, count: int, **values: object) -> str:
        """The form of ``singular``/``plural`` this language uses for ``count`` (``%(num)s`` is the count)."""
        return self.translations.ngettext(singular, plural, count) % {"num": count, **values}

    def pgettext(self, context: str, message: str, **values: object) -> str:
        """``message`` as meant in ``context`` (one English word, two meanings: a sent edition, a sent message)."""
        return self.translations.pgettext(context, message) % values

    def language_in_sentence(self, tag: str) -> str:
        """The name of the language ``tag`` in this language, as written inside a sentence (``español`` in Spanish,
        ``Spanish`` in English: Babel's names, in each language's own case); the tag when Babel does not know it."""
        try:
            name = Locale.parse(tag.replace("-", "_")).get_display_name(self.locale)
        except (UnknownLocaleError, ValueError):
            return tag
        return name or tag

    def cadence(self, cadence: str) -> str:
        """A cadence as a choice: ``Weekly`` (an unknown one: its name, capitalised)."""
        names = {
            "daily": self.gettext("Daily"),
            "weekly": self.gettext("Weekly"),
            "monthly": self.gettext("Monthly"),
        }
        return names.get(cadence, cadence.capitalize())

    def how_often(self, cadence: str) -> str:
        """A cadence inside a sentence: ``every week``."""
        phrases = {
            "daily": self.gettext("every day"),
            "weekly": self.gettext("every week"),
            "monthly": self.gettext("every month"),
        }
        return phrases.get(cadence, cadence)

    def edition_status(self, status: str) -> str:
        """An edition's status, in lower case: ``draft``, ``sending``..."""
        names = {
            "draft": self.pgettext("edition", "draft"),
            "sending": self.pgettext("edition", "sending"),
            "paused": self.pgettext("edition", "paused"),
            "cancelled": self.pgettext("edition", "cancelled"),
            "sent": self.pgettext("edition", "sent"),
            "empty": self.pgettext("edition", "empty"),
        }
        return names.get(status, status)

    def delivery_status(self, status: str) -> str:
        """A delivery's (one message's) status, in lower case: ``queued``, ``sent``, ``bounced``..."""
        names = {
            "queued": self.pgettext("delivery", "queued"),
            "claimed": self.pgettext("delivery", "claimed"),
            "sent": self.pgettext("delivery", "sent"),
            "deferred": self.pgettext("delivery", "deferred"),
            "failed": self.pgettext("delivery", "failed"),
            "bounced": self.pgettext("delivery", "bounced"),
            "poisoned": self.pgettext("delivery", "poisoned"),
            "unknown": self.pgettext("delivery", "unknown"),
        }
        return names.get(status, status)

    def subscriber_status(self, status: str) -> str:
        """A subscriber's status, in lower case: ``pending``, ``active``, ``unsubscribed``..."""
        names = {
            "pending": self.pgettext("subscriber", "pending"),
            "active": self.pgettext("subscriber", "active"),
            "unsubscribed": self.pgettext("subscriber", "unsubscribed"),
            "bounced": self.pgettext("subscriber", "bounced"),
            "complained": self.pgettext("subscriber", "complained"),
        }
        return names.get(status, status)

    def actor(self, actor: str) -> str:
        """Who did something (``core.audit``'s actors), as the pages say it: ``ana`` (signed in on these pages),
        ``root (command line)``, ``crm (API token)``, ``the service``."""
        kind, _, name = actor.partition(":")
        if actor == SYSTEM:
            return self.gettext("the service")
        if kind == "editor":
            return name
        if kind == "cli":
            return self.gettext("%(name)s (command line)", name=name)
        if kind == "token":
            return self.gettext("%(name)s (API token)", name=name)
        return actor

    def action(self, action: str) -> str:
        """What an editor can do to an edition, as its button says it: ``Approve and send``, ``Pause``..."""
        names = {
            "approve": self.gettext("Approve and send"),
            "pause": self.gettext("Pause"),
            "resume": self.gettext("Resume"),
            "cancel": self.gettext("Cancel"),
        }
        return names.get(action, action.capitalize())

    def url(self, href: str) -> str:
        """``href`` with this page's language when it was chosen (URL or subscriber), so that it stays chosen on
        the next page; as it is when the browser's language was negotiated, or for a link to another site."""
        if self.negotiated or not (href.startswith("/") or href.startswith(("http://", "https://"))):
            return href
        return with_language(href, self.language)

    def day(self, moment: datetime) -> str:
        """A day, as ``1 May 2024`` reads in this language."""
        # TRANSLATORS: a Babel (CLDR) date pattern for a day in lists of editions and posts: d day, MMM short month
        # name, y year, 'text' in quotes as it is (https://babel.pocoo.org/en/latest/dates.html#date-fields).
        pattern = self.gettext("d MMM y")
        return format_date(moment.astimezone(self.zone), pattern, locale=self.locale)

    def when(self, moment: datetime | None) -> str:
        """A moment in the site's time zone, as ``Wed 1 May 2024, 16:30 CEST`` reads in this language."""
        if moment is None:
            return self.gettext("never")
        local = moment.astimezone(self.zone)
        # TRANSLATORS: a Babel (CLDR) pattern for a moment on the editor's pages: EEE short weekday, d day, MMM
        # short month, y year, HH:mm hours and minutes (24 h); the time zone's abbreviation follows it.
        pattern = self.gettext("EEE d MMM y, HH:mm")
        return f"{format_datetime(local, pattern, tzinfo=self.zone, locale=self.locale)} {local.strftime('%Z')}"


class Languages:
    """The languages one site's pages are offered in, and the choice of one for each request."""

    def __init__(self, settings: Settings) -> None:
        self.zone = ZoneInfo(settings.site.timezone)
        offered = [canonical_tag(tag) for tag in settings.digest.languages]
        self.offered: tuple[str, ...] = tuple(
            tag for tag in dict.fromkeys(offered) if catalog_file(CATALOGS, tag, DOMAIN) is not None
        ) or (SOURCE_LANGUAGE,)
        site = self.match(settings.site.language)
        self.default: str = site if site is not None else self.offered[0]
        self._words = {tag: self._load(tag) for tag in self.offered}

    def _load(self, tag: str) -> Words:
        po_file = catalog_file(CATALOGS, tag, DOMAIN)
        wording = translations(po_file) if po_file is not None else NullTranslations()
        return Words(tag, wording, Locale.parse(tag.replace("-", "_")), self.zone)

    def names(self) -> list[tuple[str, str]]:
        """Each offered language with its name in itself (``es``, ``Español``): the switcher's labels."""
        return [(tag, language_name(tag)) for tag in self.offered]

    def match(self, wanted: str) -> str | None:
        """The offered language ``wanted`` names: the same tag, else the same primary language; None if none."""
        tag = canonical_tag(wanted)
        if not _RANGE.fullmatch(tag):
            return None
        lowered = tag.lower()
        for offered in self.offered:
            if offered.lower() == lowered:
                return offered
        primary = lowered.split("-")[0]
        for offered in self.offered:
            if offered.lower().split("-")[0] == primary:
                return offered
        return None

    def words(self, language: str, source: Source = "browser") -> Words:
        """The words of ``language`` (an offered one, or the default's for another)."""
        found = self.match(language)
        words = self._words[found if found is not None else self.default]
        return words if words.source == source else replace(words, source=source)

    def choose(self, request: Request, subscriber_language: str | None = None) -> Words:
        """The language of the page answering ``request``: ``?lang=``, else ``subscriber_language`` (a page reached
        by a subscriber's signed link), else Accept-Language, else the site's."""
        asked = self.match(request.query_params.get(PARAMETER, ""))
        if asked is not None:
            return self.words(asked, "url")
        if subscriber_language is not None and (theirs := self.match(subscriber_language)) is not None:
            return self.words(theirs, "subscriber")
        for wanted in preferred_languages(request.headers.get("accept-language", "")):
            found = self.match(wanted)
            if found is not None:
                return self.words(found)
        return self.words(self.default)
