"""The sender's fast paths (issue 22) write exactly what the slower general code they stand in for writes: a
recipient's name as email.header writes it, a signed link as itsdangerous signs it, an SMTP address as smtplib
quotes it, a message dot-stuffed as smtplib stuffs it; and a relay that offers PIPELINING gets the envelope in one
write, with every refusal still told by its stage."""

from __future__ import annotations

import base64
import random
import re
import smtplib
import string
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from email.header import Header
from typing import Any

import pytest

from syndication.core import tokens
from syndication.delivery.smtp import SmtpClient, _quoted, data_payload
from syndication.errors import PermanentDeliveryError, SendingSideError, TokenError
from syndication.mailing.message import _one_encoded_word, with_phrase
from tests.smtp_server import SmtpTestServer, smtp_server
from tests.test_smtp import ANA, BEN, SENDER, digest

# Letters, digits, the specials of addresses and headers, accented and CJK letters, an emoji, a no-break space and
# the separators str.splitlines knows beyond CR and LF.
ALPHABET = string.ascii_letters + string.digits + " -!*+/=?_.,;:'\"()<>@[]\\" + "éèüñçßå北九州市😀\u00a0\u0085\u2028"


def _names(count: int, seed: int) -> Iterator[str]:
    rng = random.Random(seed)
    for _ in range(count):
        name = "".join(rng.choice(ALPHABET) for _ in range(rng.randint(1, 60)))
        yield name


def test_a_name_that_fits_one_encoded_word_is_written_as_email_header_writes_it() -> None:
    fitted = 0
    for name in [*_names(20_000, seed=1), "Ana Pérez 123", "São Paulo", "北九州市の市役所", "Zoë " * 14]:
        expected = Header(name, "utf-8", maxlinelen=76, header_name="Reply-To").encode(linesep="\r\n")
        word = _one_encoded_word(name)
        if word is not None:
            fitted += 1
            assert word == expected, name
        assert with_phrase(name, "ana@example.org") == (
            f"{expected} <ana@example.org>"
            if not (name.isascii() and "=?" not in name and len(name) <= 60)
            else with_phrase(name, "ana@example.org")
        )
    assert fitted > 5_000  # most names take the fast path; the others are folded by email.header as before
    assert _one_encoded_word("Ana Pérez 123") == "=?utf-8?q?Ana_P=C3=A9rez_123?="
    assert _one_encoded_word("x\u2028") is None  # a line separator: left to email.header


@pytest.mark.parametrize(
    "now", [None, datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC), datetime(1970, 1, 1, 0, 0, 1, tzinfo=UTC)]
)
def test_a_token_is_the_one_itsdangerous_signs_and_reads_back(now: datetime | None) -> None:
    keys = ["the-current-signing-key-0123456789", "an-older-key-0123456789"]
    for purpose in tokens.PURPOSES:
        for subject in ["1", "42/17", "é北" * 20]:
            token = tokens.make_token(keys, purpose, subject, now=now)
            payload = base64.urlsafe_b64encode(subject.encode("utf-8")).rstrip(b"=")
            signed_at = now or datetime.fromtimestamp(_token_second(token), tz=UTC)  # the clock's second
            assert token == tokens._signer(keys, purpose, signed_at).sign(payload).decode("ascii")
            assert tokens.read_token(keys, purpose, token, now=now) == subject
            assert tokens.read_token([keys[1], keys[0]], purpose, token, now=now) == subject  # rotated: still read
    with pytest.raises(TokenError):
        tokens.read_token(keys, "preferences", tokens.make_token(keys, "unsubscribe", "1", now=now), now=now)


def _token_second(token: str) -> int:
    """The signing second a token carries (its middle part: the second's big-endian bytes, base64url)."""
    stamp = token.split(".")[1]
    return int.from_bytes(base64.urlsafe_b64decode(stamp + "=" * (-len(stamp) % 4)), "big")


def test_an_address_is_quoted_as_smtplib_quotes_it() -> None:
    rng = random.Random(3)
    atext = "abcXYZ019!#$%&'*+/=?^_`{|}~-"
    for number in range(50_000):
        if number % 2:
            atoms = ["".join(rng.choice(atext) for _ in range(rng.randint(1, 5))) for _ in range(rng.randint(2, 5))]
            split = rng.randint(1, len(atoms) - 1)
            address = ".".join(atoms[:split]) + "@" + ".".join(atoms[split:])
        else:
            address = "".join(rng.choice(atext + '.@ ()<>,;:"[]\\é') for _ in range(rng.randint(1, 15)))
        assert _quoted(address) == smtplib.quoteaddr(address), address


def test_a_message_is_dot_stuffed_as_smtplib_stuffs_it() -> None:
    rng = random.Random(5)
    for _ in range(20_000):
        message = "".join(rng.choice(["a", ".", "\r\n", "\n", "..", " ", "\r"]) for _ in range(rng.randint(0, 30)))
        stuffed = re.sub(rb"(?m)^\.", b"..", message.encode())
        if stuffed[-2:] != b"\r\n":
            stuffed += b"\r\n"
        assert data_payload(message.encode()) == stuffed + b".\r\n", message


@contextmanager
def pipelining_server(**behaviour: Any) -> Iterator[SmtpTestServer]:
    """The test server, offering PIPELINING in its EHLO reply (aiosmtpd reads commands sent together in turn)."""
    with smtp_server(**behaviour) as server:
        handler = server._controller.handler
        plain = handler.handle_EHLO

        # aiosmtpd passes the reply lines to a hook that names them ``responses``, and sends what it returns.
        async def handle_ehlo(smtp: Any, session: Any, envelope: Any, hostname: str, responses: list[str]) -> list[str]:
            lines: list[str] = await plain(smtp, session, envelope, hostname, responses)
            return [*lines[:-1], "250-PIPELINING", lines[-1]]

        handler.handle_EHLO = handle_ehlo
        yield server


def test_a_pipelined_envelope_sends_and_keeps_its_connection_after_a_refused_recipient() -> None:
    with pipelining_server(reject=[BEN], reject_at="rcpt") as server, SmtpClient(server.settings()) as client:
        client.send(SENDER, ANA, digest(ANA))
        with pytest.raises(PermanentDeliveryError) as refused:
            client.send(SENDER, BEN, digest(BEN))
        assert refused.value.code == 550 and refused.value.stage == "RCPT TO"
        client.send(SENDER, ANA, digest(ANA))  # after RSET, on the same connection
        assert client.connections_opened == 1
    assert [message.recipients for message in server.messages] == [(ANA,), (ANA,)]
    assert server.messages[0].data.replace(b"\r\n", b"\n") == digest(ANA).replace(b"\r\n", b"\n")


def test_a_pipelined_refusal_of_the_sender_is_the_sending_side() -> None:
    with pipelining_server(reject_senders=[SENDER]) as server, SmtpClient(server.settings()) as client:
        with pytest.raises(SendingSideError) as refused:
            client.send(SENDER, ANA, digest(ANA))
        assert refused.value.stage == "MAIL FROM"
    assert server.messages == []
