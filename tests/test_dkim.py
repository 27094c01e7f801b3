"""DKIM signatures, checked by dkimpy's verifier against the public key as DNS would publish it."""

from __future__ import annotations

import base64
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from syndication.config import DkimSettings
from syndication.errors import ConfigError
from syndication.mailing.dkim import (
    OVERSIGNED_HEADERS,
    SIGNED_HEADERS,
    load_key,
    relaxed_body,
    sign,
    signature_header,
    signer,
)
from syndication.mailing.message import Envelope, build_message

SELECTOR = "news2024"
DOMAIN = "news.example.org"


@pytest.fixture(scope="module")
def key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
def key_file(tmp_path: Path, key: rsa.RSAPrivateKey) -> Path:
    path = tmp_path / "dkim.pem"
    path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return path


@pytest.fixture
def settings(key_file: Path) -> DkimSettings:
    return DkimSettings(selector=SELECTOR, domain=DOMAIN, key_file=key_file)


def published(key: rsa.RSAPrivateKey) -> Callable[..., bytes | None]:
    """A DNS lookup that knows only the TXT record of our selector."""
    public = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    record = b"v=DKIM1; k=rsa; p=" + base64.b64encode(public)

    def lookup(name: bytes, timeout: int = 5) -> bytes | None:
        return record if name == f"{SELECTOR}._domainkey.{DOMAIN}.".encode() else None

    return lookup


def newsletter() -> bytes:
    envelope = Envelope(
        from_address="digest@news.example.org",
        from_name="Network news",
        to_address="ana@example.org",
        to_name="Ana Pérez",
        subject="This week: Malmö, São Paulo and 北九州市 in one digest that is long enough to be folded",
        date=datetime(2024, 6, 1, 12, 0, tzinfo=UTC),
        message_id="<digest.42.ana@news.example.org>",
        reply_to="editors@news.example.org",
        extra=(
            ("List-Id", "Network news <news.example.org>"),
            ("List-Unsubscribe", "<https://news.example.org/unsubscribe/abc123>, <mailto:leave@news.example.org>"),
            ("List-Unsubscribe-Post", "List-Unsubscribe=One-Click"),
        ),
    )
    return build_message(envelope, "Hello Ana,\n.a line with a dot\nthe news.\n", "<p>Hello Ana</p>")


def signature_tags(signed: bytes) -> dict[str, str]:
    header = signed.split(b"\r\n\r\n", 1)[0].decode()
    match = re.match(r"DKIM-Signature:(.*?)\r\n(?=\S)", header, re.DOTALL)
    assert match
    value = re.sub(r"\s+", "", match.group(1))
    return dict(tag.split("=", 1) for tag in value.split(";") if tag)


def test_a_signed_message_verifies(settings: DkimSettings, key: rsa.RSAPrivateKey) -> None:
    message = newsletter()
    signed = sign(message, settings)

    assert signed.startswith(b"DKIM-Signature: ")
    assert signed.endswith(message)
    assert dkim.verify(signed, dnsfunc=published(key))


def test_the_signature_covers_the_headers_of_one_click_unsubscribe(settings: DkimSettings) -> None:
    tags = signature_tags(sign(newsletter(), settings))

    assert (tags["v"], tags["a"], tags["c"]) == ("1", "rsa-sha256", "relaxed/relaxed")
    assert (tags["d"], tags["s"]) == (DOMAIN, SELECTOR)
    signed_headers = tags["h"].split(":")
    for name in (
        "from",
        "to",
        "subject",
        "date",
        "message-id",
        "mime-version",
        "content-type",
        "list-id",
        "list-unsubscribe",
        "list-unsubscribe-post",
    ):
        # Once for the header, once more so that a second copy cannot be added.
        assert signed_headers.count(name) == 2, name


def test_the_signature_header_is_folded_and_keeps_crlf(settings: DkimSettings) -> None:
    message = newsletter()
    signed = sign(message, settings)
    header = signed.removesuffix(message)
    assert header.endswith(b"\r\n")
    lines = header.split(b"\r\n")[:-1]
    assert len(lines) > 1 and all(line.startswith((b" ", b"\t")) for line in lines[1:])
    assert max(len(line) for line in lines) <= 78
    assert b"\n" not in header.replace(b"\r\n", b"") and b"\r" not in header.replace(b"\r\n", b"")


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (b"Subject: =?utf-8?b?VGhpcy", b"Subject: =?utf-8?b?VGhhdC"),
        (b"the news.", b"the NEWS."),
        (b"List-Unsubscribe: <https://news.example.org/", b"List-Unsubscribe: <https://evil.example/"),
        (b"List-Id:", b"List-Unsubscribe: <https://evil.example/>\r\nList-Id:"),
        (b"Reply-To:", b"Reply-To: thief@evil.example\r\nReply-To:"),
    ],
)
def test_tampering_breaks_the_signature(settings: DkimSettings, key: rsa.RSAPrivateKey, old: bytes, new: bytes) -> None:
    signed = sign(newsletter(), settings)
    assert old in signed
    assert not dkim.verify(signed.replace(old, new, 1), dnsfunc=published(key))


def test_refolding_on_the_way_keeps_the_signature(settings: DkimSettings, key: rsa.RSAPrivateKey) -> None:
    signed = sign(newsletter(), settings)
    refolded = signed.replace(b"Date: ", b"Date:\r\n    ", 1).replace(b"the news.\r\n", b"the news.   \r\n", 1)
    assert dkim.verify(refolded, dnsfunc=published(key))


def test_a_signer_reads_the_key_once(settings: DkimSettings, key_file: Path, key: rsa.RSAPrivateKey) -> None:
    sign_message = signer(settings)
    assert sign_message is not None
    key_file.unlink()
    assert dkim.verify(sign_message(newsletter()), dnsfunc=published(key))


def test_no_domain_means_no_signer() -> None:
    assert signer(DkimSettings()) is None
    with pytest.raises(ConfigError, match="domain is empty"):
        sign(newsletter(), DkimSettings())


def test_a_pkcs1_key_with_crlf_line_ends_works(tmp_path: Path, key: rsa.RSAPrivateKey) -> None:
    path = tmp_path / "dkim-rsa.pem"
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
    )
    path.write_bytes(pem.replace(b"\n", b"\r\n"))
    signed = sign(newsletter(), DkimSettings(selector=SELECTOR, domain=DOMAIN, key_file=path))
    assert dkim.verify(signed, dnsfunc=published(key))


def _ec_key() -> bytes:
    return ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _encrypted_key(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"passphrase"),
    )


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (None, "cannot be read"),
        (b"", "not a PEM RSA private key"),
        (b"this is not a key\n", "not a PEM RSA private key"),
        (b"-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n", "not a PEM RSA private key"),
        ("ec", "not a PEM RSA private key"),
        ("encrypted", "encrypted"),
    ],
)
def test_a_bad_key_file_is_a_configuration_error(
    tmp_path: Path, key: rsa.RSAPrivateKey, content: bytes | str | None, reason: str
) -> None:
    path = tmp_path / "dkim.pem"
    if content == "ec":
        path.write_bytes(_ec_key())
    elif content == "encrypted":
        path.write_bytes(_encrypted_key(key))
    elif isinstance(content, bytes):
        path.write_bytes(content)
    with pytest.raises(ConfigError) as caught:
        signer(DkimSettings(selector=SELECTOR, domain=DOMAIN, key_file=path))
    message = str(caught.value)
    assert str(path) in message and reason in message
    assert "\n" not in message


def test_a_missing_selector_or_key_file_is_a_configuration_error(key_file: Path) -> None:
    with pytest.raises(ConfigError, match="selector"):
        signer(DkimSettings(domain=DOMAIN, key_file=key_file))
    with pytest.raises(ConfigError, match="key_file"):
        signer(DkimSettings(selector=SELECTOR, domain=DOMAIN))


# Our signer against dkimpy's: byte-identical headers for the same message, key and second (issue 17).

GOLDEN = Path(__file__).parent / "golden" / "email"
FIXED_TIME = 1_717_243_200


def _envelope(subject: str, extra: tuple[tuple[str, str], ...] = ()) -> Envelope:
    return Envelope(
        from_address="digest@news.example.org",
        from_name="Network news",
        to_address="ana@example.org",
        to_name="Ana Pérez",
        subject=subject,
        date=datetime(2024, 6, 1, 12, 0, tzinfo=UTC),
        message_id="<digest.43.ana@news.example.org>",
        reply_to="editors@news.example.org",
        extra=extra,
    )


def _golden_digest() -> bytes:
    text = (GOLDEN / "digest.txt").read_text(encoding="utf-8")
    html = (GOLDEN / "digest.html").read_text(encoding="utf-8")
    extra = (
        ("List-Id", "Network news <news.example.org>"),
        ("List-Unsubscribe", "<https://news.example.org/u/" + "x" * 43 + ">"),
        ("List-Unsubscribe-Post", "List-Unsubscribe=One-Click"),
        ("Feedback-ID", "edition-7:digest:news.example.org"),
    )
    return build_message(_envelope("3 new posts on Climate action and Circular economy", extra), text, html)


_HEAD = (
    b"From: Network news <digest@news.example.org>\r\n"
    b"To: ana@example.org\r\n"
    b"Subject: =?utf-8?q?Malm=C3=B6_and_S=C3=A3o_Paulo?=\r\n"
    b"Date: Sat, 01 Jun 2024 12:00:00 +0000\r\n"
    b"Message-ID: <edge@news.example.org>\r\n"
)

#: Hand-made messages for the corners of canonicalisation and parsing.
EDGE_CASES: dict[str, bytes] = {
    "trailing blank lines": _HEAD + b"\r\nbody\r\n\r\n\r\n\r\n",
    "trailing white space": _HEAD + b"\r\nline one   \r\nline two\t\r\n \t \r\nend \t\r\n",
    "tabs and runs of spaces": _HEAD + b"\r\n\tindented\r\na\t\tb    c \t d\r\n",
    "no final CRLF": _HEAD + b"\r\nthe last line has no end",
    "no final CRLF after white space": _HEAD + b"\r\nends with spaces   ",
    "empty body": _HEAD + b"\r\n",
    "no blank line": _HEAD,
    "no blank line nor final CRLF": _HEAD.removesuffix(b"\r\n"),
    "only blank lines": _HEAD + b"\r\n\r\n\r\n\r\n",
    "only white space": _HEAD + b"\r\n   \r\n\t\r\n",
    "bare LF line ends": _HEAD.replace(b"\r\n", b"\n") + b"\nunix\nlines  \n\n",
    "mixed line ends": _HEAD + b"\r\nmixed\nline\r\nends\n",
    "lone CR": _HEAD + b"\r\na\rb\r\r\nc\r",
    "long folded headers": (
        b"From: =?utf-8?b?QW5hIFDDqXJleg==?=\r\n <digest@news.example.org>\r\n"
        b"To: a@example.org,\r\n\tb@example.org,   \r\n   c@example.org\r\n"
        b"Cc: d@example.org\r\n"
        b"Subject: =?utf-8?b?VGhpcyB3ZWVrOiBNYWxtw7YsIFPDo28gUGF1bG8gYW5kIOWMl+S5neW3nuW4gg==?=\r\n"
        b" =?utf-8?b?IGluIG9uZSBkaWdlc3Q=?=\r\n"
        b"Date:Sat, 01 Jun 2024 12:00:00 +0000\r\n"
        b"Message-ID:   <folded@news.example.org>   \r\n"
        b"List-Unsubscribe: <https://news.example.org/unsubscribe/abc>,\r\n <mailto:leave@news.example.org>\r\n"
        b"\r\nbody\r\n"
    ),
    "repeated and unsigned headers": (
        b"Received: from a by b\r\nReceived: from c by d\r\n"
        + _HEAD
        + b"To: second@example.org\r\nX-Mailer: syndication\r\nreply-to: R@Example.ORG\r\nREFERENCES: <a@b>\r\n"
        b"\r\nbody\r\n"
    ),
    "mbox From line": b"From digest@news.example.org Sat Jun  1 12:00:00 2024\r\n" + _HEAD + b"\r\nbody\r\n",
    "non-ASCII body": _HEAD + "\r\nMalmö, São Paulo, 北九州市 \r\n".encode(),
}


def _corpus() -> dict[str, bytes]:
    corpus = {"newsletter": newsletter(), "golden digest": _golden_digest()}
    for n, (text, html) in enumerate(
        [
            ("", ""),
            ("one line, no end", "<p>x</p>"),
            ("  leading\n\ttab\ntrailing   \n\n\n", "<table>\n  <tr>\t<td>  x  </td></tr>\n</table>\n"),
            ("x" * 300 + " " * 80 + "\n" + "é" * 200, "<p>" + "w " * 500 + "</p>"),
        ]
    ):
        corpus[f"built {n}"] = build_message(_envelope(f"Digest {n}: São Paulo " + "long " * n * 12), text, html)
    corpus.update(EDGE_CASES)
    return corpus


CORPUS = _corpus()


def _dkimpy_header(message: bytes, selector: str, domain: str, pem: bytes, monkeypatch: pytest.MonkeyPatch) -> bytes:
    """dkimpy's header for ``message`` at FIXED_TIME, with the header list the old dkimpy-based signer used."""
    headers, _body = dkim.rfc822_parse(message)
    counts: dict[bytes, int] = {}
    for name, _value in headers:
        counts[bytes(name).lower()] = counts.get(bytes(name).lower(), 0) + 1
    include = [name for name in SIGNED_HEADERS for _ in range(counts.get(name, 0))] + list(OVERSIGNED_HEADERS)
    with monkeypatch.context() as patched:
        patched.setattr(dkim, "time", SimpleNamespace(time=lambda: FIXED_TIME + 0.75))
        header = dkim.sign(
            message,
            selector.encode(),
            domain.encode(),
            pem,
            canonicalize=(b"relaxed", b"relaxed"),
            include_headers=include,
            linesep=b"\r\n",
        )
    assert isinstance(header, bytes)
    return header


def _pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
    )


@pytest.mark.parametrize("name", list(CORPUS))
def test_our_signature_is_byte_identical_to_dkimpys(
    name: str, key_file: Path, key: rsa.RSAPrivateKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    message = CORPUS[name]
    ours = signature_header(message, SELECTOR.encode(), DOMAIN.encode(), load_key(key_file), timestamp=FIXED_TIME)
    assert ours == _dkimpy_header(message, SELECTOR, DOMAIN, _pem(key), monkeypatch)
    assert dkim.verify(ours + message, dnsfunc=published(key))


@pytest.mark.parametrize("selector", ["s", "news2024", "a-much-longer-selector-name-2024-06", "k" * 40])
@pytest.mark.parametrize("bits", [1024, 2048, 3072])
def test_folding_matches_dkimpy_for_any_selector_and_key_size(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, selector: str, bits: int
) -> None:
    # The tag list is folded at column 72: a longer selector or signature moves every break.
    key = _sized_key(bits)
    path = tmp_path / "dkim.pem"
    path.write_bytes(_pem(key))
    messages = [CORPUS["newsletter"], CORPUS["long folded headers"], CORPUS["empty body"]]
    domains = [DOMAIN, "x.io", "mail.a-rather-long-subdomain.of.an-organisation.example"]
    if bits > 2048:  # dkimpy's pure-Python RSA is slow with big keys: one message, two domains
        messages, domains = messages[:1], domains[1:]
    for message in messages:
        for domain in domains:
            ours = signature_header(message, selector.encode(), domain.encode(), load_key(path), timestamp=FIXED_TIME)
            assert ours == _dkimpy_header(message, selector, domain, _pem(key), monkeypatch)


_KEYS: dict[int, rsa.RSAPrivateKey] = {}


def _sized_key(bits: int) -> rsa.RSAPrivateKey:
    if bits not in _KEYS:
        _KEYS[bits] = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    return _KEYS[bits]


def test_the_signer_stamps_the_current_second(settings: DkimSettings, monkeypatch: pytest.MonkeyPatch) -> None:
    sign_message = signer(settings)
    assert sign_message is not None
    monkeypatch.setattr(time, "time", lambda: FIXED_TIME + 0.999)
    assert signature_tags(sign_message(newsletter()))["t"] == str(FIXED_TIME)


def test_relaxed_body_matches_dkimpy_on_odd_bodies() -> None:
    bodies = [b"", b"\r\n", b"\r\n\r\n", b"a", b"a\r\n", b" \r\n", b"   ", b"\t", b"a \t\r\n\r\n \r\n", b"a\rb\r\r\n"]
    bodies += [CORPUS["golden digest"].split(b"\r\n\r\n", 1)[1]]
    relaxed = dkim.CanonicalizationPolicy.from_c_value(b"relaxed/relaxed")
    for body in bodies:
        assert relaxed_body(body) == relaxed.canonicalize_body(body), body


def test_a_malformed_message_is_refused(settings: DkimSettings) -> None:
    sign_message = signer(settings)
    assert sign_message is not None
    for message in (b"", b" continued\r\nFrom: a@b\r\n\r\nx", b"From: a@b\r\nnot a header\r\n\r\nx"):
        with pytest.raises(ValueError):
            sign_message(message)
