"""Digests and notices as messages: what a window holds for a reader, previews, each reader's message, and the
notices (confirmation, preferences, approval request) the service sends.

A digest is composed from the store (``core.digest``), rendered once per variant (``mailing.render``) and
personalised per reader by substitution. What an edition holds is decided once, as it is made
(``edition_posts``): the posts published by its window's end that no edition of its cadence holds yet, so a post
gathered after the edition of its own window was made goes in the next edition of each cadence, once. From then
on the edition shows what it recorded, whatever is gathered later. Every message gets its headers from the service's one
:class:`~syndication.delivery.mailer.Mailer` and leaves through it, DKIM-signed when ``[dkim]`` is configured.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from urllib.parse import urlsplit

from sqlalchemy.orm import Session

from syndication.app.service import Service
from syndication.config import Settings
from syndication.core.digest import Digest, compose_digest
from syndication.core.languages import Reading
from syndication.core.models import CADENCES, Edition, Post
from syndication.delivery.mailer import Mailer
from syndication.delivery.transport import Transport
from syndication.mailing.message import build_encoded, build_message, checked, folded_list, with_phrase
from syndication.mailing.render import Links, MailRenderer, RenderedEmail
from syndication.store import database, ledger
from syndication.store import posts as post_store

PREVIEW_RECIPIENT = "reader@example.invalid"


@dataclass(frozen=True)
class DigestPreview:
    """A digest as it would be sent: the composition, the rendered email and the complete MIME message.

    ``digest`` is what the email shows (after the size cut): its ``post_count``, ``shown_count`` and
    ``held_back_count`` are the email's own."""

    digest: Digest
    email: RenderedEmail
    message: bytes


def compose(
    service: Service,
    since: datetime,
    until: datetime,
    followed: Collection[str] | None = None,
    *,
    cadence: str | None = None,
    reading: Reading | None = None,
) -> Digest | None:
    """The digest of the window ``(since, until]`` for a reader of ``followed`` themes (None: everything) who
    chooses posts by language with ``reading`` (None: every post).

    Without ``cadence``, the posts published in the window by now. With it, what that cadence's edition of the
    window holds (``edition_posts``): the posts it recorded if it was made, else those it would take if made
    now, late ones included."""
    now = service.clock()
    with database.transaction(service.engine) as session:
        if cadence is None:
            until = min(until, now)  # a post dated in the future is not published yet
            posts = post_store.posts_in_window(session, since, until, themes=None if followed is None else followed)
            return compose_posts(service.settings, posts, since, until, followed, with_late=False, reading=reading)
        made, _ids, posts = edition_posts(session, cadence, since, until, now)
    # A made edition is shown as it was made, whenever this is asked; one still to make, as it would be now.
    shown_until = until if made else min(until, now)
    return compose_posts(service.settings, posts, since, shown_until, followed, reading=reading)


def edition_posts(
    session: Session, cadence: str, since: datetime, until: datetime, now: datetime
) -> tuple[Edition | None, list[int], list[Post]]:
    """What the edition of ``cadence`` for the window ``(since, until]`` holds, with the edition if it was made.

    The rule, the one place it is applied: an edition holds the posts it recorded when it was made
    (``ledger.hold_posts``). Made at ``now``, it takes (and this answers, with their ids, for it to record) every
    post published by its window's end (and by ``now``: later ones are not published yet) that no edition of
    the cadence holds, back to the start of the cadence's first window. So a post reaches each cadence's next
    edition once, whatever its date: one in the window, or gathered (or let out of its embargo) after the edition
    of its own window was made; a post published before the cadence's first window was never due to it.
    """
    made = ledger.find_edition(session, cadence, since, until)
    if made is not None:
        return made, [], post_store.held_posts(session, made.id)
    start = ledger.cadence_start(session, cadence)
    after = since if start is None else min(start, since)
    ids, posts = post_store.unheld_posts(session, cadence, after, min(until, now))
    return None, ids, posts


def held_posts(service: Service, edition: Edition) -> list[Post]:
    """The posts ``edition`` holds (recorded as it was made), newest first, as they read now."""
    with database.transaction(service.engine) as session:
        return post_store.held_posts(session, edition.id)


def compose_posts(
    settings: Settings,
    posts: Sequence[Post],
    since: datetime,
    until: datetime,
    followed: Collection[str] | None,
    *,
    with_late: bool = True,
    reading: Reading | None = None,
) -> Digest | None:
    """The digest of an edition's ``posts`` for a reader of ``followed`` themes (None: everything), in the site's
    themes and section cap; its late posts (published at or before ``since``) kept unless ``with_late`` is off;
    chosen by language for a reader's ``reading`` (None: every post)."""
    return compose_digest(
        posts,
        settings.theme_list,
        since=since,
        until=until,
        followed=followed,
        section_cap=settings.digest.section_cap,
        with_late=with_late,
        reading=reading,
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
    cadence: str = "preview",
) -> DigestPreview | None:
    """Render a digest without sending anything; None when the window holds nothing for these themes.

    The message is made the way the sender makes each reader's (``personalised_message`` with
    ``digest_headers``) and sealed by the service's Mailer (dated now, DKIM-signed when configured), so it is
    the bytes a send would hand over but for the recipient (``PREVIEW_RECIPIENT``, with ``preview_links``), the
    Message-ID and the Date. ``cadence`` goes in a Feedback-ID (when ``[mail] feedback_id`` is set); when it
    names a cadence, the preview is of that cadence's edition of the window (``compose``): what it holds if it
    was made, else what it would hold if made now, late posts included."""
    digest = compose(service, since, until, followed, cadence=cadence if cadence in CADENCES else None)
    if digest is None:
        return None
    settings = service.settings
    language = language or settings.site.language
    email = (renderer or MailRenderer(settings)).render_digest(digest, language, intro=intro)
    links = preview_links(settings)
    message = personalised_message(
        service.mailer, email, to_address=PREVIEW_RECIPIENT, to_name="", links=links, message_key="preview",
        extra=digest_headers(settings, links, "preview", cadence),
    )  # fmt: skip
    shown = email.digest or digest
    return DigestPreview(shown, email.personalised(links), service.mailer.seal(message))


def digest_headers(
    settings: Settings, links: Links, edition_id: int | str, cadence: str
) -> tuple[tuple[str, str], ...]:
    """The list headers of a digest to the reader whose links are ``links``, in order: List-Id, List-Unsubscribe
    (their unsubscribe link, and ``[mail] unsubscribe_mailto``; folded between URIs), List-Unsubscribe-Post (RFC
    8058 one-click) and, when ``[mail] feedback_id`` is set, Feedback-ID naming the edition and cadence."""
    unsubscribe = [f"<{links.unsubscribe}>"]
    if settings.mail.unsubscribe_mailto:
        unsubscribe.append(f"<mailto:{settings.mail.unsubscribe_mailto}?subject=unsubscribe>")
    headers = [
        ("List-Id", list_id(settings)),
        ("List-Unsubscribe", folded_list("List-Unsubscribe", unsubscribe)),
        ("List-Unsubscribe-Post", "List-Unsubscribe=One-Click"),
    ]
    if settings.mail.feedback_id:  # campaign:customer:mailtype:sender, for the providers' feedback loops
        headers.append(("Feedback-ID", f"{edition_id}:{cadence}:digest:{settings.mail.feedback_id}"))
    return tuple(headers)


def list_id(settings: Settings) -> str:
    """The List-Id header (RFC 2919): ``[mail] list_id`` ("Name <id>" or just the id), else the site's title with
    an id made from its host; the name encoded as an address's is."""
    return _list_id(settings.site.base_url, settings.mail.list_id, settings.site.title)


@lru_cache(maxsize=16)  # the same for every message of a site: worked out once, not per reader
def _list_id(base_url: str, written: str, title: str) -> str:
    host = urlsplit(base_url).hostname or "localhost"
    written = written.strip()
    match = re.fullmatch(r"(.*?)\s*<([^<>\s]+)>", written)
    if match:
        name, identifier = match.group(1).strip().strip('"'), match.group(2)
    elif written:
        name, identifier = "", written
    else:
        name, identifier = title, host if host.startswith("news.") else f"news.{host}"
    return with_phrase(name, identifier) if name else f"<{checked(identifier)}>"


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
