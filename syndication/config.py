"""Settings: ``config.toml`` plus ``SYNDICATION_*`` environment overrides, validated once, frozen.

Every key is declared here once, with its type, default and a one-line description that
``docs/configuration.md`` mirrors (a test keeps the two in step). A wrong file is refused before anything
runs, with one message naming the file, the key and what is wrong.
"""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Final, Literal, get_args
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from syndication.config_sources import (
    EDITORS_VARIABLE,
    OLD_SECRET_KEYS_VARIABLE,
    SECRET_KEY_VARIABLE,
    Origin,
    apply,
    environment_overrides,
    file_origins,
    origin_of,
    value_of,
)
from syndication.core.languages import canonical_tag
from syndication.core.models import DEFAULT_SCHEDULES, Region, Theme
from syndication.errors import ConfigError

SLUG_PATTERN = r"^[a-z0-9]+(?:-[a-z0-9]+)*$"
LANGUAGE_PATTERN = r"^[A-Za-z]{2,3}(?:[-_][A-Za-z0-9]{2,8})*$"
EDITOR_NAME_PATTERN = r"[A-Za-z0-9._@+-]{1,100}"
DEFAULT_CONFIG = "config.toml"
DEFAULT_DATABASE_URL = "sqlite:///var/syndication.db"

# Environment variables that override a key of the file: secrets never have to live in it.
ENVIRONMENT_OVERRIDES: dict[str, tuple[str, str]] = {
    "SYNDICATION_DATABASE_URL": ("database", "url"),
    "SYNDICATION_SMTP_HOST": ("smtp", "host"),
    "SYNDICATION_SMTP_PORT": ("smtp", "port"),
    "SYNDICATION_SMTP_USERNAME": ("smtp", "username"),
    "SYNDICATION_SMTP_PASSWORD": ("smtp", "password"),
    "SYNDICATION_METRICS_TOKEN": ("metrics", "token"),
}

# The bounce mailbox's IMAP password ([bounces.mailbox] password), a key one table deeper than those above.
MAILBOX_PASSWORD_VARIABLE: Final = "SYNDICATION_BOUNCES_MAILBOX_PASSWORD"  # noqa: S105 - its name


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_http_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{value!r} is not an absolute http(s) URL")
    return value


class SiteSettings(_Section):
    title: str = Field("Syndication", description="Name of the site, used in feed titles and emails.")
    base_url: str = Field(
        "http://localhost:8000",
        description="Public URL of the service; every link and feed URL starts with it.",
    )
    language: str = Field("en", pattern=LANGUAGE_PATTERN, description="Default language of posts and pages.")
    timezone: str = Field("UTC", description="IANA time zone in which digest periods are counted.")
    organisation: str = Field(
        "", description="Name of the organisation that sends the emails, shown in their footer (default: title)."
    )
    postal_address: str = Field(
        "",
        description="Postal address shown in the footer of every email (CAN-SPAM asks for one in commercial mail);"
        " one line, or several in a multi-line string, shown as given.",
    )

    @field_validator("organisation")
    @classmethod
    def _organisation(cls, value: str) -> str:
        if "\r" in value or "\n" in value:
            raise ValueError("must be on one line")
        return value.strip()

    @field_validator("postal_address")
    @classmethod
    def _postal_address(cls, value: str) -> str:
        return "\n".join(line.strip() for line in value.strip().splitlines() if line.strip())

    @property
    def sender_name(self) -> str:
        """The organisation that sends the emails: ``organisation``, else the site's title."""
        return self.organisation or self.title

    @property
    def postal_lines(self) -> tuple[str, ...]:
        """The lines of the postal address (none when it is not set)."""
        return tuple(self.postal_address.splitlines())

    @field_validator("base_url")
    @classmethod
    def _base_url(cls, value: str) -> str:
        return _check_http_url(value).rstrip("/")

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as error:
            raise ValueError(f"{value!r} is not an IANA time zone (e.g. 'Europe/Berlin')") from error
        return value


class DatabaseSettings(_Section):
    url: str = Field(
        DEFAULT_DATABASE_URL,
        description="SQLAlchemy URL of the store; a relative SQLite path is taken from the config file's folder.",
    )

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError

        try:
            url = make_url(value)
        except ArgumentError as error:
            raise ValueError(f"{value!r} is not a valid SQLAlchemy database URL") from error
        if url.get_backend_name() not in ("sqlite", "postgresql"):
            raise ValueError(f"{value!r}: only sqlite and postgresql databases are supported")
        return value


# ThemeSettings.names and RegionSettings.names say the same.
_NAMES_DESCRIPTION = (
    "Its name in other languages, by language tag, e.g. { es = 'Acción climática', pt = 'Ação climática' }; a"
    " reader of a language with none (nor of its base language: pt-BR reads pt) sees name, and"
    " `syndication check-config` reports each language of digest.languages left without one."
)


def _checked_names(value: dict[str, str]) -> dict[str, str]:
    """``names`` keyed by canonical language tags (``pt_br`` is ``pt-BR``: one entry per language), each name on
    one line and not empty; refused (ValueError) otherwise."""
    names: dict[str, str] = {}
    for tag, name in value.items():
        if not re.fullmatch(LANGUAGE_PATTERN, tag):
            raise ValueError(f"{tag!r} is not a language tag (e.g. 'es', 'pt-BR')")
        key = canonical_tag(tag)
        if key in names:
            raise ValueError(f"{tag!r} names the language {key!r} twice")
        if "\r" in name or "\n" in name or not name.strip():
            raise ValueError(f"{tag}: a name is one line of text")
        names[key] = name.strip()
    return names


class ThemeSettings(_Section):
    slug: str = Field(pattern=SLUG_PATTERN, description="Stable identifier used in URLs and feeds.")
    name: str = Field(min_length=1, description="Human name shown to readers, in the site's language.")
    names: dict[str, str] = Field(default_factory=dict, description=_NAMES_DESCRIPTION)
    description: str = Field("", description="One sentence about the theme, used as feed subtitle.")
    aliases: tuple[str, ...] = Field(
        (), description="Categories or tags of outside sources that mean this theme (case-insensitive)."
    )

    @field_validator("names")
    @classmethod
    def _names(cls, value: dict[str, str]) -> dict[str, str]:
        return _checked_names(value)


class RegionSettings(_Section):
    slug: str = Field(pattern=SLUG_PATTERN, description="Stable identifier used in URLs and feeds.")
    name: str = Field(min_length=1, description="Human name shown to readers, in the site's language.")
    names: dict[str, str] = Field(default_factory=dict, description=_NAMES_DESCRIPTION)
    aliases: tuple[str, ...] = Field((), description="Outside category names that mean this region.")

    @field_validator("names")
    @classmethod
    def _names(cls, value: dict[str, str]) -> dict[str, str]:
        return _checked_names(value)


class SmtpSettings(_Section):
    host: str = Field("localhost", description="SMTP relay host.")
    port: int = Field(25, ge=1, le=65535, description="SMTP relay port.")
    security: Literal["none", "starttls", "tls"] = Field(
        "none", description="'starttls' upgrades the connection, 'tls' connects with implicit TLS."
    )
    username: str | None = Field(None, description="User for SMTP AUTH (prefer SYNDICATION_SMTP__USERNAME).")
    password: SecretStr | None = Field(
        None,
        description="Password for SMTP AUTH (use SYNDICATION_SMTP__PASSWORD or SYNDICATION_SMTP__PASSWORD_FILE).",
    )
    timeout_seconds: float = Field(30.0, gt=0, description="Socket timeout of every SMTP command.")


class _SourceBase(_Section):
    name: str = Field(pattern=SLUG_PATTERN, description="Unique name of the source, used by --source.")
    interval_seconds: int | None = Field(
        None, ge=1, description="How often `syndication run` gathers it (default: schedule.gather_interval_seconds)."
    )


class JsonlSourceSettings(_SourceBase):
    kind: Literal["jsonl"] = Field(description="'jsonl': a JSON Lines file.")
    path: Path = Field(description="JSON Lines file, one post per line.")


class _RemoteSourceBase(_SourceBase):
    timeout_seconds: float = Field(20.0, gt=0, description="Timeout of each HTTP request.")
    max_bytes: int = Field(10_000_000, gt=0, description="Largest response body accepted.")
    allow_private_networks: bool = Field(
        False, description="Allow loopback, private and link-local addresses (off: they are refused)."
    )


class FeedSourceSettings(_RemoteSourceBase):
    kind: Literal["feed"] = Field(description="'feed': an RSS or Atom feed.")
    url: str | None = Field(None, description="http(s) URL of an RSS or Atom feed.")
    path: Path | None = Field(None, description="Local RSS or Atom file (instead of url).")

    @model_validator(mode="after")
    def _one_location(self) -> FeedSourceSettings:
        if (self.url is None) == (self.path is None):
            raise ValueError("a feed source needs exactly one of 'url' or 'path'")
        if self.url is not None:
            _check_http_url(self.url)
        return self


class WordpressSourceSettings(_RemoteSourceBase):
    kind: Literal["wordpress"] = Field(description="'wordpress': a WordPress site's REST API.")
    url: str = Field(description="Base URL of the WordPress site (the REST API is under /wp-json/).")
    per_page: int = Field(50, ge=1, le=100, description="Posts asked for per API page.")

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return _check_http_url(value).rstrip("/")


SourceSettings = Annotated[
    JsonlSourceSettings | FeedSourceSettings | WordpressSourceSettings, Field(discriminator="kind")
]
# The kinds of source, each with its settings: the one list the configuration, its errors and the docs read
# (``syndication.sources.SOURCES`` opens each kind; a test holds the two lists equal).
SOURCE_KINDS: Final[dict[str, type[JsonlSourceSettings | FeedSourceSettings | WordpressSourceSettings]]] = {
    "jsonl": JsonlSourceSettings,
    "feed": FeedSourceSettings,
    "wordpress": WordpressSourceSettings,
}


class GatherSettings(_Section):
    batch_size: int = Field(1000, ge=1, le=100_000, description="Items stored per transaction.")
    summary_words: int = Field(50, ge=5, le=500, description="Length of a summary derived from the content.")


class FeedSettings(_Section):
    output_dir: Path = Field(Path("var/feeds"), description="Folder the built feeds are written to.")
    storage: Literal["folder", "database"] = Field(
        "folder",
        description="Where builds keep the feeds the web app serves: 'folder' (output_dir, this machine's disk) or "
        "'database' (the store, so that every node sharing it serves the same documents); `feeds build --out DIR` "
        "writes files either way.",
    )
    items: int = Field(
        50, ge=1, le=1000, description="Newest posts in each subscription feed (at least; up to items + page size)."
    )
    archive_page_size: int = Field(
        25, ge=10, le=1000, description="Posts per archive page (RFC 5005) when it is made; its bounds never move."
    )
    content: Literal["full", "summary"] = Field(
        "full", description="'full' puts each post's whole HTML in the feeds, 'summary' only its summary."
    )
    max_age_seconds: int = Field(300, ge=0, description="Cache-Control max-age of every feed document over HTTP.")
    websub_hub: str | None = Field(None, description="WebSub hub to announce in feeds and to ping after a build.")

    @field_validator("websub_hub")
    @classmethod
    def _hub(cls, value: str | None) -> str | None:
        return _check_http_url(value) if value else None


class MailSettings(_Section):
    from_address: str = Field("newsletter@localhost", description="Address digests are sent from.")
    from_name: str = Field("", description="Name shown with the From address (default: site.title).")
    reply_to: str | None = Field(None, description="Address replies go to, if not the From address.")
    list_id: str = Field("", description="List-Id header, e.g. 'Network news <news.example.org>' (default: site).")
    unsubscribe_mailto: str | None = Field(
        None, description="Address for a mailto: List-Unsubscribe alongside the https one."
    )
    feedback_id: str | None = Field(
        None,
        description="Sender id of the Feedback-ID header on digests (<edition>:<cadence>:digest:<this>), for "
        "mailbox providers' feedback loops, e.g. 'news.example.org'; unset: no Feedback-ID.",
    )

    @field_validator("feedback_id")
    @classmethod
    def _feedback_id(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[A-Za-z0-9._@+-]+", value):
            raise ValueError(f"{value!r} is not a Feedback-ID sender id (letters, digits and . _ @ + - only)")
        return value

    @field_validator("from_address", "reply_to", "unsubscribe_mailto")
    @classmethod
    def _address(cls, value: str | None) -> str | None:
        if value is not None and (not re.fullmatch(r"[^@\s<>\"]+@[^@\s<>\"]+", value)):
            raise ValueError(f"{value!r} is not an email address")
        return value

    @field_validator("from_name")
    @classmethod
    def _one_line(cls, value: str) -> str:
        if "\r" in value or "\n" in value:
            raise ValueError("must be on one line")
        return value


# How messages leave: one name per module of syndication/delivery registered in ``delivery.transport.TRANSPORTS``
# (a test and an assertion there keep the two in step; config does not import delivery).
TransportName = Literal["smtp"]
TRANSPORT_NAMES: Final[tuple[str, ...]] = get_args(TransportName)


class DeliverySettings(_Section):
    transport: TransportName = Field("smtp", description="How messages leave: 'smtp' hands each to the [smtp] relay.")
    connections: int = Field(2, ge=1, le=32, description="SMTP connections used in parallel.")
    rate_per_second: float = Field(0.0, ge=0, description="Most messages sent per second (0: no limit).")
    retry_initial_seconds: int = Field(60, ge=1, description="Wait before the first retry of a deferred delivery.")
    retry_max_seconds: int = Field(3600, ge=1, description="Longest wait between retries (the wait doubles).")
    retry_deadline_hours: float = Field(48.0, gt=0, description="After this long a deferred delivery fails.")
    lease_seconds: int = Field(
        300, ge=1, description="A sender's claim lasts this long; it renews it every third of it while it works."
    )
    batch_size: int = Field(100, ge=1, le=10_000, description="Deliveries claimed at a time by a sender.")
    max_crashes: int = Field(
        3, ge=1, description="Times a sender died while sending a delivery before it is set aside as poisoned."
    )
    ambiguous_retries: int = Field(
        1, ge=0, description="Resends (same Message-ID) of a message the relay never answered; then it is unknown."
    )

    @field_validator("transport", mode="before")
    @classmethod
    def _known_transport(cls, value: object) -> object:
        if value not in TRANSPORT_NAMES:
            raise ValueError(f"unknown transport {value!r} (known: {', '.join(TRANSPORT_NAMES)})")
        return value


class DkimSettings(_Section):
    selector: str = Field("", description="DKIM selector (the key is published at <selector>._domainkey.<domain>).")
    domain: str = Field("", description="Signing domain (d=); empty: no DKIM signature.")
    key_file: Path | None = Field(None, description="PEM file of the private key.")
    ed25519_selector: str = Field(
        "",
        description="Selector of an optional second signature, ed25519-sha256 (RFC 8463), added beside the RSA one;"
        " empty: RSA only.",
    )
    ed25519_key_file: Path | None = Field(
        None,
        description="File of the Ed25519 private key: PEM (PKCS#8, as openssl genpkey writes it) or the base64 seed"
        " dkimpy's dknewkey writes.",
    )

    @model_validator(mode="after")
    def _ed25519_pair(self) -> DkimSettings:
        # Half a second signature is a mistake, not a choice: refused as the file loads rather than silently unsigned.
        if self.ed25519_selector and self.ed25519_key_file is None:
            raise ValueError("ed25519_selector is set but ed25519_key_file is not (the Ed25519 private key)")
        if self.ed25519_key_file is not None and not self.ed25519_selector:
            raise ValueError(
                f"ed25519_key_file {self.ed25519_key_file} is set but ed25519_selector is not (its public key is"
                " published at <ed25519_selector>._domainkey.<domain>)"
            )
        if not self.ed25519_selector:
            return self
        if not self.domain:
            # Ed25519 goes beside RSA, never instead: receivers that do not know it (many, today) need the RSA one.
            raise ValueError(
                "ed25519_selector is set but domain is not: the Ed25519 signature is added beside the RSA one,"
                " so set domain, selector and key_file too"
            )
        if self.ed25519_selector == self.selector:
            raise ValueError(
                f"ed25519_selector {self.ed25519_selector!r} is the RSA selector too: one DNS name holds one key,"
                " so give each key its own selector"
            )
        return self


class DigestSettings(_Section):
    section_cap: int = Field(10, ge=1, le=200, description="Posts shown per theme before 'N more on <theme>'.")
    templates_dir: Path | None = Field(
        None,
        description="Folder whose templates replace the shipped ones of templates/email/ (same names); one Jinja2"
        " cannot parse is refused on load, with its file and line.",
    )
    languages: tuple[str, ...] = Field(
        ("en", "es"),
        description="Languages digests, notices and web pages can be written in; each one Babel knows. Catalogs"
        " are shipped for en, es, fr and pt (pt-BR, es-MX and the like use their base language's); one without a"
        " catalog is worded in English, its dates and numbers formatted in it. Adding a language: its folder in"
        " syndication/locales (README.md, 'Adding a language'), then its tag here.",
    )
    language_choice: Literal["all", "first", "only"] = Field(
        "all",
        description="What a digest does with posts in languages its reader does not read, unless they chose in"
        " their preferences: all (every post, as published), first (theirs first in each theme), only (theirs only).",
    )
    max_html_bytes: int = Field(
        100_000, ge=10_000, description="Largest HTML body; Gmail clips messages over 102 KB, so sections are cut."
    )
    require_approval: bool = Field(
        False, description="Create each scheduled edition as a draft that an editor approves before it is sent."
    )
    approval_emails: tuple[str, ...] = Field(
        (), description="Editors emailed a preview link when a draft edition waits for approval."
    )
    approval_timeout_hours: float = Field(
        24.0, gt=0, description="A draft still unapproved after this long is reported, and never sent on its own."
    )

    @field_validator("approval_emails")
    @classmethod
    def _addresses(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for address in value:
            if not re.fullmatch(r"[^@\s<>\"]+@[^@\s<>\"]+", address):
                raise ValueError(f"{address!r} is not an email address")
        return value

    @field_validator("languages")
    @classmethod
    def _known_languages(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        # The renderer formats dates and numbers with Babel in every language, and words those without a shipped
        # catalog in English: a language Babel does not know would fail every digest of its readers at sending.
        from babel import Locale, UnknownLocaleError

        for language in value:
            try:
                Locale.parse(language.replace("-", "_"))
            except (UnknownLocaleError, ValueError) as error:
                raise ValueError(f"{language!r} is not a language Babel knows ({str(error).splitlines()[0]})") from None
        return value


def _digest_template_problem(templates_dir: Path) -> str | None:
    """What is wrong with the templates of ``[digest] templates_dir`` (the file and line of one Jinja2 cannot
    parse), or None: such a template would fail every digest or notice that uses it, at sending. Parsed as the
    renderer's environment parses, the i18n extension's tags included; the names it does not hold come from the
    shipped templates."""
    from jinja2 import Environment, TemplateSyntaxError

    environment = Environment(extensions=["jinja2.ext.i18n"], trim_blocks=True, lstrip_blocks=True)  # noqa: S701
    for template in sorted(templates_dir.iterdir()):
        if not template.is_file() or template.suffix not in (".html", ".txt", ".css"):
            continue  # the renderer loads only these (a .css is included into the HTML)
        try:
            environment.parse(template.read_text(encoding="utf-8"), template.name, str(template))
        except TemplateSyntaxError as error:
            return f"digest.templates_dir: {template}, line {error.lineno}: {error.message}"
        except (OSError, UnicodeDecodeError) as error:
            return f"digest.templates_dir: {template} cannot be read: {error}"
    return None


class ScheduleSettings(_Section):
    gather_interval_seconds: int = Field(600, ge=1, description="How often each source is gathered.")
    feeds_interval_seconds: int = Field(
        3600, ge=1, description="Safety-net feed rebuild (feeds are also rebuilt right after a gather stores posts)."
    )
    deliver_interval_seconds: int = Field(
        60, ge=1, description="How often the delivery queue is drained (retries of deferred deliveries included)."
    )
    misfire_grace_seconds: int = Field(
        3600, ge=1, description="A job missed (service down) is still run when it comes back within this long."
    )
    leader_poll_seconds: float = Field(
        5.0, gt=0, description="How often a waiting process tries to become the scheduler (PostgreSQL)."
    )
    cadences: dict[str, str] = Field(
        default_factory=lambda: dict(DEFAULT_SCHEDULES),
        description="Crontab per cadence (daily, weekly, monthly) in site.timezone; 'off' disables one.",
    )

    @field_validator("cadences")
    @classmethod
    def _crontabs(cls, value: dict[str, str]) -> dict[str, str]:
        from syndication.scheduling.cadences import parse_crontab

        merged = {**DEFAULT_SCHEDULES, **value}
        for cadence, crontab in merged.items():
            if cadence not in DEFAULT_SCHEDULES:
                raise ValueError(f"unknown cadence {cadence!r} (expected one of {', '.join(DEFAULT_SCHEDULES)})")
            if crontab != "off":
                parse_crontab(crontab, "UTC")  # raises ValueError naming what is wrong
        return merged


class LoggingSettings(_Section):
    format: Literal["text", "json"] = Field("text", description="'json' writes one JSON object per log line.")
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description="Least severe level logged.")


class MetricsSettings(_Section):
    """Who may read ``/metrics``: a client whose address is in ``allow`` and, when ``token`` is set, that sends it
    as ``Authorization: Bearer``. ``/healthz`` and ``/readyz`` are open to all (they tell nothing secret)."""

    token: SecretStr | None = Field(
        None,
        description="Bearer token /metrics requires when set (at least 16 characters); set it with "
        "SYNDICATION_METRICS_TOKEN rather than in the file. Required for a request that came through a proxy.",
    )
    allow: tuple[str, ...] = Field(
        ("127.0.0.0/8", "::1/128"),
        min_length=1,
        description="Client addresses or networks /metrics answers (others get 403); loopback only by default, "
        "'0.0.0.0/0' and '::/0' for any address (then set a token).",
    )

    @field_validator("token")
    @classmethod
    def _long_enough(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < MIN_KEY_LENGTH:
            raise ValueError(f"too short: use at least {MIN_KEY_LENGTH} random characters")
        return value

    @field_validator("allow")
    @classmethod
    def _networks(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        networks = []
        for item in value:
            try:
                networks.append(str(ipaddress.ip_network(item.strip(), strict=False)))
            except ValueError as error:
                raise ValueError(f"{item!r} is not an address or a network (e.g. '10.0.0.0/8')") from error
        return tuple(networks)


# The longest local part allowed before the ``+<token>`` of a VERP address (RFC 5321 allows 64 octets in all; a
# token is at most 28 characters).
MAX_BOUNCE_LOCAL_PART: Final = 32


def _host_port(value: str) -> tuple[str, int]:
    """``"host:port"`` (an IPv6 host in brackets: ``"[::1]:8026"``) as its parts, or ValueError."""
    host, separator, port = value.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not separator or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"{value!r} is not written host:port (e.g. '127.0.0.1:8026')")
    return host, int(port)


class BounceMailboxSettings(_Section):
    host: str = Field(min_length=1, description="IMAP server of the mailbox bounces are delivered to.")
    port: int = Field(993, ge=1, le=65535, description="IMAP port.")
    user: str = Field(min_length=1, description="IMAP user.")
    password: SecretStr | None = Field(
        None,
        description="IMAP password (use SYNDICATION_BOUNCES__MAILBOX__PASSWORD or its _FILE rather than the file).",
    )
    folder: str = Field("INBOX", min_length=1, description="Folder read for new messages.")
    processed_folder: str | None = Field(
        None, description="Folder processed messages are moved to (unset: they are flagged and left in place)."
    )
    security: Literal["tls", "starttls", "none"] = Field(
        "tls", description="'tls' connects with implicit TLS, 'starttls' upgrades the connection, 'none' neither."
    )
    poll_seconds: int = Field(300, ge=10, description="How often `syndication run` reads the mailbox.")


class BounceSettings(_Section):
    address: str | None = Field(
        None,
        description="Base of the VERP envelope senders, e.g. 'bounces@news.example.org': each delivery is sent from "
        "a unique 'bounces+<token>@news.example.org'.",
    )
    hard_score: float = Field(
        5.0,
        gt=0,
        description="Score a hard bounce adds (the address does not exist); as the threshold: suppressed at once.",
    )
    soft_score: float = Field(1.0, gt=0, description="Score a soft bounce adds (mailbox full, refused for now).")
    threshold: float = Field(5.0, gt=0, description="Score at which a subscriber is suppressed ('bounced').")
    stale_after_days: int = Field(
        90, ge=1, le=3650, description="Bounces older than this no longer count towards the score."
    )
    listen: str | None = Field(
        None, description="host:port the bounce receiver listens on under `syndication run` (unset: none)."
    )
    lmtp: bool = Field(True, description="The receiver speaks LMTP (false: SMTP).")
    mailbox: BounceMailboxSettings | None = Field(
        None, description="An IMAP mailbox `syndication run` reads bounces from, for sites without a receiver."
    )

    @field_validator("address")
    @classmethod
    def _verp_base(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not re.fullmatch(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+@[A-Za-z0-9.-]+\.[A-Za-z0-9-]+", value):
            raise ValueError(f"{value!r} is not an email address (e.g. 'bounces@news.example.org')")
        local, _, domain = value.partition("@")
        if "+" in value or len(local) > MAX_BOUNCE_LOCAL_PART:
            raise ValueError(
                f"{value!r}: the part before the @ may not hold '+' (it separates the token) nor be longer than"
                f" {MAX_BOUNCE_LOCAL_PART} characters"
            )
        return f"{local.lower()}@{domain.lower()}"

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: str | None) -> str | None:
        if value is not None:
            _host_port(value)
        return value

    @property
    def listen_address(self) -> tuple[str, int] | None:
        """``listen`` as (host, port), or None when no receiver is configured."""
        return None if self.listen is None else _host_port(self.listen)


class EditorSettings(_Section):
    passwords: dict[str, str] = Field(
        default_factory=dict,
        description=(
            "Editor name -> scrypt password hash (also SYNDICATION_EDITORS): made owners of the team once, by"
            " `syndication init` when the team is empty (or `syndication people import`); afterwards the team is"
            " managed in the store (`syndication people`, /editor/people)."
        ),
    )
    session_hours: float = Field(12.0, gt=0, le=24 * 30, description="How long an editor stays signed in.")

    @field_validator("passwords")
    @classmethod
    def _hashes(cls, value: dict[str, str]) -> dict[str, str]:
        from syndication.core.passwords import is_password_hash

        for name, stored in value.items():
            if not re.fullmatch(EDITOR_NAME_PATTERN, name):
                raise ValueError(f"{name!r} is not an editor name (letters, digits, '.', '_', '@', '+', '-')")
            if not is_password_hash(stored):
                raise ValueError(
                    f"{name}: not an scrypt password hash (scrypt$15$8$3$...): add people with"
                    f" 'syndication people add {name}' instead"
                )
        return value


# The URL schemes [web] limits_storage takes besides memory:// (syndication.web.limits opens them with `limits`).
LIMITS_SCHEMES: Final = ("redis", "rediss", "redis+unix")


class WebSettings(_Section):
    templates_dir: Path | None = Field(
        None,
        description="Folder whose pages, site.css or progress.js replace those of templates/web/ (same names).",
    )
    subscribe_per_client_per_hour: int = Field(
        20, ge=1, description="Subscribe form posts accepted per client address per hour (then 429)."
    )
    subscribe_per_address_per_hour: int = Field(
        5, ge=1, description="Subscribe form posts accepted per email address per hour (then 429)."
    )
    confirmations_per_address_per_day: int = Field(
        3, ge=1, le=50, description="Most emails the subscribe form sends to one address per day (kept in the store)."
    )
    logins_per_client_per_hour: int = Field(
        20, ge=1, description="Editor sign-in attempts accepted per client address per hour (then 429)."
    )
    trusted_proxies: tuple[str, ...] = Field(
        ("127.0.0.1", "::1"),
        description="Addresses or networks (CIDR) of the reverse proxies in front: from these only, X-Forwarded-For"
        " gives the visitor's address (per-client limits, logs, /metrics' allow list) and X-Forwarded-Proto the"
        " scheme. Another client's forwarded headers are ignored. Empty: believe none.",
    )
    send_on_approve: bool = Field(
        True,
        description="Approving or resuming an edition in the editor starts sending it from the web process "
        "(under `syndication run` its scheduler sends instead, at once).",
    )
    max_header_bytes: int = Field(
        64 * 1024,
        ge=4096,
        le=1024 * 1024,
        description="Largest request head (request line and headers together) the server reads, in bytes "
        "(then 431 and the connection closes).",
    )
    max_request_line_bytes: int = Field(
        8 * 1024,
        ge=1024,
        le=1024 * 1024,
        description="Longest request target (path and query) the server reads, in bytes (then 414).",
    )
    header_timeout_seconds: float = Field(
        30.0,
        gt=0,
        le=600,
        description="A connection that has not sent a whole request head this long after opening (or after its "
        "previous answer) is closed.",
    )
    max_concurrency: int = Field(
        1000,
        ge=10,
        description="Open connections and requests in progress the server takes at once (then 503).",
    )
    notices_poll_seconds: float = Field(
        5.0,
        gt=0,
        le=3600,
        description="How often the web process looks for notices to send (confirmations, preference changes) "
        "besides when it queues one itself.",
    )
    limits_storage: str = Field(
        "memory://",
        description="Where the rate limits (subscribe, sign-in, reset, API token) count: 'memory://' in each "
        "process (every process and node counts alone), or a Redis URL shared by every process and node, e.g. "
        "'redis://127.0.0.1:6379/0' ('rediss://' with TLS, 'redis+unix:///path/to/socket'); a password in it is "
        "masked by `config show` (or set the URL with SYNDICATION_WEB__LIMITS_STORAGE_FILE).",
    )
    limits_prefix: str = Field(
        "",
        max_length=200,
        description="Prefix of the limits' keys in a shared storage, so that sites sharing one Redis count apart "
        "(empty: the site's base_url, the same on every node of a site).",
    )

    @field_validator("limits_storage")
    @classmethod
    def _limits_storage(cls, value: str) -> str:
        scheme, separator, rest = value.partition("://")
        if value == "memory://" or (separator and scheme in LIMITS_SCHEMES and rest):
            return value
        raise ValueError(
            "not a limits storage: 'memory://' or a Redis URL (redis://host:port/db, rediss://..., redis+unix:///path)"
        )

    @field_validator("trusted_proxies")
    @classmethod
    def _proxy_networks(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for entry in value:
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError:
                raise ValueError(f"{entry!r} is not an IP address or network (10.0.0.5, 10.0.0.0/24)") from None
        return value


class RetentionSettings(_Section):
    """How long the delivery ledger, received messages and the audit log are kept; ``syndication prune`` and the
    scheduler's daily ``prune`` job remove what is older. 0 keeps them for ever. What exactly-once needs is never
    removed (``syndication.store.retention`` says what that is)."""

    deliveries_days: int = Field(
        180,
        ge=0,
        description="Days the deliveries and delivery attempts of a finished edition (sent or cancelled, none "
        "still to send) are kept after its window ended and its last attempt; the edition itself is kept. "
        "0: for ever.",
    )
    inbound_raw_days: int = Field(
        90,
        ge=0,
        description="Days the bytes of an unrecognised inbound message are kept for an operator to look at; "
        "its record (hash, kind, outcome) stays, so the same message is never processed twice. 0: for ever.",
    )
    audit_days: int = Field(
        730,
        ge=0,
        description="Days the audit log (who approved, paused, cancelled or edited an edition, sent a test, erased "
        "or reactivated a subscriber) keeps an event. 0: for ever.",
    )
    webhooks_days: int = Field(
        30,
        ge=0,
        description="Days a webhook event is kept, with its deliveries and attempts, once every delivery of it is "
        "over (sent or given up); one still being retried is kept. 0: for ever.",
    )


class WebhookSettings(_Section):
    """Outgoing webhooks (``syndication webhooks``): how they are posted and retried."""

    allow_private: bool = Field(
        False,
        description="Post webhooks to loopback, private, link-local and cloud-metadata addresses too (refused by "
        "default, after DNS, as for remote sources).",
    )
    timeout_seconds: float = Field(10.0, gt=0, description="Time one webhook attempt may take, all told.")
    interval_seconds: int = Field(
        30, ge=1, description="How often `syndication run` posts the due webhook deliveries (retries included)."
    )
    max_attempts: int = Field(
        8,
        ge=1,
        description="Attempts at one delivery before it is given up as failed; the waits between them are 30 s, "
        "2 min, 10 min, 1 h, 6 h, then 12 h.",
    )


class ApiSettings(_Section):
    """The JSON API under ``/api/v1`` (tokens: ``syndication tokens``)."""

    requests_per_minute: int = Field(
        600, ge=1, description="Requests one API token may make per minute (then 429 with Retry-After)."
    )


class Settings(_Section):
    """The whole validated configuration."""

    site: SiteSettings = SiteSettings()
    database: DatabaseSettings = DatabaseSettings()
    themes: tuple[ThemeSettings, ...] = ()
    regions: tuple[RegionSettings, ...] = ()
    smtp: SmtpSettings = SmtpSettings()
    sources: tuple[SourceSettings, ...] = ()
    gather: GatherSettings = GatherSettings()
    feeds: FeedSettings = FeedSettings()
    mail: MailSettings = MailSettings()
    digest: DigestSettings = DigestSettings()
    delivery: DeliverySettings = DeliverySettings()
    dkim: DkimSettings = DkimSettings()
    schedule: ScheduleSettings = ScheduleSettings()
    logging: LoggingSettings = LoggingSettings()
    metrics: MetricsSettings = MetricsSettings()
    editors: EditorSettings = EditorSettings()
    web: WebSettings = WebSettings()
    bounces: BounceSettings = BounceSettings()
    retention: RetentionSettings = RetentionSettings()
    webhooks: WebhookSettings = WebhookSettings()
    api: ApiSettings = ApiSettings()
    secret_key: SecretStr | None = Field(
        None,
        exclude=True,
        description="Signing key; only from SYNDICATION_SECRET_KEY (or its _FILE), else the signing key file of an"
        " embedded store, never from the configuration file.",
    )
    old_secret_keys: tuple[SecretStr, ...] = Field(
        (),
        exclude=True,
        description="Retired signing keys whose links stay valid; only from SYNDICATION_OLD_SECRET_KEYS.",
    )
    config_path: Path | None = Field(None, exclude=True)
    # Where each key set by other than its default came from (dotted key: "smtp.host"), for `config show`.
    origins: dict[str, Origin] = Field(default_factory=dict, exclude=True)

    @model_validator(mode="after")
    def _unique(self) -> Settings:
        if not self.digest.languages:
            raise ValueError("digest: languages is empty; list at least the site's language")
        if self.site.language not in self.digest.languages:
            raise ValueError(
                f"digest: languages {list(self.digest.languages)} leave out the site's language"
                f" {self.site.language!r}, which digests fall back to"
            )
        _refuse_duplicates("themes", [t.slug for t in self.themes], "slug")
        _refuse_duplicates("regions", [r.slug for r in self.regions], "slug")
        _refuse_duplicates("sources", [s.name for s in self.sources], "name")
        aliases: dict[str, str] = {}
        for theme in self.themes:
            for alias in (theme.slug, *theme.aliases):
                owner = aliases.setdefault(alias.casefold(), theme.slug)
                if owner != theme.slug:
                    raise ValueError(f"themes: alias {alias!r} belongs to both {owner!r} and {theme.slug!r}")
        return self

    @model_validator(mode="after")
    def _bounce_address_for_intake(self) -> Settings:
        # Refused rather than warned: a receiver or mailbox with no VERP envelope sender gets bounces it cannot
        # tie to any delivery (the relay returns them to the From address instead).
        if self.bounces.address is None and (self.bounces.listen is not None or self.bounces.mailbox is not None):
            configured = "[bounces] listen" if self.bounces.listen is not None else "[bounces.mailbox]"
            raise ValueError(
                f"bounces: {configured} is set but [bounces] address is not: without it no bounce comes back to it"
                " (set address, e.g. 'bounces@news.example.org', to the address the receiver or mailbox gets)"
            )
        return self

    @property
    def theme_list(self) -> tuple[Theme, ...]:
        """The configured themes as core values, in digest order."""
        return tuple(Theme(t.slug, t.name, t.description, t.aliases, tuple(t.names.items())) for t in self.themes)

    @property
    def region_list(self) -> tuple[Region, ...]:
        """The configured regions as core values."""
        return tuple(Region(r.slug, r.name, r.aliases, tuple(r.names.items())) for r in self.regions)

    def source(self, name: str) -> SourceSettings:
        """The source called ``name``, or a ConfigError listing the known ones."""
        for source in self.sources:
            if source.name == name:
                return source
        known = ", ".join(s.name for s in self.sources) or "none configured"
        raise ConfigError(f"no source named {name!r} (known: {known})")


def untranslated_names(settings: Settings) -> list[str]:
    """One line for each theme and region that has no name in some language of ``[digest] languages`` (nor in
    its base language), naming those languages: its readers there see ``name``, written in the site's language.
    A language whose base is the site's own needs none. Warnings, not refusals: a name can be translated later."""
    site_base = canonical_tag(settings.site.language).split("-", 1)[0]
    lines = []
    for kind, items in (("theme", settings.themes), ("region", settings.regions)):
        for item in items:
            missing = []
            for language in settings.digest.languages:
                tag = canonical_tag(language)
                base = tag.split("-", 1)[0]
                if base != site_base and tag not in item.names and base not in item.names:
                    missing.append(language)
            if missing:
                lines.append(f"{kind} {item.slug!r} has no name in {', '.join(missing)}: shown as {item.name!r} there")
    return lines


def _refuse_duplicates(section: str, values: list[str], key: str) -> None:
    seen: set[str] = set()
    for index, value in enumerate(values):
        if value in seen:
            raise ValueError(f"{section}[{index}].{key}: {value!r} is used twice")
        seen.add(value)


def config_path_from(cli_value: str | None, environ: Mapping[str, str] = os.environ) -> Path:
    """Where to read settings: ``--config``, else ``SYNDICATION_CONFIG``, else ``./config.toml``."""
    return Path(cli_value or environ.get("SYNDICATION_CONFIG") or DEFAULT_CONFIG)


def load_settings(path: Path, environ: Mapping[str, str] = os.environ) -> Settings:
    """Read, override from the environment and validate the settings, or raise one ConfigError."""
    try:
        raw: dict[str, Any] = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as error:
        raise ConfigError(f"{path}: no such configuration file (use --config or SYNDICATION_CONFIG)") from error
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"{path}: cannot be read: {error}") from error
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path}: not valid TOML: {error}") from error
    return settings_from_mapping(raw, path, environ)


def settings_from_mapping(raw: Mapping[str, Any], path: Path, environ: Mapping[str, str] = os.environ) -> Settings:
    """Validate an already parsed configuration (``path`` names it in messages and anchors relative paths)."""
    data = {key: (dict(value) if isinstance(value, Mapping) else value) for key, value in raw.items()}
    for key in ("secret_key", "old_secret_keys", "config_path", "origins"):
        if key in data:
            raise ConfigError(f"{path}: {key}: not a configuration key")
    mail = data.get("mail")
    if isinstance(mail, dict) and "bounce_address" in mail:
        # Before [bounces] address there was [mail] bounce_address, the same address without VERP: read it as that.
        bounces = dict(data.get("bounces", {})) if isinstance(data.get("bounces", {}), dict) else {}
        moved = mail.pop("bounce_address")
        if bounces.get("address", moved) != moved:
            raise ConfigError(f"{path}: mail.bounce_address and bounces.address differ: keep bounces.address alone")
        data["bounces"] = {**bounces, "address": moved}
    origins = file_origins(Settings, data, str(path))
    # The environment overrides the file: SYNDICATION_<SECTION>__<KEY> for every key (config_sources), and the
    # older names of a few.
    legacy: dict[str, tuple[str, ...]] = {
        **ENVIRONMENT_OVERRIDES,
        MAILBOX_PASSWORD_VARIABLE: ("bounces", "mailbox", "password"),
    }
    overrides = environment_overrides(Settings, environ, legacy)
    bounces_table = data.get("bounces")
    mailbox_configured = (
        isinstance(bounces_table, Mapping) and isinstance(bounces_table.get("mailbox"), Mapping)
    ) or any(
        override.path[:2] == ("bounces", "mailbox") and override.variable != MAILBOX_PASSWORD_VARIABLE
        for override in overrides
    )
    for override in overrides:
        if override.variable == MAILBOX_PASSWORD_VARIABLE and not mailbox_configured:
            continue  # as it always was: the old name sets the password of a mailbox configured elsewhere
        apply(data, override)
        origins[".".join(override.path)] = override.origin
    if (read := value_of(SECRET_KEY_VARIABLE, environ)) and read[0]:
        data["secret_key"], origins["secret_key"] = read
    if (read := value_of(OLD_SECRET_KEYS_VARIABLE, environ)) and read[0]:
        # Comma-separated (or one a line in a file): keys being rotated out, still accepted when reading links
        # signed before the rotation.
        old_keys = (key.strip() for key in read[0].replace("\n", ",").split(","))
        data["old_secret_keys"], origins["old_secret_keys"] = tuple(key for key in old_keys if key), read[1]
    if (read := value_of(EDITORS_VARIABLE, environ)) and read[0]:
        # "name:hash,name:hash": editors whose hashes live in the environment rather than the file (they win).
        editors = data.get("editors", {})
        if not isinstance(editors, dict):
            raise ConfigError(f"{path}: [editors] must be a table")
        passwords = dict(editors.get("passwords", {}))
        for item in read[0].replace("\n", ",").split(","):
            name, separator, stored = item.strip().partition(":")
            if not item.strip():
                continue
            if not separator or not name or not stored:
                raise ConfigError(f"{read[1][1]}: {name or item!r} is not written NAME:HASH")
            passwords[name] = stored
        data["editors"] = {**editors, "passwords": passwords}
        origins["editors.passwords"] = read[1]
    try:
        settings = Settings.model_validate({**data, "config_path": path, "origins": origins})
    except ValidationError as error:
        raise ConfigError(_describe(path, error, origins)) from None
    settings = _anchor_paths(settings, path.parent)
    for key, templates in (("digest", settings.digest.templates_dir), ("web", settings.web.templates_dir)):
        if templates is not None and not templates.is_dir():
            # Otherwise every template would silently come from the shipped ones: not what was asked for.
            raise ConfigError(f"{path}: {key}.templates_dir: {templates} is not a folder")
    digest_templates = settings.digest.templates_dir
    if digest_templates is not None and (problem := _digest_template_problem(digest_templates)):
        raise ConfigError(f"{path}: {problem}")
    key_file = signing_key_path(settings)
    if settings.secret_key is None and key_file is not None and (from_key_file := _read_key_file(key_file)) is not None:
        origins = {**settings.origins, "secret_key": ("key file", str(key_file))}
        settings = settings.model_copy(update={"secret_key": SecretStr(from_key_file), "origins": origins})
    return settings


def _describe(path: Path, error: ValidationError, origins: Mapping[str, Origin]) -> str:
    lines = []
    from_file = False
    for problem in error.errors():
        location = problem["loc"]
        # Tagged unions add the tag as a location step ("sources.0.jsonl.path"): drop it.
        parts = [str(p) for p in location if p not in (*SOURCE_KINDS, "function-after")]
        key = ""
        for part in parts:
            key += f"[{part}]" if part.isdigit() else (f".{part}" if key else part)
        message = problem["msg"].removeprefix("Value error, ")
        if problem["type"] == "extra_forbidden":
            message = "unknown key"
        elif problem["type"] == "union_tag_invalid":
            *others, last = (repr(kind) for kind in SOURCE_KINDS)
            message = f"unknown kind (expected {', '.join(others)} or {last})"
        kind, variable = origin_of(re.sub(r"\[\d+\]", "", key), origins)
        if kind in ("environment", "variable file"):
            lines.append(f"{variable} ({key}): {message}")  # the variable is what to mend, not the file
            continue
        from_file = True
        lines.append(f"{key}: {message}" if key else message)
    return (f"{path}: " if from_file else "") + "; ".join(lines)


def _anchor_paths(settings: Settings, base: Path) -> Settings:
    """Make relative file paths (SQLite file, source files) relative to the config file's folder."""
    from sqlalchemy.engine import make_url

    url = make_url(settings.database.url)
    database = settings.database
    if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:":
        db_path = Path(url.database)
        if not db_path.is_absolute():
            anchored = url.set(database=str((base / db_path).resolve()))
            database = DatabaseSettings(url=anchored.render_as_string(hide_password=False))
    dkim = settings.dkim
    for key in ("key_file", "ed25519_key_file"):
        file = getattr(dkim, key)
        if file is not None and not file.is_absolute():
            dkim = dkim.model_copy(update={key: (base / file).resolve()})
    digest = settings.digest
    if digest.templates_dir is not None and not digest.templates_dir.is_absolute():
        digest = digest.model_copy(update={"templates_dir": (base / digest.templates_dir).resolve()})
    web = settings.web
    if web.templates_dir is not None and not web.templates_dir.is_absolute():
        web = web.model_copy(update={"templates_dir": (base / web.templates_dir).resolve()})
    feeds = settings.feeds
    if not feeds.output_dir.is_absolute():
        feeds = feeds.model_copy(update={"output_dir": (base / feeds.output_dir).resolve()})
    sources = []
    for source in settings.sources:
        path = getattr(source, "path", None)
        if path is not None and not path.is_absolute():
            source = source.model_copy(update={"path": (base / path).resolve()})
        sources.append(source)
    return settings.model_copy(
        update={
            "database": database,
            "sources": tuple(sources),
            "feeds": feeds,
            "digest": digest,
            "dkim": dkim,
            "web": web,
        }
    )


def describe_keys() -> list[tuple[str, str, str, str]]:
    """Every documented key as (key, type, default, description), for the docs and their test."""
    rows: list[tuple[str, str, str, str]] = []
    sections: list[tuple[str, type[BaseModel]]] = [
        ("site", SiteSettings),
        ("database", DatabaseSettings),
        ("themes[]", ThemeSettings),
        ("regions[]", RegionSettings),
        ("smtp", SmtpSettings),
        ("sources[] (jsonl)", JsonlSourceSettings),
        ("sources[] (feed)", FeedSourceSettings),
        ("sources[] (wordpress)", WordpressSourceSettings),
        ("gather", GatherSettings),
        ("feeds", FeedSettings),
        ("mail", MailSettings),
        ("digest", DigestSettings),
        ("delivery", DeliverySettings),
        ("dkim", DkimSettings),
        ("schedule", ScheduleSettings),
        ("logging", LoggingSettings),
        ("metrics", MetricsSettings),
        ("editors", EditorSettings),
        ("web", WebSettings),
        ("bounces", BounceSettings),
        ("bounces.mailbox", BounceMailboxSettings),
        ("retention", RetentionSettings),
        ("webhooks", WebhookSettings),
        ("api", ApiSettings),
    ]
    for section, model in sections:
        for name, field in model.model_fields.items():
            if (section, name) in _SUBSECTIONS:
                continue  # documented key by key as a section of its own
            annotation = _type_name(field.annotation)
            value = str(field.default) if isinstance(field.default, Path) else field.default
            if field.default_factory is not None:
                value = field.default_factory()  # type: ignore[call-arg]
            default = "required" if field.is_required() else repr(value)
            rows.append((f"{section}.{name}", annotation, default, field.description or ""))
    return rows


# Tables inside a section (``[bounces.mailbox]``), listed by describe_keys as sections of their own.
_SUBSECTIONS: Final = {("bounces", "mailbox")}


def _type_name(annotation: Any) -> str:
    text = str(annotation) if not isinstance(annotation, type) else annotation.__name__
    text = re.sub(r"\b(?:pydantic\.types|pathlib|typing)\.", "", text)
    return (
        text.replace("SecretStr", "secret")
        .replace("Path", "path")
        .replace("|", "or")
        .replace("tuple[str, ...]", "list of str")
    )


# A key shorter than this could be found by trying keys against one link; refuse it rather than sign with it.
MIN_KEY_LENGTH: Final = 16
# The signing key file `syndication init` makes beside an embedded (SQLite) store when no key is set.
SIGNING_KEY_FILE: Final = "signing-key"


def signing_key_path(settings: Settings) -> Path | None:
    """Where the signing key file of an embedded store is (the folder of its SQLite file), or None for a shared
    store (PostgreSQL) or one in memory, whose processes need the same SYNDICATION_SECRET_KEY wherever they run."""
    from sqlalchemy.engine import make_url

    url = make_url(settings.database.url)
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        return None
    return Path(url.database).parent / SIGNING_KEY_FILE


def _read_key_file(path: Path) -> str | None:
    """The key in the signing key file ``path``, or None when there is none; ConfigError when it cannot be used."""
    try:
        key = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as error:
        reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
        raise ConfigError(f"signing key file {path} cannot be read: {reason}") from None
    if len(key) < MIN_KEY_LENGTH:
        raise ConfigError(
            f"signing key file {path} holds fewer than {MIN_KEY_LENGTH} characters: delete it and run"
            " `syndication init` to make another (links signed with it stop working)"
        )
    return key


def signing_keys(settings: Settings) -> list[str]:
    """The keys tokens are checked with, the current one (which signs) first, then the retired ones.

    Raises ConfigError when SYNDICATION_SECRET_KEY is not set or a key is too short to be safe.
    """
    if settings.secret_key is None or not settings.secret_key.get_secret_value():
        key_file = signing_key_path(settings)
        where = (
            f", or run `syndication init` to make {key_file}, the key file of this SQLite store"
            if key_file is not None
            else " (or SYNDICATION_SECRET_KEY_FILE, a file holding it), the same for every process of this store"
        )
        raise ConfigError(
            f"no signing key: set SYNDICATION_SECRET_KEY (a long random string) in the environment{where}"
        )
    current = settings.secret_key.get_secret_value()
    if len(current) < MIN_KEY_LENGTH:
        where = settings.origins.get("secret_key", ("environment", SECRET_KEY_VARIABLE))[1]
        raise ConfigError(f"{where}: the signing key is too short: use at least {MIN_KEY_LENGTH} random characters")
    old = [key.get_secret_value() for key in settings.old_secret_keys]
    if any(len(key) < MIN_KEY_LENGTH for key in old):
        raise ConfigError(
            f"SYNDICATION_OLD_SECRET_KEYS holds a key shorter than {MIN_KEY_LENGTH} characters: remove it"
        )
    return [current, *(key for key in old if key != current)]
