"""Sending checks: the warnings and refusals of the From, DKIM and bounce settings, and ``syndication check-mail``."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from syndication.app.mailcheck import (
    Problem,
    aligned,
    dns_records,
    is_reserved_domain,
    sender_problems,
    sender_warnings,
)
from syndication.cli import main
from syndication.config import Settings, load_settings
from syndication.errors import ConfigError
from tests.support import write_config


@pytest.fixture(scope="module")
def key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _config(
    tmp_path: Path, key: rsa.RSAPrivateKey, *, from_address: str, dkim_domain: str, ed25519_key_file: Path | None = None
) -> Path:
    key_file = tmp_path / "dkim.pem"
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    ed25519 = "" if ed25519_key_file is None else (
        f'ed25519_selector = "news2024e"\ned25519_key_file = "{ed25519_key_file}"\n')  # fmt: skip
    extra = (f'[mail]\nfrom_address = "{from_address}"\n'
             f'[dkim]\nselector = "news2024"\ndomain = "{dkim_domain}"\nkey_file = "{key_file.name}"\n{ed25519}'
             '[bounces]\naddress = "bounces@mail.greencities.org"\n')  # fmt: skip
    return write_config(tmp_path, f"sqlite:///{tmp_path / 'store.db'}", extra)


def test_reserved_domains_and_alignment() -> None:
    for domain in (
        "localhost",
        "mail.localhost",
        "box.local",
        "x.invalid",
        "a.test",
        "example.org",
        "news.example.com",
    ):
        assert is_reserved_domain(domain), domain
    for domain in ("greencities.org", "example.de", "myexample.com", "localhost.org"):
        assert not is_reserved_domain(domain), domain
    assert aligned("greencities.org", "news.greencities.org") and aligned("mail.greencities.org", "greencities.org")
    assert not aligned("greencities.org", "greencities.net") and not aligned("esp.com", "greencities.org")


def test_check_mail_prints_the_records_and_exits_0_without_warnings(
    tmp_path: Path, key: rsa.RSAPrivateKey, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _config(tmp_path, key, from_address="news@greencities.org", dkim_domain="greencities.org")
    assert main(["--config", str(path), "check-mail"]) == 0
    out = capsys.readouterr().out
    assert "From domain: greencities.org" in out
    assert "SPF: TXT record at mail.greencities.org" in out and "v=spf1 ip4:<RELAY-IPv4> -all" in out
    assert "DKIM: TXT record at news2024._domainkey.greencities.org" in out
    assert "DMARC: TXT record at _dmarc.greencities.org" in out
    assert "v=DMARC1; p=none; rua=mailto:dmarc-reports@greencities.org" in out
    assert "No warnings." in out
    # The DKIM record's p= is the public half of the configured key.
    match = re.search(r"^  v=DKIM1; k=rsa; p=([A-Za-z0-9+/=]+)$", out, flags=re.MULTILINE)
    assert match is not None
    published = serialization.load_der_public_key(base64.b64decode(match.group(1)))
    assert isinstance(published, rsa.RSAPublicKey)
    assert published.public_numbers() == key.public_key().public_numbers()


def test_check_mail_warns_of_a_localhost_from_and_a_misaligned_dkim_domain(
    tmp_path: Path, key: rsa.RSAPrivateKey, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _config(tmp_path, key, from_address="newsletter@localhost", dkim_domain="esp-mail.com")
    assert main(["--config", str(path), "check-mail"]) == 1
    out = " ".join(capsys.readouterr().out.split())
    assert "Warnings (2):" in out
    assert "[mail] from_address 'newsletter@localhost' is on 'localhost', a domain that cannot receive mail" in out
    assert "[dkim] domain 'esp-mail.com' is not aligned with the From domain 'localhost'" in out
    settings = load_settings(path, environ={})
    assert [problem.level for problem in sender_problems(settings)] == ["warn", "warn"]
    assert len(sender_warnings(settings)) == 2


def test_a_subdomain_signature_is_aligned_and_no_dkim_is_a_warning_of_check_mail_only(
    tmp_path: Path, key: rsa.RSAPrivateKey
) -> None:
    path = _config(tmp_path, key, from_address="news@greencities.org", dkim_domain="mail.greencities.org")
    settings = load_settings(path, environ={})
    assert sender_problems(settings) == []
    unsigned = settings.model_copy(update={"dkim": type(settings.dkim)()})
    assert sender_warnings(unsigned) == []
    report = dns_records(unsigned)
    assert report.dkim is None and any("[dkim] domain is not set" in warning for warning in report.warnings)


def test_the_default_from_is_warned_of() -> None:
    assert [problem.level for problem in sender_problems(Settings())] == ["warn"]


@pytest.mark.parametrize(
    ("bounces", "configured"),
    [
        ('[bounces]\nlisten = "127.0.0.1:8026"\n', "[bounces] listen"),
        ('[bounces.mailbox]\nhost = "imap.example.org"\nuser = "bounces"\n', "[bounces.mailbox]"),
    ],
)
def test_config_refuses_bounce_intake_without_a_bounce_address(tmp_path: Path, bounces: str, configured: str) -> None:
    path = write_config(tmp_path, "sqlite://", bounces)
    with pytest.raises(ConfigError) as caught:
        load_settings(path, environ={})
    assert f"{configured} is set but [bounces] address is not" in str(caught.value)
    settings = load_settings(write_config(tmp_path, "sqlite://", '[bounces]\naddress = "b@news.example.org"\n'), {})
    intake = settings.bounces.model_copy(update={"listen": "127.0.0.1:8026", "address": None})
    problems = sender_problems(settings.model_copy(update={"bounces": intake}))
    assert problems[0] == Problem(
        "refuse", "[bounces] listen is set but [bounces] address is not: no bounce comes back"
    )


@pytest.fixture(scope="module")
def ed_key() -> ed25519.Ed25519PrivateKey:
    return ed25519.Ed25519PrivateKey.generate()


def _ed25519_file(tmp_path: Path, ed_key: ed25519.Ed25519PrivateKey) -> Path:
    path = tmp_path / "dkim-ed25519.pem"
    pkcs8 = serialization.PrivateFormat.PKCS8
    path.write_bytes(ed_key.private_bytes(serialization.Encoding.PEM, pkcs8, serialization.NoEncryption()))
    return path


def test_an_ed25519_key_adds_its_own_dkim_record_with_the_raw_public_key(
    tmp_path: Path, key: rsa.RSAPrivateKey, ed_key: ed25519.Ed25519PrivateKey
) -> None:
    ed_file = _ed25519_file(tmp_path, ed_key)
    path = _config(
        tmp_path, key, from_address="news@greencities.org", dkim_domain="greencities.org", ed25519_key_file=ed_file
    )
    report = dns_records(load_settings(path, environ={}))
    assert report.warnings == ()
    assert report.dkim is not None and report.dkim.name == "news2024._domainkey.greencities.org"
    assert report.dkim_ed25519 is not None and report.dkim_ed25519.name == "news2024e._domainkey.greencities.org"
    assert report.dkim_ed25519.value is not None
    match = re.fullmatch(r"v=DKIM1; k=ed25519; p=([A-Za-z0-9+/=]+)", report.dkim_ed25519.value)
    assert match is not None
    # RFC 8463 §4: p= is the 32-byte public key itself, not a DER SubjectPublicKeyInfo as for RSA.
    raw = ed_key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    assert base64.b64decode(match.group(1)) == raw


def test_check_mail_prints_the_ed25519_record_and_reads_its_key_beside_the_config(
    tmp_path: Path, key: rsa.RSAPrivateKey, ed_key: ed25519.Ed25519PrivateKey, capsys: pytest.CaptureFixture[str]
) -> None:
    _ed25519_file(tmp_path, ed_key)
    path = _config(tmp_path, key, from_address="news@greencities.org", dkim_domain="greencities.org",
                   ed25519_key_file=Path("dkim-ed25519.pem"))  # relative: taken from the config's folder  # fmt: skip
    assert main(["--config", str(path), "check-mail"]) == 0
    out = capsys.readouterr().out
    assert "DKIM (Ed25519): TXT record at news2024e._domainkey.greencities.org" in out
    raw = ed_key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    assert f"  v=DKIM1; k=ed25519; p={base64.b64encode(raw).decode()}" in out


def test_the_published_records_verify_what_the_signer_signs(
    tmp_path: Path, key: rsa.RSAPrivateKey, ed_key: ed25519.Ed25519PrivateKey
) -> None:
    import dkim

    from syndication.mailing.dkim import sign

    ed_file = _ed25519_file(tmp_path, ed_key)
    path = _config(
        tmp_path, key, from_address="news@greencities.org", dkim_domain="greencities.org", ed25519_key_file=ed_file
    )
    settings = load_settings(path, environ={})
    report = dns_records(settings)
    assert report.dkim is not None and report.dkim_ed25519 is not None
    zone = {f"{record.name}.".encode(): str(record.value).encode() for record in (report.dkim, report.dkim_ed25519)}
    message = b"From: news@greencities.org\r\nTo: ana@example.org\r\nSubject: Hello\r\n\r\nThe news.\r\n"
    signed = sign(message, settings.dkim)
    for index in (0, 1):  # the RSA signature, then the Ed25519 one
        assert dkim.DKIM(signed).verify(idx=index, dnsfunc=lambda name, timeout=5: zone.get(name))


def test_an_ed25519_key_that_cannot_be_read_is_a_warning_naming_the_file(
    tmp_path: Path, key: rsa.RSAPrivateKey
) -> None:
    missing = tmp_path / "absent-ed25519.pem"
    path = _config(
        tmp_path, key, from_address="news@greencities.org", dkim_domain="greencities.org", ed25519_key_file=missing
    )
    report = dns_records(load_settings(path, environ={}))
    assert report.dkim_ed25519 is not None and report.dkim_ed25519.value is None
    assert [warning for warning in report.warnings if "ed25519" in warning] == [
        f"dkim.ed25519_key_file {missing}: cannot be read: No such file or directory"
    ]


def test_without_an_ed25519_key_there_is_one_dkim_record(tmp_path: Path, key: rsa.RSAPrivateKey) -> None:
    path = _config(tmp_path, key, from_address="news@greencities.org", dkim_domain="greencities.org")
    report = dns_records(load_settings(path, environ={}))
    assert report.dkim is not None and report.dkim_ed25519 is None
