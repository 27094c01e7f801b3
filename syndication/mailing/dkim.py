"""DKIM signatures (RFC 6376) on finished messages: canonicalised here, signed by OpenSSL.

Signed with rsa-sha256 and relaxed/relaxed canonicalisation, so a relay that refolds a header or changes
trailing white space does not break the signature. The signature covers the headers a reader sees and the
ones RFC 8058 requires for one-click unsubscribe (List-Unsubscribe and List-Unsubscribe-Post). Headers that
must appear only once are listed once more than they occur ("oversigned"): a copy added on the way, or one
added where the message had none, breaks the signature instead of riding on it.

The signature header is byte for byte the one dkimpy writes for the same message, key and second (same tags
in the same order, same folding; tests/test_dkim.py compares them on a corpus), but made about ten times
faster: the key is parsed once, the message is split and canonicalised with a few C-level scans of its bytes
(the service writes CRLF-terminated MIME, so the usual case rewrites nothing), and the RSA step goes through
OpenSSL (the ``cryptography`` package) instead of dkimpy's Python integers. dkimpy stays as the fallback for
an RSA key OpenSSL refuses but dkimpy reads, and as the verifier in the tests.
"""

from __future__ import annotations

import base64
import hashlib
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

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

_SIGNED = frozenset(SIGNED_HEADERS)
_HEADER_NAME = re.compile(rb"([\x21-\x7e]+?):")
#: The value of the b= tag with the folding white space around it (RFC 6376 §3.5), as dkimpy removes it.
_FWS = rb"(?:(?:\s*\r?\n)?\s+)?"
_B_VALUE = re.compile(rb"([;\s]b" + _FWS + rb"=)(?:" + _FWS + rb"[a-zA-Z0-9+/=])*(?:\r?\n\Z)?")
_HEADER = b"DKIM-Signature"
#: dkimpy folds the tag list at column 72, the first line counting the header name.
_FIRST_WIDTH = 72 - len(_HEADER)
_WIDTH = 71
#: What dkimpy writes in b= while hashing the header; the header is folded with it first.
_PLACEHOLDER = b"0" * 60
_PKCS1V15 = padding.PKCS1v15()
_SHA256 = hashes.SHA256()


@dataclass(frozen=True, slots=True)
class DkimKey:
    """A checked RSA private key: ``private`` as OpenSSL parsed it (None: only dkimpy reads it), its ``pem``."""

    pem: bytes
    private: rsa.RSAPrivateKey | None


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


def load_key(path: Path) -> DkimKey:
    """The PEM RSA private key of ``path`` (PKCS#1 or PKCS#8, not encrypted), parsed and checked; or a ConfigError."""
    try:
        pem = path.read_bytes()
    except OSError as error:
        raise ConfigError(f"dkim.key_file {path}: cannot be read: {error.strerror or error}") from error
    pem = pem.replace(b"\r\n", b"\n").strip() + b"\n"
    if b"ENCRYPTED" in pem:
        raise ConfigError(f"dkim.key_file {path}: the key is encrypted; store it without a passphrase")
    try:
        private = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        bits = _dkimpy_key_bits(path, pem)  # a key OpenSSL refuses may still be one dkimpy signs with
        key = DkimKey(pem, None)
    else:
        if not isinstance(private, rsa.RSAPrivateKey):
            kind = type(private).__name__.removeprefix("_").removesuffix("PrivateKey") or "other"
            raise ConfigError(f"dkim.key_file {path}: not a PEM RSA private key (an {kind} key)")
        bits = private.key_size
        key = DkimKey(pem, private)
    if bits < _MIN_KEY_BITS:
        raise ConfigError(f"dkim.key_file {path}: the key has {bits} bits; verifiers need at least {_MIN_KEY_BITS}")
    return key


def _dkimpy_key_bits(path: Path, pem: bytes) -> int:
    from dkim.crypto import UnparsableKeyError, parse_pem_private_key

    try:
        parsed = parse_pem_private_key(pem)
    except (UnparsableKeyError, ValueError, IndexError, TypeError) as error:
        reason = " ".join(str(error).split()) or "unparsable"
        raise ConfigError(f"dkim.key_file {path}: not a PEM RSA private key ({reason[:200]})") from error
    return int(parsed["modulus"]).bit_length()


def signed_header_names(headers: list[tuple[bytes, bytes]]) -> list[bytes]:
    """The h= list for a message with ``headers`` (lowercase names): each signed one as often as it occurs,
    in the order of SIGNED_HEADERS, then OVERSIGNED_HEADERS once more."""
    counts: dict[bytes, int] = {}
    for name, _value in headers:
        if name in _SIGNED:
            counts[name] = counts.get(name, 0) + 1
    include = [name for name in SIGNED_HEADERS for _ in range(counts.get(name, 0))]
    include += OVERSIGNED_HEADERS
    return include


def signature_header(
    message: bytes, selector: bytes, domain: bytes, key: DkimKey, *, timestamp: int | None = None
) -> bytes:
    """The DKIM-Signature header (folded, ending with CRLF) for ``message``; t= is ``timestamp`` (default: now).

    A key only dkimpy reads is signed by dkimpy, at its own time.
    """
    headers, body = parse(message)
    include = signed_header_names(headers)
    if key.private is None:
        return _dkimpy_header(message, selector, domain, key.pem, include)
    body_hash = base64.b64encode(hashlib.sha256(relaxed_body(body)).digest())
    stamp = str(int(time.time()) if timestamp is None else timestamp).encode("ascii")
    tags = b"; ".join(
        (
            b"v=1; a=rsa-sha256; c=relaxed/relaxed; d=" + domain,
            b"i=@" + domain,
            b"q=dns/txt; s=" + selector,
            b"t=" + stamp,
            b"h=" + b" : ".join(include),
            b"bh=" + body_hash,
        )
    )
    # What is hashed: the selected headers, then this header with an empty b= as it is folded with dkimpy's
    # placeholder in b=, relaxed and without its final CRLF.
    unsigned = _B_VALUE.sub(rb"\1", fold(tags + b"; b=" + _PLACEHOLDER))
    hashed = selected_headers(headers, include)
    hashed.append(b"dkim-signature:" + _relaxed_value(b" " + unsigned).rstrip())
    signature = key.private.sign(b"".join(hashed), _PKCS1V15, _SHA256)
    return _HEADER + b": " + fold(tags + b"; b=" + base64.b64encode(signature) + b"\r\n")


def parse(message: bytes) -> tuple[list[tuple[bytes, bytes]], bytes]:
    """The headers of ``message`` (lowercase name, raw value with CRLF line ends) and its body with CRLF line ends,
    split as dkimpy's ``rfc822_parse`` splits them (a bare LF counts as a line end)."""
    if not message:
        raise ValueError("an empty message has nothing to sign")
    if message.count(b"\n") != message.count(b"\r\n"):
        message = message.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    if message.startswith(b"\r\n"):
        return [], message[2:]
    end = message.find(b"\r\n\r\n")
    if end < 0:
        head, body = message.removesuffix(b"\r\n"), b""
    else:
        head, body = message[:end], message[end + 4 :]
    headers: list[tuple[bytes, bytes]] = []
    for line in head.split(b"\r\n"):
        if line[:1] in (b" ", b"\t"):
            if not headers:
                raise ValueError("the message begins with a continuation line")
            name, value = headers[-1]
            headers[-1] = (name, value + line + b"\r\n")
            continue
        match = _HEADER_NAME.match(line)
        if match is not None:
            headers.append((match[1].lower(), line[match.end() :] + b"\r\n"))
        elif not line.startswith(b"From "):
            raise ValueError(f"not a header line: {line[:100]!r}")
    return headers, body


def selected_headers(headers: list[tuple[bytes, bytes]], include: list[bytes]) -> list[bytes]:
    """The headers ``include`` names, relaxed (``name:value`` CRLF): each name takes the last occurrence not yet
    taken, from the bottom up (RFC 6376 §5.4.2); a name without one left contributes nothing."""
    selected: list[bytes] = []
    last: dict[bytes, int] = {}
    for name in include:
        index = last.get(name, len(headers))
        while index > 0:
            index -= 1
            if headers[index][0] == name:
                selected.append(name + b":" + _relaxed_value(headers[index][1]) + b"\r\n")
                break
        last[name] = index
    return selected


def _relaxed_value(value: bytes) -> bytes:
    """A header value relaxed (RFC 6376 §3.4.2): unfolded, runs of WSP made one space, stripped."""
    return _compress_wsp(value.replace(b"\r\n", b"")).strip()


def relaxed_body(body: bytes) -> bytes:
    """``body`` (CRLF line ends) canonicalised "relaxed" (RFC 6376 §3.4.4): white space at line ends removed, runs
    of it made one space, empty lines at the end removed, a CRLF at the end; an empty body stays empty.

    With bytes.replace rather than regular expressions (which try a match at every byte, ten times slower): tabs
    become spaces, runs of spaces are halved until none is left, then the one space left before a line end goes;
    a body with nothing to change (the service's text lines) is only scanned."""
    body = _compress_wsp(body)
    if b" \r\n" in body:
        body = body.replace(b" \r\n", b"\r\n")
    end = len(body)
    while body.endswith(b"\r\n", 0, end):
        end -= 2
    if end == len(body):
        return body + b"\r\n" if body else b""
    return body[: end + 2] if end else b""


def _compress_wsp(data: bytes) -> bytes:
    """``data`` with each run of spaces and tabs made one space."""
    if b"\t" in data:
        data = data.replace(b"\t", b" ")
    while b"  " in data:
        data = data.replace(b"  ", b" ")
    return data


def fold(value: bytes) -> bytes:
    """The tag list of a DKIM-Signature folded as dkimpy folds it: lines of at most 72 characters (the first
    counting the header name), broken at the last space that fits, or hard where none does."""
    width = _FIRST_WIDTH
    if len(value) <= width or (len(value) - value.rfind(b"\r\n") == 2 and len(value) <= width + 2):
        return value
    parts: list[bytes] = []
    continued = value.rfind(b"\r\n ")
    if continued >= 0:
        parts.append(value[: continued + 3])
        value = value[continued + 3 :]
    while len(value) > width:
        space = value.rfind(b" ", 0, width)
        if space < 0:
            parts.append(value[:width])
            value = value[width:]
        else:
            parts.append(value[:space])
            value = value[space + 1 :]
        parts.append(b"\r\n ")
        width = _WIDTH
    parts.append(value)
    return b"".join(parts)


def _dkimpy_header(message: bytes, selector: bytes, domain: bytes, pem: bytes, include: list[bytes]) -> bytes:
    import dkim

    header = dkim.sign(
        message, selector, domain, pem, canonicalize=_CANONICALISATION, include_headers=include, linesep=b"\r\n"
    )
    if not isinstance(header, bytes):
        raise TypeError("dkim.sign returned no bytes")
    return header
