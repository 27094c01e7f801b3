"""Digests and notices as messages: what a window holds for a reader, previews, each reader's message, and the
notices (confirmation, preferences, approval request) the service sends.

A digest is composed from the store (``core.digest``), rendered once per variant (``mailing.render``) and
personalised per reader by substitution. Every message gets its headers from the service's one
:class:`~syndication.delivery.mailer.Mailer` and leaves through it, DKIM-signed when ``[dkim]`` is configured.
"""

from __future__ import annotations

import secrets
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime

from syndication.app.service import Service
from syndication.config import Settings
from syndication.core.digest import Digest, compose_digest
from syndication.delivery.mailer import Mailer
from syndication.delivery.transport import Transport
from syndication.mailing.message import build_encoded, build_message
from syndication.mailing.render import Links, MailRenderer, RenderedEmail
from syndication.store import database
from syndication.store import posts as post_store


@dataclass(frozen=True)
class DigestPreview:
    """A digest as it would be sent: the composition, the rendered email and the complete MIME message."""

    digest: Digest
    email: RenderedEmail
    message: bytes


def compose(
    service: Service, since: datetime, until: datetime, followed: Collection[str] | None = None
) -> Digest | None:
    """The digest of the window ``(since, until]`` for a reader of ``followed`` themes (None: everything)."""
    until = min(until, service.clock())  # a post dated in the future is not published yet
    with database.transaction(service.engine) as session:
        posts = post_store.posts_in_window(session, since, until, themes=None if followed is None else followed)
    return compose_digest(
        posts,
        service.settings.theme_list,
        since=since,
        until=until,
        followed=followed,
        section_cap=service.settings.digest.section_cap,
    )


def preview_digest(
    service: Service,
    *,
    since: datetime,
    until: datetime,
    followed: Collection[str] | None = None,
    language: str | None = None,
    intro: str | None = None,
    renderer: MailRenderer | None = None,
) -> DigestPreview | None:
    """Render a digest without sending anything; None when the window holds nothing for these themes."""
    digest = compose(service, since, until, followed)
    if digest is None:
        return None
    language = language or service.settings.site.language
    email = (renderer or MailRenderer(service.settings)).render_digest(
        digest, language, preview_links(service.settings), intro
    )
    envelope = service.mailer.envelope("reader@example.invalid", "", email.subject, key="preview", date=until)
    return DigestPreview(digest, email, build_message(envelope, email.text, email.html))


def personalised_message(
    mailer: Mailer,
    variant: RenderedEmail,
    *,
    to_address: str,
    to_name: str,
    links: Links,
    message_key: str,
    date: datetime | None = None,
    extra: Sequence[tuple[str, str]] = (),
) -> bytes:
    """One recipient's complete message (not yet sealed) from a variant rendered once: substitution, encoding,
    and ``mailer``'s headers; ``message_key`` makes its Message-ID (stable across retries). Its Date is written
    by ``mailer`` as it sends it (``date``, default now, only stands until then).

    Byte for byte what rendering the digest with this recipient's links would give (the tests hold that).
    """
    text_qp, html_qp = variant.encoded_for(links)
    envelope = mailer.envelope(to_address, to_name, variant.subject, key=message_key, date=date, extra=extra)
    return build_encoded(envelope, text_qp, html_qp)


def preview_links(settings: Settings) -> Links:
    """Links that show where a recipient's own links go, for previews and test sends."""
    base = settings.site.base_url
    return Links(
        unsubscribe=f"{base}/unsubscribe/preview",
        preferences=f"{base}/preferences/preview",
        view_online=f"{base}/editions/preview",
    )


def send_notice(
    service: Service,
    email: RenderedEmail,
    to_address: str,
    to_name: str,
    key: str,
    *,
    connection: Transport | None = None,
) -> None:
    """Send one notice (``MailRenderer.render_notice``: a confirmation, a change of preferences, a draft to
    approve) to one address, marked auto-generated, through the service's Mailer (so DKIM-signed when
    configured); over ``connection`` (from ``service.mailer.connect()``: an import sends many) when given, else
    over one of its own. ``key`` makes its Message-ID unique. Raises DeliveryError or ConfigError."""
    mailer = service.mailer
    extra = (("Auto-Submitted", "auto-generated"),)
    envelope = mailer.envelope(to_address, to_name, email.subject, key=f"{key}.{secrets.token_hex(8)}", extra=extra)
    mailer.send(to_address, build_message(envelope, email.text, email.html), connection=connection)
