"""One exit for outbound mail: every kind of message leaves through the service's Mailer, DKIM-signed when
``[dkim]`` is configured, through the transport ``[delivery] transport`` names."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import timedelta
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import get_args

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from syndication.app.editions import deliver, notify_editors, plan_edition, send_test
from syndication.app.gathering import import_file
from syndication.app.service import Service, init_store
from syndication.app.subscribers import add_subscriber, import_subscribers, send_preferences_notice
from syndication.clock import fixed_clock
from syndication.config import TRANSPORT_NAMES, DeliverySettings, Settings, TransportName, load_settings
from syndication.core.models import DeliveryStatus
from syndication.delivery.mailer import Mailer
from syndication.delivery.transport import TRANSPORTS
from syndication.errors import ConfigError
from syndication.mailing.message import build_message
from syndication.store import database, ledger
from tests.smtp_server import Received, SmtpTestServer, smtp_server
from tests.support import NOW, post_record, write_config, write_jsonl
from tests.test_dkim import DOMAIN, SELECTOR, published, signature_tags

SECRET = "mail-exit-signing-key-" + "m" * 16
BOUNCES = "bounces@news.example.org"
EDITOR = "editor@example.org"
SINCE, UNTIL = NOW - timedelta(days=7), NOW


@pytest.fixture(scope="module")
def key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
def smtp() -> Iterator[SmtpTestServer]:
    with smtp_server() as server:
        yield server


def signing_settings(tmp_path: Path, database_url: str, smtp: SmtpTestServer, key_file: Path) -> Settings:
    """Settings that send to ``smtp``, sign with ``key_file`` and ask ``EDITOR`` to approve drafts."""
    config = write_config(
        tmp_path,
        database_url,
        f'[smtp]\nhost = "127.0.0.1"\nport = {smtp.port}\ntimeout_seconds = 5\n'
        f'[mail]\nfrom_address = "digest@news.example.org"\n[bounces]\naddress = "{BOUNCES}"\n'
        f'[digest]\napproval_emails = ["{EDITOR}"]\n'
        f'[dkim]\nselector = "{SELECTOR}"\ndomain = "{DOMAIN}"\nkey_file = "{key_file}"\n',
    )
    return load_settings(config, environ={"SYNDICATION_SECRET_KEY": SECRET})


@pytest.fixture
def signing(tmp_path: Path, database_url: str, smtp: SmtpTestServer, key: rsa.RSAPrivateKey) -> Iterator[Service]:
    """A store with two posts in the week before NOW and one active weekly reader, sending signed mail."""
    key_file = tmp_path / "dkim.pem"
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    settings = signing_settings(tmp_path, database_url, smtp, key_file)
    init_store(settings)
    with Service.open(settings, fixed_clock(NOW)) as service:
        records = [
            post_record(1, themes=["climate-action"], published="2024-05-28T10:00:00Z", title="Karachi heat plan"),
            post_record(2, themes=["resilience"], published="2024-05-29T10:00:00Z", title="Sponge cities"),
        ]
        import_file(service, write_jsonl(tmp_path / "posts.jsonl", records))
        add_subscriber(service, "reader@example.org", name="Reader", cadence="weekly", confirmed=True)
        yield service


def only_message_for(smtp: SmtpTestServer, address: str) -> Received:
    [received] = smtp.received_for(address)
    return received


def assert_signed(received: Received, key: rsa.RSAPrivateKey, kind: str) -> None:
    """The message verifies with dkimpy against the published key, signed by our domain and selector."""
    assert received.data.startswith(b"DKIM-Signature:"), kind
    assert dkim.verify(received.data, dnsfunc=published(key)), kind
    tags = signature_tags(received.data)
    assert (tags["d"], tags["s"]) == (DOMAIN, SELECTOR), kind
    # A digest leaves from its delivery's VERP address; every other message from the bounce address itself.
    if kind == "digest":
        assert received.mail_from.startswith("bounces+") and received.mail_from.endswith("@news.example.org"), kind
    else:
        assert received.mail_from == BOUNCES, kind


def test_every_kind_of_message_leaves_signed(
    signing: Service, smtp: SmtpTestServer, key: rsa.RSAPrivateKey, tmp_path: Path
) -> None:
    service = signing
    # A digest, drained from the queue.
    plan = plan_edition(service, "weekly", SINCE, UNTIL)
    assert plan.edition is not None and plan.queued == 1
    assert deliver(service).sent == 1
    digest = only_message_for(smtp, "reader@example.org")
    assert digest.parsed()["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"

    # An editor's test send of that edition.
    assert send_test(service, plan.edition.id, "test@example.org", None, "en", actor="cli:tester") is not None
    test_send = only_message_for(smtp, "test@example.org")
    assert test_send.parsed()["X-Syndication-Test"] == f"edition {plan.edition.id}"

    # A confirmation (someone added without confirmed consent), and two from an import over one connection.
    outcome = add_subscriber(service, "pending@example.org", name="Pending", cadence="weekly")
    assert outcome.confirmation_sent, outcome.confirmation_error
    confirmation = only_message_for(smtp, "pending@example.org")
    csv = tmp_path / "people.csv"
    csv.write_text("email,name\nann@example.org,Ann\nbob@example.org,Bob\n", "utf-8")
    assert import_subscribers(service, csv).confirmations_sent == 2
    imported = [only_message_for(smtp, address) for address in ("ann@example.org", "bob@example.org")]
    assert imported[0].connection == imported[1].connection

    # A preferences notice.
    send_preferences_notice(service, outcome.subscriber, "the weekly digest, on every theme")
    first, notice = smtp.received_for("pending@example.org")
    assert first == confirmation

    # An approval request for a draft edition (one with something to send: an empty window makes no draft).
    add_subscriber(service, "daily@example.org", cadence="daily", confirmed=True)
    draft = plan_edition(service, "daily", SINCE, UNTIL, draft=True)
    assert draft.queued == 1
    assert notify_editors(service, draft) == []
    approval = only_message_for(smtp, EDITOR)

    kinds = {
        "digest": digest,
        "test send": test_send,
        "confirmation": confirmation,
        "import confirmation": imported[0],
        "import confirmation 2": imported[1],
        "preferences notice": notice,
        "approval request": approval,
    }
    assert len(smtp.messages) == len(kinds)
    for kind, received in kinds.items():
        assert_signed(received, key, kind)
    for kind in ("confirmation", "preferences notice", "approval request"):
        assert kinds[kind].parsed()["Auto-Submitted"] == "auto-generated", kind
    message_ids = [received.parsed()["Message-ID"] for received in kinds.values()]
    assert len(set(message_ids)) == len(message_ids)
    assert all(re.fullmatch(r"<[^<>@\s]+@news\.example\.org>", mid) for mid in message_ids), message_ids


def test_a_key_that_cannot_be_read_stops_a_drain_before_it_claims_anything(
    signing: Service, smtp: SmtpTestServer, tmp_path: Path
) -> None:
    plan = plan_edition(signing, "weekly", SINCE, UNTIL)
    assert plan.edition is not None
    (tmp_path / "dkim.pem").unlink()
    fresh = Service(signing.settings, signing.engine, signing.clock)  # its Mailer has not read the key yet
    with pytest.raises(ConfigError, match="cannot be read"):
        deliver(fresh)
    with database.transaction(signing.engine) as session:
        assert ledger.progress(session, plan.edition.id) == {DeliveryStatus.QUEUED: 1}
    assert smtp.messages == []


class Recording:
    """A transport that keeps what it is given (for the Mailer's own test)."""

    def __init__(self, sent: list[tuple[str, str, bytes]]) -> None:
        self.sent = sent
        self.closed = False

    def send(self, mail_from: str, recipient: str, message: bytes) -> None:
        self.sent.append((mail_from, recipient, message))

    def close(self) -> None:
        self.closed = True


def test_the_mailer_seals_and_hands_over_through_the_transport_it_is_given(
    signing: Service, key: rsa.RSAPrivateKey
) -> None:
    sent: list[tuple[str, str, bytes]] = []
    opened: list[Recording] = []

    def factory(settings: Settings) -> Recording:
        opened.append(Recording(sent))
        return opened[-1]

    mailer = Mailer(signing.settings, signing.clock, transport=factory)
    envelope = mailer.envelope("ana@example.org", "Ana", "Hello", key="hello.1")
    assert (envelope.date, envelope.message_id) == (NOW, "<hello.1@news.example.org>")
    assert (envelope.from_address, envelope.from_name) == ("digest@news.example.org", "Test Network")
    mailer.send("ana@example.org", build_message(envelope, "Hello Ana", "<p>Hello Ana</p>"))
    connection = mailer.connect()
    mailer.send("bo@example.org", build_message(envelope, "Hello Bo", "<p>Hello Bo</p>"), connection=connection)
    assert [(mail_from, recipient) for mail_from, recipient, _ in sent] == [
        (BOUNCES, "ana@example.org"),
        (BOUNCES, "bo@example.org"),
    ]
    assert all(dkim.verify(message, dnsfunc=published(key)) for _, _, message in sent)
    assert len(opened) == 2 and opened[0].closed and not opened[1].closed  # a one-off is closed, a connection kept


def test_the_transport_registry_and_the_configuration_name_the_same_transports() -> None:
    assert set(TRANSPORTS) == set(TRANSPORT_NAMES) == set(get_args(TransportName))
    assert DeliverySettings().transport == "smtp"


def test_an_unknown_transport_is_refused_naming_the_key(tmp_path: Path) -> None:
    config = write_config(tmp_path, f"sqlite:///{tmp_path / 'store.db'}", '[delivery]\ntransport = "pigeon"\n')
    with pytest.raises(ConfigError) as refused:
        load_settings(config, environ={})
    assert "delivery.transport: unknown transport 'pigeon' (known: smtp)" in str(refused.value)


def test_a_late_digest_is_dated_at_hand_over_and_signed_over_its_folded_headers(
    signing: Service, smtp: SmtpTestServer, key: rsa.RSAPrivateKey
) -> None:
    plan = plan_edition(signing, "weekly", SINCE, UNTIL)
    assert plan.edition is not None
    late = NOW + timedelta(days=7, minutes=30)  # the window ended a week before the send
    mail = signing.settings.mail.model_copy(update={"feedback_id": "news.example.org"})
    sender = Service(signing.settings.model_copy(update={"mail": mail}), signing.engine, fixed_clock(late))
    assert deliver(sender).sent == 1
    received = only_message_for(smtp, "reader@example.org")
    assert_signed(received, key, "digest")  # relaxed canonicalisation unfolds List-Unsubscribe: it verifies
    tags = signature_tags(received.data)
    signed = {name.strip().lower() for name in tags["h"].split(":")}
    assert {"date", "list-unsubscribe", "feedback-id"} <= signed
    parsed = received.parsed()
    assert abs(parsedate_to_datetime(parsed["Date"]) - late) < timedelta(minutes=1)
    assert parsed["Feedback-ID"] == f"{plan.edition.id}:weekly:digest:news.example.org"
    assert b"List-Unsubscribe: " in received.data and b",\r\n <mailto:" not in received.data  # no mailto here


def test_the_mailer_dates_a_message_when_it_hands_it_over(signing: Service) -> None:
    sent: list[tuple[str, str, bytes]] = []
    moments = iter([NOW + timedelta(days=3), NOW + timedelta(days=3, seconds=90)])
    mailer = Mailer(signing.settings, lambda: next(moments), transport=lambda settings: Recording(sent))
    envelope = mailer.envelope("ana@example.org", "Ana", "Hello", key="hello.2", date=NOW - timedelta(days=7))
    message = build_message(envelope, "Hello", "<p>Hello</p>")
    mailer.send("ana@example.org", message)  # the first try
    mailer.send("ana@example.org", message)  # and its retry: the same bytes built once, dated anew
    dates = [re.findall(rb"\r\nDate: ([^\r]+)\r\n", data) for _, _, data in sent]
    assert dates == [[b"Tue, 04 Jun 2024 12:00:00 +0000"], [b"Tue, 04 Jun 2024 12:01:30 +0000"]]
    ids = {re.search(rb"\r\nMessage-ID: ([^\r]+)\r\n", data).group(1) for _, _, data in sent}  # type: ignore[union-attr]
    assert ids == {b"<hello.2@news.example.org>"}
