"""DKIM signatures, checked by dkimpy's verifier against the public key as DNS would publish it."""

from __future__ import annotations

import base64
import re
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from syndication.config import DkimSettings
from syndication.errors import ConfigError
from syndication.mailing.dkim import sign, signer
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
