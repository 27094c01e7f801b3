"""Tables of the store, as SQLAlchemy 2.0 typed ORM classes.

Association rows repeat the post's ``published`` time so that "newest posts of a theme (region, author)"
is one index range scan instead of a join and a sort over every post of that theme.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC in Python whatever the database: SQLite keeps naive UTC text, PostgreSQL timestamptz."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the store; every stored time is timezone-aware")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    """Declarative base of every table."""


class PostRow(Base):
    __tablename__ = "posts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    guid: Mapped[str] = mapped_column(String(2048), unique=True)
    source: Mapped[str | None] = mapped_column(String(100))
    title: Mapped[str] = mapped_column(Text)
    url: Mapped[str] = mapped_column(Text)
    summary: Mapped[str] = mapped_column(Text)
    content_html: Mapped[str] = mapped_column(Text)
    language: Mapped[str] = mapped_column(String(35))
    image_url: Mapped[str | None] = mapped_column(Text)
    image_alt: Mapped[str] = mapped_column(Text, default="")
    published: Mapped[datetime] = mapped_column(UTCDateTime)
    updated: Mapped[datetime] = mapped_column(UTCDateTime)
    # When the store last wrote this row: what a feed rebuild looks at to find the feeds that changed.
    changed_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    # The post's authors, themes and regions as JSON, a copy of its link table rows written with them: loading a
    # post then reads one row (the link tables are what listings search by).
    links: Mapped[str] = mapped_column(Text, server_default="")

    __table_args__ = (
        Index("ix_posts_published_id", "published", "id"),
        Index("ix_posts_language_published_id", "language", "published", "id"),  # the per-language feeds
    )


class AuthorRow(Base):
    __tablename__ = "authors"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    slug: Mapped[str] = mapped_column(String(200), unique=True)
    name: Mapped[str] = mapped_column(Text)
    # Who the author is (``core.slugs.name_key``): a name met again finds its author, and its slug, here.
    name_key: Mapped[str] = mapped_column(String(400), unique=True)


class PostAuthorRow(Base):
    __tablename__ = "post_authors"

    post_id: Mapped[int] = mapped_column(ForeignKey("posts.id", ondelete="CASCADE"), primary_key=True)
    author_id: Mapped[int] = mapped_column(ForeignKey("authors.id", ondelete="CASCADE"), primary_key=True)
    position: Mapped[int] = mapped_column(Integer)
    published: Mapped[datetime] = mapped_column(UTCDateTime)

    __table_args__ = (Index("ix_post_authors_author_published", "author_id", "published", "post_id"),)


class PostThemeRow(Base):
    __tablename__ = "post_themes"

    post_id: Mapped[int] = mapped_column(ForeignKey("posts.id", ondelete="CASCADE"), primary_key=True)
    theme: Mapped[str] = mapped_column(String(100), primary_key=True)
    position: Mapped[int] = mapped_column(Integer)
    published: Mapped[datetime] = mapped_column(UTCDateTime)

    __table_args__ = (Index("ix_post_themes_theme_published", "theme", "published", "post_id"),)


class PostRegionRow(Base):
    __tablename__ = "post_regions"

    post_id: Mapped[int] = mapped_column(ForeignKey("posts.id", ondelete="CASCADE"), primary_key=True)
    region: Mapped[str] = mapped_column(String(100), primary_key=True)
    position: Mapped[int] = mapped_column(Integer)
    published: Mapped[datetime] = mapped_column(UTCDateTime)

    __table_args__ = (Index("ix_post_regions_region_published", "region", "published", "post_id"),)


class SourceCursorRow(Base):
    """Where each source stopped last time (offset, ETag, modified time), so a pull asks only for what is new."""

    __tablename__ = "source_cursors"

    source: Mapped[str] = mapped_column(String(100), primary_key=True)
    state: Mapped[dict[str, Any]] = mapped_column(JSON)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class SubscriberRow(Base):
    """Someone who asked for digests. ``themes`` is None for "everything"; consent is kept as given."""

    __tablename__ = "subscribers"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)
    name: Mapped[str] = mapped_column(Text, default="")
    language: Mapped[str] = mapped_column(String(35))
    themes: Mapped[list[str] | None] = mapped_column(JSON, nullable=True)
    cadence: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16), index=True)
    consent_at: Mapped[datetime] = mapped_column(UTCDateTime)
    consent_method: Mapped[str] = mapped_column(String(32))
    consent_source: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    status_changed_at: Mapped[datetime] = mapped_column(UTCDateTime)
    confirmed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # The languages of posts they read besides their emails' (None: none), and their choice for the others
    # (all, first, only; None: the site's default, so that changing the default reaches them).
    reads: Mapped[list[str] | None] = mapped_column(JSON, nullable=True)
    language_choice: Mapped[str | None] = mapped_column(String(8), nullable=True)

    __table_args__ = (Index("ix_subscribers_cadence_status", "cadence", "status"),)


class SuppressionRow(Base):
    """An address that must never be re-added silently: kept as a hash once its subscriber is erased."""

    __tablename__ = "suppressions"

    email_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    reason: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class EditionRow(Base):
    """One digest issue: a cadence and its window; created once per window, whatever runs it."""

    __tablename__ = "editions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    cadence: Mapped[str] = mapped_column(String(16))
    since: Mapped[datetime] = mapped_column(UTCDateTime)
    until: Mapped[datetime] = mapped_column(UTCDateTime)
    status: Mapped[str] = mapped_column(String(16), index=True)
    intro: Mapped[str] = mapped_column(Text, default="")
    subject: Mapped[str] = mapped_column(Text, default="")  # an editor's subject, replacing the template's
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    approved_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # Why the edition stands where it stands (the reason it was paused, what is left): shown wherever it is listed.
    status_reason: Mapped[str] = mapped_column(Text, default="")

    __table_args__ = (UniqueConstraint("cadence", "since", "until", name="uq_editions_window"),)


class EditionPostRow(Base):
    """A post an edition holds, recorded in the transaction that makes the edition: what it shows from then on
    (its messages, retries, re-runs, previews and public copy), whatever is gathered or re-dated later.

    ``cadence`` repeats the edition's so that the key can say the rule: a post is held by at most one edition of
    each cadence. An edition takes the posts published by its end (and after its cadence's first window began)
    that no edition of its cadence holds, so one gathered after the edition of its own window was made goes in
    the next one: never in none, never in two.
    """

    __tablename__ = "edition_posts"

    cadence: Mapped[str] = mapped_column(String(16), primary_key=True)
    post_id: Mapped[int] = mapped_column(ForeignKey("posts.id", ondelete="CASCADE"), primary_key=True)
    edition_id: Mapped[int] = mapped_column(ForeignKey("editions.id", ondelete="CASCADE"), index=True)


class DeliveryRow(Base):
    """The queue: one row per (edition, subscriber), its status and where its attempts stand."""

    __tablename__ = "deliveries"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    edition_id: Mapped[int] = mapped_column(ForeignKey("editions.id", ondelete="CASCADE"))
    subscriber_id: Mapped[int | None] = mapped_column(ForeignKey("subscribers.id", ondelete="SET NULL"))
    status: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    crashes: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime)
    lease_owner: Mapped[str | None] = mapped_column(String(100), nullable=True)
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    message_id: Mapped[str] = mapped_column(String(255))
    last_error: Mapped[str] = mapped_column(Text, default="")
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # The fencing token of the claim that holds the row: each claim takes a new one, and only the holder of the
    # current token may record an outcome, so a sender that lost its lease can never overwrite a newer claim's.
    lease_token: Mapped[int] = mapped_column(Integer, default=0)
    # Set just before a message's first byte goes out, cleared with its outcome: a sender that died with this set
    # was sending this very message (a crash counts against it); rows it merely held were never tried.
    in_flight_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)

    __table_args__ = (
        UniqueConstraint("edition_id", "subscriber_id", name="uq_deliveries_edition_subscriber"),
        Index("ix_deliveries_due", "status", "next_attempt_at"),
    )


class DeliveryAttemptRow(Base):
    """One attempt at a delivery: when, what the server said."""

    __tablename__ = "delivery_attempts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    delivery_id: Mapped[int] = mapped_column(ForeignKey("deliveries.id", ondelete="CASCADE"), index=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    outcome: Mapped[str] = mapped_column(String(16))
    code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    detail: Mapped[str] = mapped_column(Text, default="")


class JobRunRow(Base):
    """The last run of each scheduled job: when, by which process, and what it did (``syndication status``)."""

    __tablename__ = "job_runs"

    job_id: Mapped[str] = mapped_column(String(100), primary_key=True)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    ok: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    summary: Mapped[str] = mapped_column(Text, default="")
    runner: Mapped[str] = mapped_column(String(200))


class FormEmailRow(Base):
    """Emails the subscribe form sent to one address (kept as its hash) on one UTC day: the daily cap's count,
    kept in the store so that it holds across restarts and across processes."""

    __tablename__ = "form_emails"

    email_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    count: Mapped[int] = mapped_column(Integer)


class FeedDepartureRow(Base):
    """A place in a feed a post left when it was edited or deleted: the feed (``dimension`` site/theme/region/
    author, and its slug) and the post's key there (``published``, ``post_id``). An incremental feed build
    rewrites the archive page holding that key, or the page would keep showing the post."""

    __tablename__ = "feed_departures"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    changed_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    dimension: Mapped[str] = mapped_column(String(16))
    slug: Mapped[str] = mapped_column(String(200))
    # Null in rows recorded before positions were kept: the build then rewrites every page of that feed.
    published: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    post_id: Mapped[int | None] = mapped_column(Integer, nullable=True)


class FeedArchiveCutRow(Base):
    """Where one archive page of a feed begins: the key (``published``, ``post_id``) of the oldest post it may
    hold. Cuts are only ever added, so a page's bounds never move: a back-dated post joins the page whose bounds
    hold it, and no other page changes. ``feed`` is the feed's path ("all", "themes/climate", ...)."""

    __tablename__ = "feed_archive_cuts"

    feed: Mapped[str] = mapped_column(String(300), primary_key=True)
    published: Mapped[datetime] = mapped_column(UTCDateTime, primary_key=True)
    post_id: Mapped[int] = mapped_column(Integer, primary_key=True)


class PersonRow(Base):
    """Someone of the editorial team: a sign-in name, an address for invitations and resets, a role, and the scrypt
    hash of their password (none until they accept their invitation)."""

    __tablename__ = "people"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    email: Mapped[str | None] = mapped_column(String(320), nullable=True)
    role: Mapped[str] = mapped_column(String(10))
    password_hash: Mapped[str | None] = mapped_column(String(200), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    created_by: Mapped[str] = mapped_column(String(200))
    invited_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    password_changed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    last_sign_in_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class EditorSessionRow(Base):
    """A signed-in session, by the random id its cookie carries: it signs its person in until it expires or is
    revoked (signed out, their password changed, or an owner ended it), wherever the cookie was copied."""

    __tablename__ = "editor_sessions"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    person_id: Mapped[int] = mapped_column(ForeignKey("people.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    address: Mapped[str] = mapped_column(String(64))
    user_agent: Mapped[str] = mapped_column(String(200))
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class InboundMessageRow(Base):
    """One message that reached the bounce address or the unsubscribe address, and what was done with it.

    ``message_hash`` (SHA-256 of its bytes) makes processing idempotent: the same message, imported again or
    fetched twice from a mailbox, is recognised and changes nothing. ``raw`` keeps what could not be understood
    (at most a few hundred KiB), so an operator can look at it.
    """

    __tablename__ = "inbound_messages"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    source: Mapped[str] = mapped_column(String(32))  # import, receiver, mailbox
    kind: Mapped[str] = mapped_column(String(16), index=True)  # dsn, complaint, unsubscribe, auto-reply, unrecognised
    message_hash: Mapped[str] = mapped_column(String(64), unique=True)
    summary: Mapped[str] = mapped_column(Text, default="")
    outcome: Mapped[str] = mapped_column(Text, default="")
    raw: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)


class BounceRow(Base):
    """One bounce counted against a subscriber: what the relay or the recipient's server said, when, for which
    delivery, and the score it added. The bounces within ``[bounces] stale_after_days`` make the score."""

    __tablename__ = "bounces"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    subscriber_id: Mapped[int | None] = mapped_column(ForeignKey("subscribers.id", ondelete="CASCADE"), index=True)
    delivery_id: Mapped[int | None] = mapped_column(ForeignKey("deliveries.id", ondelete="SET NULL"), nullable=True)
    edition_id: Mapped[int | None] = mapped_column(ForeignKey("editions.id", ondelete="SET NULL"), nullable=True)
    inbound_id: Mapped[int | None] = mapped_column(
        ForeignKey("inbound_messages.id", ondelete="SET NULL"), nullable=True
    )
    source: Mapped[str] = mapped_column(String(32))  # smtp (the relay's reply while sending), dsn
    fault: Mapped[str] = mapped_column(String(16))  # address (hard) or mailbox (soft): core.bounces.Fault
    status: Mapped[str] = mapped_column(String(16), default="")  # the enhanced status code, e.g. 5.1.1
    diagnostic: Mapped[str] = mapped_column(Text, default="")
    score: Mapped[float] = mapped_column(Float)


class NoticeRow(Base):
    """The outgoing queue of notices (a confirmation, a change of preferences, a message to the editors): what to
    send to whom, queued where it is asked for (a web request returns once it is stored) and sent by a drain with
    retries, like the deliveries of an edition."""

    __tablename__ = "notices"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))  # confirm, rejoin, preferences, approval, paused
    subscriber_id: Mapped[int | None] = mapped_column(
        ForeignKey("subscribers.id", ondelete="CASCADE"), nullable=True, index=True
    )
    address: Mapped[str] = mapped_column(String(320))
    context: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    status: Mapped[str] = mapped_column(String(16))  # queued, claimed, sent, failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime)
    lease_owner: Mapped[str | None] = mapped_column(String(100), nullable=True)
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    last_error: Mapped[str] = mapped_column(Text, default="")
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)

    __table_args__ = (Index("ix_notices_due", "status", "next_attempt_at"),)


class AuditEventRow(Base):
    """Who did what to what, and when (``core.audit``): written in the transaction of the change it records."""

    __tablename__ = "audit_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    actor: Mapped[str] = mapped_column(String(200))
    action: Mapped[str] = mapped_column(String(64))
    subject_kind: Mapped[str] = mapped_column(String(32))
    subject_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class WebhookEndpointRow(Base):
    """A URL the owner registered for some event types. The secret is kept as given: it signs every message."""

    __tablename__ = "webhook_endpoints"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    url: Mapped[str] = mapped_column(String(2048))
    events: Mapped[list[str]] = mapped_column(JSON)
    secret: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    active: Mapped[bool] = mapped_column(Boolean, default=True)


class WebhookEventRow(Base):
    """The outbox: one row per event, written in the transaction of the change it announces; ``id`` is the
    ``webhook-id`` of its every delivery and retry, and ``body`` the exact JSON sent."""

    __tablename__ = "webhook_events"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    type: Mapped[str] = mapped_column(String(64))
    body: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)


class WebhookDeliveryRow(Base):
    """One event to one endpoint: pending, sending (held under a lease and fencing token), sent or failed."""

    __tablename__ = "webhook_deliveries"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    event_id: Mapped[str] = mapped_column(ForeignKey("webhook_events.id", ondelete="CASCADE"))
    endpoint_id: Mapped[int] = mapped_column(ForeignKey("webhook_endpoints.id", ondelete="CASCADE"), index=True)
    status: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime)
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    lease_token: Mapped[int] = mapped_column(Integer, default=0)
    last_status_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    last_error: Mapped[str] = mapped_column(Text, default="")
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)

    __table_args__ = (
        UniqueConstraint("event_id", "endpoint_id", name="uq_webhook_deliveries_event_endpoint"),
        Index("ix_webhook_deliveries_due", "status", "next_attempt_at"),
    )


class WebhookAttemptRow(Base):
    """One attempt at a webhook delivery: when, which try, the status code or the error."""

    __tablename__ = "webhook_attempts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    delivery_id: Mapped[int] = mapped_column(ForeignKey("webhook_deliveries.id", ondelete="CASCADE"), index=True)
    endpoint_id: Mapped[int] = mapped_column(ForeignKey("webhook_endpoints.id", ondelete="CASCADE"), index=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    attempt: Mapped[int] = mapped_column(Integer)
    status_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    error: Mapped[str] = mapped_column(Text, default="")
    delivered: Mapped[bool] = mapped_column(Boolean, default=False)


class ApiTokenRow(Base):
    """A token of the JSON API: its scopes and the SHA-256 of its secret (the secret itself is shown once)."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    scopes: Mapped[list[str]] = mapped_column(JSON)
    secret_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    created_by: Mapped[str] = mapped_column(String(200))
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class ApiIdempotencyRow(Base):
    """The answer given to a write with an ``Idempotency-Key``, per token, kept for a retry to get it again."""

    __tablename__ = "api_idempotency"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    token_id: Mapped[int] = mapped_column(ForeignKey("api_tokens.id", ondelete="CASCADE"))
    key: Mapped[str] = mapped_column(String(200))
    request_hash: Mapped[str] = mapped_column(String(64))
    status: Mapped[int] = mapped_column(Integer)
    body: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)

    __table_args__ = (UniqueConstraint("token_id", "key", name="uq_api_idempotency_token_key"),)


class StoreVersionRow(Base):
    """A counter per kind of shared content (``feeds``, ``editions``...), moved on in the transaction that changes
    that content: a web node keeps what it derived from the store while the version it read it at is current."""

    __tablename__ = "store_versions"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    version: Mapped[int] = mapped_column(BigInteger)


class FeedDocumentRow(Base):
    """One built feed document's bytes under ``[feeds] storage = "database"``, keyed by its path and its ETag.

    A build adds the rows of the documents it changed before it commits the manifest naming them, so the rows a
    manifest names are always there; rows no manifest names any more are removed once the new one is committed.
    """

    __tablename__ = "feed_documents"

    path: Mapped[str] = mapped_column(String(1000), primary_key=True)
    etag: Mapped[str] = mapped_column(String(80), primary_key=True)
    content_type: Mapped[str] = mapped_column(String(200))
    body: Mapped[bytes] = mapped_column(LargeBinary)
    stored_at: Mapped[datetime] = mapped_column(UTCDateTime)


class FeedManifestRow(Base):
    """The manifest of the feeds built into the store (``manifest.json``'s bytes: documents and build state)."""

    __tablename__ = "feed_manifests"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    body: Mapped[bytes] = mapped_column(LargeBinary)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class EditionVariantRow(Base):
    """One variant of an edition as rendered once for every sender (issue 22): readers of the same themes, language
    and reading get it, personalised by substitution. ``key`` is the SHA-256 of what the variant follows from
    (themes, language, reading, the edition's subject and intro, its posts as they read, the rendering settings),
    so a change to any of them makes another row instead of showing a stale one. ``empty``: the edition holds
    nothing for those readers."""

    __tablename__ = "edition_variants"

    edition_id: Mapped[int] = mapped_column(ForeignKey("editions.id", ondelete="CASCADE"), primary_key=True)
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    empty: Mapped[bool] = mapped_column(Boolean)
    subject: Mapped[str] = mapped_column(Text)
    preheader: Mapped[str] = mapped_column(Text)
    html: Mapped[str] = mapped_column(Text)
    text: Mapped[str] = mapped_column(Text)
    language: Mapped[str] = mapped_column(String(35))
    links: Mapped[list[str]] = mapped_column(JSON)  # the placeholder links: unsubscribe, preferences, view online
    problems: Mapped[list[str]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


# The deliveries still to send, in id order: a sender's claim walks this instead of every delivery ever sent, so a
# claim costs the same at the start and at the end of a million-message edition (issue 22). The claim names the
# same statuses, so that both PostgreSQL and SQLite see the index applies.
OPEN_DELIVERY_STATUSES = ("queued", "deferred", "claimed")
_OPEN = DeliveryRow.status.in_(OPEN_DELIVERY_STATUSES)
Index("ix_deliveries_open", DeliveryRow.id, postgresql_where=_OPEN, sqlite_where=_OPEN)
