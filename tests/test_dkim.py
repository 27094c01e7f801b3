"""DKIM signatures, checked by dkimpy's verifier against the public keys as DNS would publish them: rsa-sha256,
and ed25519-sha256 (RFC 8463) beside it (dkimpy verifies those with PyNaCl)."""

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
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from syndication.config import DkimSettings
from syndication.errors import ConfigError
from syndication.mailing.dkim import (
    OVERSIGNED_HEADERS,
    SIGNED_HEADERS,
    load_ed25519_key,
    load_key,
    relaxed_body,
    sign,
    signature_header,
    signer,
)
from syndication.mailing.message import Envelope, build_message

SELECTOR = "news2024"
ED25519_SELECTOR = "news2024e"
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


def published(key: rsa.RSAPrivateKey, ed_key: ed25519.Ed25519PrivateKey | None = None) -> Callable[..., bytes | None]:
    """A DNS lookup that knows only the TXT record of our selector (and of our Ed25519 selector with ``ed_key``)."""
    public = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    records = {f"{SELECTOR}._domainkey.{DOMAIN}.".encode(): b"v=DKIM1; k=rsa; p=" + base64.b64encode(public)}
    if ed_key is not None:
        records[f"{ED25519_SELECTOR}._domainkey.{DOMAIN}.".encode()] = ed25519_record(ed_key)

    def lookup(name: bytes, timeout: int = 5) -> bytes | None:
        return records.get(name)

    return lookup


def ed25519_record(ed_key: ed25519.Ed25519PrivateKey) -> bytes:
    """The DKIM key record of ``ed_key`` (RFC 8463 §4: the raw 32-byte public key in base64)."""
    raw = ed_key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return b"v=DKIM1; k=ed25519; p=" + base64.b64encode(raw)


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


def _dkimpy_header(
    message: bytes,
    selector: str,
    domain: str,
    pem: bytes,
    monkeypatch: pytest.MonkeyPatch,
    algorithm: bytes = b"rsa-sha256",
) -> bytes:
    """dkimpy's header for ``message`` at FIXED_TIME, with the header list the old dkimpy-based signer used;
    ``pem`` is the key as dkimpy takes it for ``algorithm`` (for ed25519-sha256: the base64 of the seed)."""
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
            signature_algorithm=algorithm,
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


# Ed25519 beside RSA (RFC 8463, issue 17): a second signature that receivers without Ed25519 ignore.


@pytest.fixture(scope="module")
def ed_key() -> ed25519.Ed25519PrivateKey:
    return ed25519.Ed25519PrivateKey.generate()


@pytest.fixture
def ed_key_file(tmp_path: Path, ed_key: ed25519.Ed25519PrivateKey) -> Path:
    path = tmp_path / "dkim-ed25519.pem"
    path.write_bytes(
        ed_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return path


@pytest.fixture
def both(key_file: Path, ed_key_file: Path) -> DkimSettings:
    return DkimSettings(
        selector=SELECTOR,
        domain=DOMAIN,
        key_file=key_file,
        ed25519_selector=ED25519_SELECTOR,
        ed25519_key_file=ed_key_file,
    )


def _seed(ed_key: ed25519.Ed25519PrivateKey) -> bytes:
    """The key as dkimpy's dknewkey writes it (and dkim.sign takes it): the base64 of the 32-byte seed."""
    raw = ed_key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    return base64.b64encode(raw)


def _signatures(signed: bytes) -> list[dict[str, str]]:
    """The tags of each DKIM-Signature of ``signed``, top first."""
    head = signed.split(b"\r\n\r\n", 1)[0].decode()
    values = re.findall(r"^DKIM-Signature:(.*?)\r\n(?=\S)", head, re.DOTALL | re.MULTILINE)
    tags = [re.sub(r"\s+", "", value) for value in values]
    return [dict(tag.split("=", 1) for tag in value.split(";") if tag) for value in tags]


def verifies(signed: bytes, idx: int, dnsfunc: Callable[..., bytes | None]) -> bool:
    """Whether dkimpy verifies the ``idx``-th DKIM-Signature of ``signed`` (top first); as ``dkim.verify`` does, a
    signature dkimpy refuses outright (a body hash that differs) counts as not verified."""
    try:
        return bool(dkim.DKIM(signed).verify(idx=idx, dnsfunc=dnsfunc))
    except dkim.DKIMException:
        return False


def test_both_signatures_verify_with_dkimpy(
    both: DkimSettings, key: rsa.RSAPrivateKey, ed_key: ed25519.Ed25519PrivateKey
) -> None:
    message = newsletter()
    signed = sign(message, both)
    assert signed.endswith(message)
    first, second = _signatures(signed)
    # RSA on top: a receiver that looks at the first signature only still finds one it can check.
    assert (first["a"], first["s"], second["a"], second["s"]) == (
        "rsa-sha256",
        SELECTOR,
        "ed25519-sha256",
        ED25519_SELECTOR,
    )
    # One parse, one body hash, one second, one header list for both.
    assert all(first[tag] == second[tag] for tag in ("c", "d", "i", "t", "h", "bh"))
    lookup = published(key, ed_key)
    assert verifies(signed, 0, lookup) and verifies(signed, 1, lookup)


def test_a_receiver_without_the_ed25519_record_still_verifies_the_rsa_signature(
    both: DkimSettings, key: rsa.RSAPrivateKey
) -> None:
    signed = sign(newsletter(), both)
    assert verifies(signed, 0, published(key))
    assert not verifies(signed, 1, published(key))


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (b"the news.", b"the NEWS."),
        (b"List-Unsubscribe: <https://news.example.org/", b"List-Unsubscribe: <https://evil.example/"),
        (b"Reply-To:", b"Reply-To: thief@evil.example\r\nReply-To:"),
    ],
)
def test_tampering_breaks_the_ed25519_signature_too(
    both: DkimSettings, key: rsa.RSAPrivateKey, ed_key: ed25519.Ed25519PrivateKey, old: bytes, new: bytes
) -> None:
    signed = sign(newsletter(), both)
    assert old in signed
    tampered = signed.replace(old, new, 1)
    assert not verifies(tampered, 1, published(key, ed_key)) and not verifies(tampered, 0, published(key, ed_key))


@pytest.mark.parametrize("name", list(CORPUS))
def test_our_ed25519_signature_is_byte_identical_to_dkimpys(
    name: str, ed_key_file: Path, ed_key: ed25519.Ed25519PrivateKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Ed25519 is deterministic (RFC 8032), so the same key, message and second give the same b= as dkimpy's:
    # which holds only if we sign what dkimpy signs, the SHA-256 hash of the headers (RFC 8463 §3).
    message = CORPUS[name]
    key = load_ed25519_key(ed_key_file)
    ours = signature_header(message, ED25519_SELECTOR.encode(), DOMAIN.encode(), key, timestamp=FIXED_TIME)
    theirs = _dkimpy_header(message, ED25519_SELECTOR, DOMAIN, _seed(ed_key), monkeypatch, b"ed25519-sha256")
    assert ours == theirs
    assert dkim.verify(ours + message, dnsfunc=lambda name, timeout=5: ed25519_record(ed_key))


@pytest.mark.parametrize("selector", ["s", "a-much-longer-selector-name-2024-06", "k" * 40])
def test_ed25519_folding_matches_dkimpy_for_any_selector(
    ed_key: ed25519.Ed25519PrivateKey, monkeypatch: pytest.MonkeyPatch, selector: str
) -> None:
    # b= is 88 characters for every Ed25519 key, so the selector and domain are what move the breaks.
    for domain in (DOMAIN, "x.io", "mail.a-rather-long-subdomain.of.an-organisation.example"):
        ours = signature_header(CORPUS["newsletter"], selector.encode(), domain.encode(), ed_key, timestamp=FIXED_TIME)
        theirs = _dkimpy_header(CORPUS["newsletter"], selector, domain, _seed(ed_key), monkeypatch, b"ed25519-sha256")
        assert ours == theirs


def test_both_headers_of_the_signer_are_dkimpys(
    both: DkimSettings, key: rsa.RSAPrivateKey, ed_key: ed25519.Ed25519PrivateKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    sign_message = signer(both)
    assert sign_message is not None
    message = CORPUS["golden digest"]
    monkeypatch.setattr(time, "time", lambda: FIXED_TIME + 0.5)
    signed = sign_message(message)
    rsa_header = _dkimpy_header(message, SELECTOR, DOMAIN, _pem(key), monkeypatch)
    ed_header = _dkimpy_header(message, ED25519_SELECTOR, DOMAIN, _seed(ed_key), monkeypatch, b"ed25519-sha256")
    assert signed == rsa_header + ed_header + message


def test_an_ed25519_key_as_dknewkey_writes_it_works(tmp_path: Path, ed_key: ed25519.Ed25519PrivateKey) -> None:
    seed_file = tmp_path / "dkim-ed25519.key"
    seed_file.write_bytes(_seed(ed_key))  # one line, no newline: as dknewkey --ktype ed25519 writes it
    pem_file = tmp_path / "dkim-ed25519.pem"
    pem = ed_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    pem_file.write_bytes(pem.replace(b"\n", b"\r\n"))
    raw = serialization.PublicFormat.Raw
    expected = ed_key.public_key().public_bytes(serialization.Encoding.Raw, raw)
    for path in (seed_file, pem_file):
        loaded = load_ed25519_key(path)
        assert loaded.public_key().public_bytes(serialization.Encoding.Raw, raw) == expected, path


def test_the_signer_reads_both_keys_once(
    both: DkimSettings, key_file: Path, ed_key_file: Path, key: rsa.RSAPrivateKey, ed_key: ed25519.Ed25519PrivateKey
) -> None:
    sign_message = signer(both)
    assert sign_message is not None
    key_file.unlink()
    ed_key_file.unlink()
    signed = sign_message(newsletter())
    assert verifies(signed, 0, published(key, ed_key)) and verifies(signed, 1, published(key, ed_key))


def _bad_ed25519_file(path: Path, content: str, key: rsa.RSAPrivateKey) -> None:
    ed_key = ed25519.Ed25519PrivateKey.generate()
    if content == "rsa":
        path.write_bytes(_pem(key))
    elif content == "ec":
        path.write_bytes(_ec_key())
    elif content == "encrypted":
        encryption = serialization.BestAvailableEncryption(b"passphrase")
        path.write_bytes(
            ed_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)
        )
    elif content == "64-byte seed":  # a seed and public key together, as some tools write: not what we read
        raw = ed_key.private_bytes(
            serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
        )
        path.write_bytes(base64.b64encode(raw + raw))
    elif content != "missing":
        path.write_text(content, encoding="utf-8")


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        ("missing", "cannot be read"),
        ("", "not an Ed25519 private key"),
        ("this is not a key\n", "not an Ed25519 private key"),
        ("64-byte seed", "not an Ed25519 private key"),
        ("-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n", "not a PEM Ed25519 private key"),
        ("rsa", "not an Ed25519 private key (an RSA key)"),
        ("ec", "not an Ed25519 private key (an EC key)"),
        ("encrypted", "encrypted"),
    ],
)
def test_a_bad_ed25519_key_file_is_a_configuration_error(
    tmp_path: Path, key_file: Path, key: rsa.RSAPrivateKey, content: str, reason: str
) -> None:
    path = tmp_path / "dkim-ed25519.pem"
    _bad_ed25519_file(path, content, key)
    settings = DkimSettings(
        selector=SELECTOR, domain=DOMAIN, key_file=key_file, ed25519_selector=ED25519_SELECTOR, ed25519_key_file=path
    )
    with pytest.raises(ConfigError) as caught:
        signer(settings)
    message = str(caught.value)
    assert f"dkim.ed25519_key_file {path}:" in message and reason in message, message
    assert "\n" not in message


def test_an_ed25519_key_as_the_rsa_key_is_refused_naming_it(tmp_path: Path, ed_key_file: Path) -> None:
    with pytest.raises(ConfigError, match=r"dkim\.key_file .*: not a PEM RSA private key \(an Ed25519 key\)"):
        signer(DkimSettings(selector=SELECTOR, domain=DOMAIN, key_file=ed_key_file))


def test_half_an_ed25519_pair_built_in_code_is_refused_by_the_signer(both: DkimSettings) -> None:
    # The settings refuse it as the file loads (tests/test_config.py); model_copy skips that check.
    for half in ({"ed25519_selector": ""}, {"ed25519_key_file": None}):
        with pytest.raises(ConfigError, match="ed25519_selector and ed25519_key_file are set together"):
            signer(both.model_copy(update=half))
