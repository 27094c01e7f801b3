"""The JSON API's tokens: their scopes, the token a client is given once (``synd_<id>_<secret>``) and the hash the
store keeps instead of the secret (SHA-256 of it: the secret is 32 random bytes, so no slow hash is needed)."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

# What a token may do: read everything; create and update posts; add and list subscribers; approve, pause,
# resume and cancel editions.
SCOPES: Final = ("read", "posts", "subscribers", "send")
PREFIX: Final = "synd_"
MAX_NAME: Final = 200
_TOKEN = re.compile(r"synd_([1-9][0-9]{0,18})_([A-Za-z0-9_-]{43})")


@dataclass(frozen=True)
class ApiToken:
    """A token as the store keeps it (never its secret)."""

    id: int
    name: str
    scopes: tuple[str, ...]
    created_at: datetime
    created_by: str
    last_used_at: datetime | None = None
    revoked_at: datetime | None = None

    @property
    def actor(self) -> str:
        """Who the audit log says acted through this token."""
        return f"token:{self.name}"

    def as_json(self) -> dict[str, Any]:
        """The token for ``tokens list --json`` (times in ISO 8601 UTC)."""
        return {
            "id": self.id,
            "name": self.name,
            "scopes": list(self.scopes),
            "created_at": _iso(self.created_at),
            "created_by": self.created_by,
            "last_used_at": _iso(self.last_used_at),
            "revoked_at": _iso(self.revoked_at),
        }


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat().replace("+00:00", "Z")


def check_scopes(values: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """The scopes named, each once, in SCOPES' order; ValueError naming one that is not a scope, or none."""
    chosen = {value.strip() for value in values if value.strip()}
    unknown = sorted(chosen - set(SCOPES))
    if unknown:
        raise ValueError(f"unknown scope {unknown[0]!r} (scopes: {', '.join(SCOPES)})")
    if not chosen:
        raise ValueError(f"a token needs at least one scope ({', '.join(SCOPES)})")
    return tuple(scope for scope in SCOPES if scope in chosen)


def new_secret() -> str:
    """A new token secret: 32 random bytes, base64url without padding (43 characters)."""
    return secrets.token_urlsafe(32)


def secret_hash(secret: str) -> str:
    """What the store keeps of a secret: its SHA-256, in hex."""
    return hashlib.sha256(secret.encode("ascii")).hexdigest()


def token_text(token_id: int, secret: str) -> str:
    """The token a client sends: ``synd_<id>_<secret>``."""
    return f"{PREFIX}{token_id}_{secret}"


def parse_token(text: str) -> tuple[int, str] | None:
    """The id and secret of a token, or None when ``text`` is not shaped like one."""
    match = _TOKEN.fullmatch(text.strip())
    return (int(match.group(1)), match.group(2)) if match else None


def secret_matches(secret: str, stored_hash: str) -> bool:
    """Whether ``secret`` is the one ``stored_hash`` was made from (compared in constant time)."""
    return hmac.compare_digest(secret_hash(secret), stored_hash)
