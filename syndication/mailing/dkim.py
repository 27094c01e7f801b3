"""DKIM signatures (RFC 6376) on finished messages, with dkimpy.

Signed with rsa-sha256 and relaxed/relaxed canonicalisation, so a relay that refolds a header or changes
trailing white space does not break the signature. The signature covers the headers a reader sees and the
ones RFC 8058 requires for one-click unsubscribe (List-Unsubscribe and List-Unsubscribe-Post). Headers that
must appear only once are listed once more than they occur ("oversigned"): a copy added on the way, or one
added where the message had none, breaks the signature instead of riding on it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import dkim
from dkim.crypto import UnparsableKeyError, parse_pem_private_key

from syndication.config import DkimSettings
from syndication.errors import ConfigError

#: Headers covered by the signature, each as often as the message holds it.
SIGNED_HEADERS: tuple[bytes, ...] = (
    b"from",
    b"sender",
    b"reply-to",
    b"to",
    b"cc",
    b"subject",
    b"date",
    b"message-id",
    b"in-reply-to",
    b"references",
    b"mime-version",
    b"content-type",
    b"content-transfer-encoding",
    b"list-id",
    b"list-help",
    b"list-subscribe",
    b"list-unsubscribe",
    b"list-unsubscribe-post",
    b"list-post",
    b"list-owner",
    b"list-archive",
    b"feedback-id",
)
#: Headers signed once more than they occur, so none can be added after signing.
OVERSIGNED_HEADERS: tuple[bytes, ...] = (
    b"from",
    b"reply-to",
    b"to",
    b"subject",
    b"date",
    b"message-id",
    b"mime-version",
    b"content-type",
    b"list-id",
    b"list-unsubscribe",
    b"list-unsubscribe-post",
)
_CANONICALISATION = (b"relaxed", b"relaxed")
_MIN_KEY_BITS = 1024


def sign(message: bytes, settings: DkimSettings) -> bytes:
    """``message`` with a DKIM-Signature header in front, signed with the key of ``settings``.

    Reads the key file on each call: for many messages use :func:`signer`, which reads it once.
    """
    sign_message = signer(settings)
    if sign_message is None:
        raise ConfigError("dkim: domain is empty, so there is nothing to sign with")
    return sign_message(message)


def signer(settings: DkimSettings) -> Callable[[bytes], bytes] | None:
    """A function that signs a message with the key of ``settings``, read and checked once; None without a domain.

    A selector or key file that is missing, unreadable or not an RSA private key is a ConfigError.
    """
    if not settings.domain:
        return None
    if not settings.selector:
        raise ConfigError("dkim: selector is empty (the key is published at <selector>._domainkey.<domain>)")
    if settings.key_file is None:
        raise ConfigError("dkim: key_file is not set (a PEM file with the RSA private key)")
    key = load_key(settings.key_file)
    selector = settings.selector.encode("ascii")
    domain = settings.domain.encode("ascii")

    def sign_message(message: bytes) -> bytes:
        return signature_header(message, selector, domain, key) + message

    return sign_message


def load_key(path: Path) -> bytes:
    """The PEM RSA private key of ``path`` (PKCS#1 or PKCS#8, not encrypted), checked; or a ConfigError."""
    try:
        pem = path.read_bytes()
    except OSError as error:
        raise ConfigError(f"dkim.key_file {path}: cannot be read: {error.strerror or error}") from error
    pem = pem.replace(b"\r\n", b"\n").strip() + b"\n"
    if b"ENCRYPTED" in pem:
        raise ConfigError(f"dkim.key_file {path}: the key is encrypted; store it without a passphrase")
    try:
        key = parse_pem_private_key(pem)
    except (UnparsableKeyError, ValueError, IndexError, TypeError) as error:
        reason = " ".join(str(error).split()) or "unparsable"
        raise ConfigError(f"dkim.key_file {path}: not a PEM RSA private key ({reason[:200]})") from error
    bits = int(key["modulus"]).bit_length()
    if bits < _MIN_KEY_BITS:
        raise ConfigError(f"dkim.key_file {path}: the key has {bits} bits; verifiers need at least {_MIN_KEY_BITS}")
    return pem


def signature_header(message: bytes, selector: bytes, domain: bytes, key: bytes) -> bytes:
    """The DKIM-Signature header (folded, ending with CRLF) for ``message``."""
    headers, _body = dkim.rfc822_parse(message)
    counts: dict[bytes, int] = {}
    for name, _value in headers:
        lowered = bytes(name).lower()
        counts[lowered] = counts.get(lowered, 0) + 1
    include = [name for name in SIGNED_HEADERS for _ in range(counts.get(name, 0))]
    include += list(OVERSIGNED_HEADERS)
    header = dkim.sign(
        message, selector, domain, key, canonicalize=_CANONICALISATION, include_headers=include, linesep=b"\r\n"
    )
    if not isinstance(header, bytes):
        raise TypeError("dkim.sign returned no bytes")
    return header
