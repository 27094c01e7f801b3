"""Editors' password hashes: scrypt from the standard library, in one self-describing string.

A hash reads ``scrypt$<log2 n>$<r>$<p>$<salt>$<key>`` (salt and key base64url without padding), so the cost can
be raised later without breaking the hashes already configured: each is checked with the parameters it names.
The characters are letters, digits, ``$``, ``_`` and ``-`` only, so a hash fits in TOML, in an environment
variable and in ``SYNDICATION_EDITORS``'s ``name:hash,name:hash`` list without quoting.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from typing import Final

# OWASP's scrypt choices are equivalent pairs of memory and passes; N=2^15, r=8, p=3 needs 32 MiB per check
# (2^17 would need 128 MiB: too much for a small server checking a few logins at once).
LOG2_N: Final = 15
BLOCK_SIZE: Final = 8
PARALLELISM: Final = 3
KEY_BYTES: Final = 32
SALT_BYTES: Final = 16
MIN_PASSWORD_LENGTH: Final = 12
MAX_PASSWORD_LENGTH: Final = 1024

_HASH = re.compile(r"scrypt\$(\d{1,2})\$(\d{1,2})\$(\d{1,2})\$([A-Za-z0-9_-]{16,})\$([A-Za-z0-9_-]{32,})")


def hash_password(password: str, *, log2_n: int = LOG2_N) -> str:
    """A new hash of ``password`` with a random salt (``log2_n`` lower than the default only in tests)."""
    check_new_password(password)
    salt = secrets.token_bytes(SALT_BYTES)
    key = _scrypt(password, salt, log2_n, BLOCK_SIZE, PARALLELISM)
    return f"scrypt${log2_n}${BLOCK_SIZE}${PARALLELISM}${_b64(salt)}${_b64(key)}"


def check_new_password(password: str) -> None:
    """Refuse (ValueError, saying why) a password too short or too long to be set."""
    if len(password) < MIN_PASSWORD_LENGTH:
        raise ValueError(f"the password is {len(password)} characters long: use at least {MIN_PASSWORD_LENGTH}")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise ValueError(f"the password is longer than {MAX_PASSWORD_LENGTH} characters")


def is_password_hash(value: str) -> bool:
    """Whether ``value`` is a hash as ``hash_password`` writes it (with sane parameters)."""
    match = _HASH.fullmatch(value)
    if match is None:
        return False
    log2_n, block_size, parallelism = (int(match.group(i)) for i in (1, 2, 3))
    return 10 <= log2_n <= 20 and 1 <= block_size <= 32 and 1 <= parallelism <= 16


def verify_password(password: str, stored: str) -> bool:
    """Whether ``password`` matches ``stored`` (compared in constant time); False for a malformed hash."""
    match = _HASH.fullmatch(stored)
    if match is None or not is_password_hash(stored) or len(password) > MAX_PASSWORD_LENGTH:
        return False
    log2_n, block_size, parallelism = (int(match.group(i)) for i in (1, 2, 3))
    salt, expected = _unb64(match.group(4)), _unb64(match.group(5))
    key = _scrypt(password, salt, log2_n, block_size, parallelism, len(expected))
    return hmac.compare_digest(key, expected)


def fingerprint(stored: str) -> str:
    """A short digest of a stored hash: sessions carry it, so changing a password ends every session made
    with the old one (and it reveals nothing of the password or the hash)."""
    return hashlib.sha256(stored.encode("ascii")).hexdigest()[:16]


def _scrypt(password: str, salt: bytes, log2_n: int, r: int, p: int, length: int = KEY_BYTES) -> bytes:
    n = 1 << log2_n
    # OpenSSL refuses to use more than maxmem; scrypt needs 128 * n * r bytes, plus room for its own use.
    maxmem = 128 * n * r + 16 * 1024 * 1024
    return hashlib.scrypt(password.encode("utf-8"), salt=salt, n=n, r=r, p=p, maxmem=maxmem, dklen=length)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
