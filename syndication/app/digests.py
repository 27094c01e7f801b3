"""Digests: what a window holds for a reader, previews, and the notices the service sends.

A digest is composed from the store (``core.digest``), rendered once per variant (``mailing.render``) and
personalised per reader by substitution; every message leaves through the service's one ``Mailer``.
"""

from __future__ import annotations

import secrets
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import urlsplit

from syndication.app.service import Service
from syndication.config import Settings
from syndication.core.digest import Digest, compose_digest
from syndication.delivery.smtp import SmtpClient, send_one
from syndication.mailing.message import Envelope, build_encoded, build_message
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
    envelope = digest_envelope(service.settings, email, "reader@example.invalid", "", until, "preview")
    return DigestPreview(digest, email, build_message(envelope, email.text, email.html))


def personalised_message(
    settings: Settings,
    variant: RenderedEmail,
    *,
    to_address: str,
    to_name: str,
    links: Links,
    date: datetime,
    message_key: str,
    extra: Sequence[tuple[str, str]] = (),
) -> bytes:
    """One recipient's complete message from a variant rendered once: substitution, encoding, headers.

    Byte for byte what rendering the digest with this recipient's links would give (the tests hold that).
    """
    text_qp, html_qp = variant.encoded_for(links)
    envelope = digest_envelope(settings, variant, to_address, to_name, date, message_key, extra)
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
    client: SmtpClient | None = None,
) -> None:
    """Send one notice (``MailRenderer.render_notice``: a confirmation, a change of preferences, a draft to
    approve) to one address, marked auto-generated; over ``client``'s connection when given (an import sends
    many), else over one of its own. ``key`` makes its Message-ID unique. Raises DeliveryError or ConfigError."""
    settings = service.settings
    key = f"{key}.{secrets.token_hex(8)}"
    extra = (("Auto-Submitted", "auto-generated"),)
    envelope = digest_envelope(settings, email, to_address, to_name, service.clock(), key, extra)
    message = build_message(envelope, email.text, email.html)
    mail_from = settings.mail.bounce_address or settings.mail.from_address
    if client is not None:
        client.send(mail_from, to_address, message)
    else:
        send_one(settings.smtp, mail_from, to_address, message)


def digest_envelope(
    settings: Settings,
    email: RenderedEmail,
    to_address: str,
    to_name: str,
    date: datetime,
    message_key: str,
    extra: Sequence[tuple[str, str]] = (),
) -> Envelope:
    """The headers of one digest message; ``message_key`` makes its Message-ID (stable across retries)."""
    mail = settings.mail
    domain = urlsplit(settings.site.base_url).hostname or "localhost"
    return Envelope(
        from_address=mail.from_address,
        from_name=mail.from_name or settings.site.title,
        to_address=to_address,
        to_name=to_name,
        subject=email.subject,
        date=date,
        message_id=f"<{message_key}@{domain}>",
        reply_to=mail.reply_to,
        extra=tuple(extra),
    )
