"""The service's vocabulary as frozen dataclasses: no SQL, HTTP, SMTP or templates here.

Stores convert their rows into these at their edge; feeds, digests and templates only ever see these.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from syndication.core.languages import canonical_tag


@dataclass(frozen=True, slots=True)
class Theme:
    """A subject the organisation writes about; the order of themes is the order of digest sections.

    ``name`` is in the site's language; ``names`` holds its name in other languages, as (canonical language tag,
    name) pairs (pairs rather than a dict: a theme stays hashable and immutable)."""

    slug: str
    name: str
    description: str = ""
    aliases: tuple[str, ...] = ()
    names: tuple[tuple[str, str], ...] = ()

    def name_in(self, language: str) -> str:
        """The theme's name for readers of ``language``: see ``name_in_language``."""
        return name_in_language(self.name, self.names, language)


@dataclass(frozen=True, slots=True)
class Region:
    """A part of the world a post is about; ``name`` and ``names`` as a theme's."""

    slug: str
    name: str
    aliases: tuple[str, ...] = ()
    names: tuple[tuple[str, str], ...] = ()

    def name_in(self, language: str) -> str:
        """The region's name for readers of ``language``: see ``name_in_language``."""
        return name_in_language(self.name, self.names, language)


def name_in_language(name: str, names: tuple[tuple[str, str], ...], language: str) -> str:
    """The name for ``language`` (any case, ``_`` or ``-``): its own entry of ``names``, else its base
    language's (``pt-BR`` reads ``pt``), else ``name``, the site language's (a translation not written yet)."""
    if not names:
        return name
    tag = canonical_tag(language)
    base = tag.split("-", 1)[0]
    fallback = name
    for written, translated in names:
        if written == tag:
            return translated
        if written == base:
            fallback = translated
    return fallback


@dataclass(frozen=True, slots=True)
class Author:
    """Somebody credited on a post; ``slug`` names their feed."""

    slug: str
    name: str


@dataclass(frozen=True, slots=True)
class Image:
    """The lead image of a post: absolute URL and the text that stands for it."""

    url: str
    alt: str = ""


@dataclass(frozen=True, slots=True)
class Post:
    """One published piece of content, already validated and sanitised.

    ``title`` and ``summary`` are plain text (escape them when writing HTML); ``content_html`` is sanitised
    HTML with absolute URLs. Both datetimes are timezone-aware UTC.
    """

    guid: str
    title: str
    url: str
    summary: str
    content_html: str
    published: datetime
    updated: datetime
    language: str
    authors: tuple[Author, ...] = ()
    themes: tuple[str, ...] = ()
    regions: tuple[str, ...] = ()
    image: Image | None = None

    def is_published(self, now: datetime) -> bool:
        """Whether the post may be shown at ``now`` (future-dated posts wait for their time)."""
        return self.published <= now


@dataclass(frozen=True, slots=True)
class Notice:
    """Something a source said of one item: where it was (line, entry, URL) and what is wrong with it."""

    source: str
    where: str
    reason: str

    def __str__(self) -> str:
        return f"{self.source}: {self.where}: {self.reason}"


@dataclass(slots=True)
class GatherReport:
    """What one pull of one source did."""

    source: str
    seen: int = 0
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    rejections: list[Notice] = field(default_factory=list)
    warnings: list[Notice] = field(default_factory=list)
    failure: str | None = None

    @property
    def ok(self) -> bool:
        """True when nothing was refused and the source itself could be read."""
        return not self.rejections and self.failure is None


# The cadences a digest comes in, each with its default schedule (a crontab in the site's time zone): the one
# list the CLI's choices, the forms, ``[schedule] cadences`` and the docs read.
DEFAULT_SCHEDULES: dict[str, str] = {"daily": "0 7 * * *", "weekly": "0 8 * * mon", "monthly": "0 8 1 * *"}
CADENCES: tuple[str, ...] = tuple(DEFAULT_SCHEDULES)
SUBSCRIBER_STATUSES = ("pending", "active", "unsubscribed", "bounced", "complained")


@dataclass(frozen=True, slots=True)
class Consent:
    """How a subscriber agreed to receive digests: when, how (``form``, ``import``, ``cli``) and from where."""

    at: datetime
    method: str
    source: str = ""


@dataclass(frozen=True, slots=True)
class Subscriber:
    """Somebody who receives digests. ``themes`` is None for everything; ``status`` is one of
    SUBSCRIBER_STATUSES, and only ``active`` subscribers get digests. ``language`` is their emails' and pages'
    language; with ``reads`` it is the languages of the posts they read, and ``language_choice`` says what their
    digest does with posts in others (see ``core.languages.Reading``)."""

    id: int
    email: str
    name: str
    language: str
    themes: tuple[str, ...] | None
    cadence: str
    status: str
    consent: Consent
    created_at: datetime
    confirmed_at: datetime | None = None
    reads: tuple[str, ...] = ()  # the languages of posts they read besides that of their emails (canonical tags)
    language_choice: str | None = None  # one of core.languages.LANGUAGE_CHOICES; None: the site's default


class EditionStatus(StrEnum):
    """Where an edition is in its life: a draft waits for approval; sending editions are drained; paused and
    cancelled ones are not; an edition is sent once no delivery of it is open. Stored as these strings."""

    DRAFT = "draft"
    SENDING = "sending"
    PAUSED = "paused"
    CANCELLED = "cancelled"
    SENT = "sent"
    EMPTY = "empty"


class DeliveryStatus(StrEnum):
    """Where one message of an edition to one subscriber is. Stored as these strings.

    ``unknown``: sent, but whether the relay took it is not known (no reply after the message, more times than
    ``[delivery] ambiguous_retries`` allows); ``poisoned``: the sender died while sending it ``max_crashes``
    times. Both are final, given up with the reason kept, and an operator may re-queue them
    (``editions retry``)."""

    QUEUED = "queued"
    CLAIMED = "claimed"
    SENT = "sent"
    DEFERRED = "deferred"
    FAILED = "failed"
    BOUNCED = "bounced"
    POISONED = "poisoned"
    UNKNOWN = "unknown"


# Deliveries still to be sent (or tried again); an edition with none of these left is sent.
OPEN_DELIVERIES = (DeliveryStatus.QUEUED, DeliveryStatus.CLAIMED, DeliveryStatus.DEFERRED)
# Deliveries that are over: sent, or given up on.
FINAL_DELIVERIES = (DeliveryStatus.SENT, DeliveryStatus.FAILED, DeliveryStatus.BOUNCED, DeliveryStatus.POISONED,
                    DeliveryStatus.UNKNOWN)  # fmt: skip
# Deliveries given up on with a reason: an edition that ends with some says how many of each.
GIVEN_UP_DELIVERIES = (DeliveryStatus.FAILED, DeliveryStatus.UNKNOWN, DeliveryStatus.POISONED)
# Deliveries an editor should look at: refused, given up on, set aside, or waiting to be tried again.
PROBLEM_DELIVERIES = (DeliveryStatus.DEFERRED, DeliveryStatus.FAILED, DeliveryStatus.BOUNCED, DeliveryStatus.POISONED,
                      DeliveryStatus.UNKNOWN)  # fmt: skip
# Deliveries an operator may re-queue once mended (``editions retry``).
RETRYABLE_DELIVERIES = (DeliveryStatus.POISONED, DeliveryStatus.FAILED, DeliveryStatus.UNKNOWN)


@dataclass(frozen=True, slots=True)
class Edition:
    """One digest issue of a cadence, for the window ``(since, until]``. ``reason`` says why it stands where it
    stands, on one line: why the sender paused it (a relay's refusal of our side, the breaker, a relay slower than
    the timeout), or, once sent, what was given up ("2 failed, 1 unknown"); empty otherwise."""

    id: int
    cadence: str
    since: datetime
    until: datetime
    status: EditionStatus
    intro: str
    subject: str
    created_at: datetime
    reason: str = ""
    #: When it last started (or resumed) sending: approved, resumed, or created sending. Retry deadlines run from it.
    sending_since: datetime | None = None
