"""Signed links: make and read the tokens in confirm, unsubscribe, preferences and view-online URLs.

A token carries a short subject (a subscriber's id, "edition:subscriber", ...) and the time it was made,
HMAC-SHA256 signed with ``SYNDICATION_SECRET_KEY``. The purpose is the salt, so a token made for one purpose is
refused for every other; nothing in it can be changed or guessed from an id without the key. Keys rotate through
``SYNDICATION_OLD_SECRET_KEYS``: links signed with an old key still read, and every new link is signed with the
current one. This module is the only user of itsdangerous.

VERP tokens (``verp_token``) are shorter, for an envelope sender's local part: a delivery's id and a truncated
HMAC of it, lower case, without a time (a bounce may come days later).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Sequence
from datetime import datetime
from functools import lru_cache
from typing import Any, Final

from itsdangerous import BadSignature, SignatureExpired, TimestampSigner

from syndication.errors import ConfigError, TokenError

# "rejoin" confirms that someone who left subscribes again. "session" and "csrf" sign the editor's session cookie
# and every form's CSRF cookie (syndication.web.sessions).
# "invite" and "reset" set a team member's password (syndication.app.team).
PURPOSES: Final = ("confirm", "rejoin", "unsubscribe", "preferences", "view", "session", "csrf", "invite", "reset")

# How long a link stays valid when the caller does not say: a confirmation is asked for now and answered within
# days; unsubscribe and preferences links sit in old emails and must keep working (None: no expiry).
DEFAULT_MAX_AGE_SECONDS: Final[dict[str, int | None]] = {
    "confirm": 7 * 24 * 3600,
    "rejoin": 7 * 24 * 3600,
    "unsubscribe": None,
    "preferences": None,
    "view": None,
    "session": 12 * 3600,  # the web app passes [editors] session_hours
    "csrf": 24 * 3600,  # a form left open longer is sent again with a fresh token
    "invite": 7 * 24 * 3600,
    "reset": 3600,
}

MAX_SUBJECT_LENGTH: Final = 200


def make_token(keys: Sequence[str], purpose: str, subject: str, *, now: datetime | None = None) -> str:
    """A URL-safe token (letters, digits, ``-_.``) for ``subject``, signed with ``keys[0]`` for ``purpose``.

    ``now`` is the signing time (default: the system clock); tests and a service's clock pass their own.
    """
    _check_purpose(purpose)
    if not subject or len(subject) > MAX_SUBJECT_LENGTH:
        raise ValueError(f"a token subject is 1 to {MAX_SUBJECT_LENGTH} characters, not {len(subject)}")
    if not keys or not all(keys):
        _signer(keys, purpose, now)  # raises the ConfigError that says what to set
    payload = base64.urlsafe_b64encode(subject.encode("utf-8")).rstrip(b"=")
    moment = int(time.time()) if now is None else int(now.timestamp())
    value = payload + b"." + _timestamp(moment)
    mac = _signing_mac(keys[0], purpose).copy()
    mac.update(value)
    return (value + b"." + base64.urlsafe_b64encode(mac.digest()).rstrip(b"=")).decode("ascii")


# make_token writes exactly what itsdangerous' TimestampSigner signs (tests/test_tokens compare them), without its
# per-call set-up: every digest sends three signed links per reader, and building a signer, deriving its key
# (SHA-256 of salt, "signer" and the key: itsdangerous' default "django-concat") and keying an HMAC each time
# cost more than the HMAC itself. Reading tokens still goes through itsdangerous.
@lru_cache(maxsize=64)
def _signing_mac(key: str, purpose: str) -> hmac.HMAC:
    """An HMAC-SHA256 keyed as TimestampSigner keys it for ``purpose`` with ``key``, to ``copy`` for each token."""
    derived = hashlib.sha256(f"syndication.{purpose}".encode() + b"signer" + key.encode("utf-8")).digest()
    return hmac.new(derived, digestmod=hashlib.sha256)


@lru_cache(maxsize=4)
def _timestamp(moment: int) -> bytes:
    """The time part of a token, as itsdangerous writes it: the big-endian bytes of the second, base64url."""
    return base64.urlsafe_b64encode(moment.to_bytes(8, "big").lstrip(b"\x00")).rstrip(b"=")


def read_token(
    keys: Sequence[str], purpose: str, token: str, max_age_seconds: int | None = None, *, now: datetime | None = None
) -> str:
    """The subject of ``token`` if one of ``keys`` signed it for ``purpose`` and it has not expired.

    ``max_age_seconds`` None means the purpose's default (7 days for ``confirm``, no expiry for the others).
    Raises TokenError for a forged, altered, expired or other-purpose token, never saying which key was tried.
    """
    _check_purpose(purpose)
    max_age = DEFAULT_MAX_AGE_SECONDS[purpose] if max_age_seconds is None else max_age_seconds
    try:
        payload = _signer(keys, purpose, now).unsign(token, max_age=max_age)
        subject = base64.urlsafe_b64decode(payload + b"=" * (-len(payload) % 4)).decode("utf-8")
    except SignatureExpired as error:
        raise TokenError(f"this {purpose} link has expired: ask for a new one") from error
    except (BadSignature, ValueError) as error:
        raise TokenError(f"this {purpose} link is not valid (altered, or made for something else)") from error
    return subject


class _ClockedSigner(TimestampSigner):
    """A TimestampSigner whose "now" can be given, so signing and expiry follow the service's clock."""

    def __init__(self, *args: Any, now: datetime | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._now = now

    def get_timestamp(self) -> int:
        return super().get_timestamp() if self._now is None else int(self._now.timestamp())


def _signer(keys: Sequence[str], purpose: str, now: datetime | None) -> _ClockedSigner:
    if not keys or not all(keys):
        raise ConfigError("no signing key: set SYNDICATION_SECRET_KEY (a long random string) in the environment")
    # The subject is signed as it is (base64url), not through a serializer: itsdangerous' URL-safe serializer
    # tries zlib on every token, which cost more than the rest of a digest's personalisation.
    # itsdangerous signs with the last key of the list and accepts every one of them.
    return _ClockedSigner(list(reversed(keys)), salt=f"syndication.{purpose}", now=now, digest_method=hashlib.sha256)


def _check_purpose(purpose: str) -> None:
    if purpose not in PURPOSES:
        raise ValueError(f"unknown token purpose {purpose!r} (known: {', '.join(PURPOSES)})")


# --- VERP envelope senders ------------------------------------------------------------------------------------

# Characters of the HMAC kept in a VERP token: 13 base32 characters are 65 bits, beyond guessing by trial sends.
VERP_MAC_CHARS: Final = 13
_BASE36: Final = "0123456789abcdefghijklmnopqrstuvwxyz"


def verp_token(keys: Sequence[str], delivery_id: int) -> str:
    """The token naming delivery ``delivery_id`` in its envelope sender (``bounces+<token>@...``).

    ``<id in base 36>-<HMAC-SHA256 of the id with keys[0], 65 bits in base32>``: lower-case letters, digits and one
    hyphen (an MTA may lower-case a local part), at most 27 characters, and not to be made for another delivery
    without the key.
    """
    if delivery_id < 0:
        raise ValueError(f"a delivery id is not negative, not {delivery_id}")
    _check_keys(keys)
    return f"{_base36(delivery_id)}-{_verp_mac(keys[0], delivery_id)}"


def read_verp_token(keys: Sequence[str], token: str) -> int | None:
    """The delivery id ``token`` names if one of ``keys`` made it (any case), else None (forged, altered, not one)."""
    _check_keys(keys)
    number, separator, mac = token.strip().lower().partition("-")
    if (
        not separator
        or not 0 < len(number) <= 13
        or len(mac) != VERP_MAC_CHARS
        or any(char not in _BASE36 for char in number)
    ):
        return None
    delivery_id = int(number, 36)
    if delivery_id >= 2**63:
        return None
    matches = [hmac.compare_digest(mac, _verp_mac(key, delivery_id)) for key in keys]
    return delivery_id if any(matches) else None


def _verp_mac(key: str, delivery_id: int) -> str:
    digest = hmac.new(key.encode("utf-8"), f"syndication.verp:{delivery_id}".encode("ascii"), hashlib.sha256)
    return base64.b32encode(digest.digest()).decode("ascii")[:VERP_MAC_CHARS].lower()


def _base36(number: int) -> str:
    digits = ""
    while True:
        number, remainder = divmod(number, 36)
        digits = _BASE36[remainder] + digits
        if not number:
            return digits


def _check_keys(keys: Sequence[str]) -> None:
    if not keys or not all(keys):
        raise ConfigError("no signing key: set SYNDICATION_SECRET_KEY (a long random string) in the environment")
