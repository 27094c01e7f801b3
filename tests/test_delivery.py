"""Editions and delivery through a real SMTP server: one message per subscriber, nothing lost, nothing twice."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import datetime, timedelta
from email.header import decode_header, make_header
from email.message import EmailMessage
from email.utils import parseaddr, parsedate_to_datetime
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr
from sqlalchemy import select

from syndication.app.bounces import delivery_of_address
from syndication.app.editions import deliver, plan_edition
from syndication.app.gathering import import_file
from syndication.app.service import Service
from syndication.app.subscribers import add_subscriber
from syndication.cli import main
from syndication.clock import fixed_clock
from syndication.core.models import DeliveryStatus, EditionStatus
from syndication.delivery.sender import Sender
from syndication.errors import SenderBusy
from syndication.store import database, ledger
from syndication.store import subscribers as subscriber_store
from syndication.store.schema import DeliveryRow
from tests.smtp_server import SmtpTestServer, smtp_server
from tests.support import NOW, post_record, write_jsonl

SINCE, UNTIL = NOW - timedelta(days=7), NOW


def sending(service: Service, server: SmtpTestServer, clock: datetime = NOW, **delivery: Any) -> Service:
    """The service, pointed at ``server``, with a signing key, at ``clock``."""
    settings = service.settings.model_copy(
        update={
            "secret_key": SecretStr("test-signing-key-" + "x" * 16),
            "smtp": server.settings(timeout_seconds=2.0),
            "delivery": service.settings.delivery.model_copy(update={"retry_initial_seconds": 60, **delivery}),
            "mail": service.settings.mail.model_copy(update={"unsubscribe_mailto": "leave@news.example.org"}),
            "bounces": service.settings.bounces.model_copy(update={"address": "bounces@news.example.org"}),
        }
    )
    return Service(settings, service.engine, fixed_clock(clock))


@pytest.fixture
def audience(service: Service, tmp_path: Path) -> Service:
    """Posts in the week before NOW on two themes, and four active weekly subscribers (one follows nothing new)."""
    records = [
        post_record(1, themes=["climate-action"], published="2024-05-28T10:00:00Z", title="Karachi heat plan"),
        post_record(2, themes=["resilience"], published="2024-05-29T10:00:00Z", title="Sponge cities"),
    ]
    import_file(service, write_jsonl(tmp_path / "posts.jsonl", records))
    people = [
        ("ana@example.org", "Ana Pérez", None, "es"),
        ("bo@example.org", "Bo Li", ["resilience"], "en"),
        ("kita@example.jp", "北九州市", ["climate-action"], "en"),
        ("idle@example.org", "Idle", ["circular-economy"], "en"),  # nothing new for them
    ]
    for address, name, themes, language in people:
        add_subscriber(service, address, name=name, themes=themes or [], cadence="weekly", language=language,
                       confirmed=True)  # fmt: skip
    return service


def test_an_edition_reaches_each_subscriber_once_with_every_header(audience: Service) -> None:
    with smtp_server() as server:
        service = sending(audience, server)
        plan = plan_edition(service, "weekly", SINCE, UNTIL)
        assert (plan.recipients, plan.queued, plan.nothing_new) == (4, 3, 1)
        report = deliver(service, edition_id=plan.edition.id if plan.edition else None)
        assert (report.sent, report.failed) == (3, 0)
        assert sorted(m.recipients[0] for m in server.messages) == ["ana@example.org", "bo@example.org",
                                                                    "kita@example.jp"]  # fmt: skip
        # Each delivery's envelope sender is its own VERP address under [bounces] address, naming it.
        for received in server.messages:
            local, _, domain = received.mail_from.partition("@")
            assert domain == "news.example.org" and local.startswith("bounces+"), received.mail_from
            assert delivery_of_address(service, received.mail_from) is not None
        assert len({m.mail_from for m in server.messages}) == 3
        message = server.received_for("bo@example.org")[0].parsed()
        assert_headers(message)
        assert message["To"] == "Bo Li <bo@example.org>"
        assert message["Subject"] == "1 new post on Resilience"  # only the theme Bo follows
        spanish = server.received_for("ana@example.org")[0].parsed()
        assert "artículos nuevos" in spanish["Subject"]
        unsubscribe = message["List-Unsubscribe"]
        assert unsubscribe.startswith("<https://news.example.org/unsubscribe/")
        assert "<mailto:leave@news.example.org?subject=unsubscribe>" in unsubscribe
        html = message.get_body(("html",))
        assert html is not None
        token_url = unsubscribe.split(">", 1)[0][1:]
        assert token_url in html.get_content()  # the footer link is the recipient's own
        with database.transaction(service.engine) as session:
            assert ledger.edition(session, plan.edition.id).status == EditionStatus.SENT  # type: ignore[union-attr]


def assert_headers(message: EmailMessage) -> None:
    for name in ("From", "To", "Subject", "Date", "Message-ID", "MIME-Version", "List-Id", "List-Unsubscribe"):
        assert message[name], name
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert message.get_content_type() == "multipart/alternative"
    assert [part.get_content_type() for part in message.iter_parts()] == ["text/plain", "text/html"]


def test_the_same_window_again_creates_and_sends_nothing(audience: Service) -> None:
    with smtp_server() as server:
        service = sending(audience, server)
        first = plan_edition(service, "weekly", SINCE, UNTIL)
        deliver(service)
        again = plan_edition(service, "weekly", SINCE, UNTIL)
        assert not again.created and again.queued == 0
        assert again.edition is not None and first.edition is not None and again.edition.id == first.edition.id
        assert deliver(service).sent == 0
        assert server.accepted == 3


def test_a_dry_run_writes_and_sends_nothing(audience: Service) -> None:
    with smtp_server() as server:
        service = sending(audience, server)
        plan = plan_edition(service, "weekly", SINCE, UNTIL, dry_run=True)
        assert (plan.recipients, plan.nothing_new, len(plan.variants), plan.posts) == (4, 1, 3, 2)
        assert plan.edition is None
        assert server.accepted == 0
        with database.transaction(service.engine) as session:
            assert ledger.editions(session) == []


def test_temporary_failures_are_retried_with_growing_waits(audience: Service) -> None:
    everyone = ("ana@example.org", "bo@example.org", "kita@example.jp")
    with smtp_server(defer=dict.fromkeys(everyone, 2)) as server:  # 451 to the first two attempts of each
        service = sending(audience, server)
        plan = plan_edition(service, "weekly", SINCE, UNTIL)
        assert deliver(service).deferred == 3
        assert deliver(service).handled == 0  # not due yet
        assert deliver(sending(audience, server, NOW + timedelta(seconds=61))).deferred == 3
        assert deliver(sending(audience, server, NOW + timedelta(seconds=150))).handled == 0  # 120 s
        later = deliver(sending(audience, server, NOW + timedelta(seconds=182)))
        assert later.sent == 3
        with database.transaction(service.engine) as session:
            assert ledger.progress(session, plan.edition.id) == {DeliveryStatus.SENT: 3}  # type: ignore[union-attr]


def test_a_permanent_refusal_bounces_and_suppresses_the_subscriber(audience: Service) -> None:
    with smtp_server(reject=["bo@example.org"]) as server:
        service = sending(audience, server)
        plan_edition(service, "weekly", SINCE, UNTIL)
        report = deliver(service)
        assert (report.sent, report.bounced) == (2, 1)
        with database.transaction(service.engine) as session:
            bo = subscriber_store.subscriber_by_email(session, "bo@example.org")
            assert bo is not None and bo.status == "bounced"
        next_week = sending(audience, server, NOW + timedelta(days=7))
        plan = plan_edition(next_week, "weekly", UNTIL - timedelta(days=14), UNTIL + timedelta(days=1))
        assert plan.recipients == 3  # Bo is no longer active


def test_a_connection_dropped_after_the_data_is_retried_with_the_same_message_id(audience: Service) -> None:
    with smtp_server(drop=["kita@example.jp"]) as server:
        service = sending(audience, server)
        plan_edition(service, "weekly", SINCE, UNTIL)
        assert deliver(service).deferred == 1
        dropped_id = server.dropped[0].parsed()["Message-ID"]
    with smtp_server() as server:
        assert deliver(sending(audience, server, NOW + timedelta(minutes=2))).sent == 1
        assert server.messages[0].parsed()["Message-ID"] == dropped_id


def test_a_delivery_deferred_past_the_deadline_fails(audience: Service) -> None:
    with smtp_server(defer=100) as server:
        service = sending(audience, server, retry_deadline_hours=0.01)  # 36 seconds
        plan_edition(service, "weekly", SINCE, UNTIL)
        report = deliver(service)
        assert report.failed == 3 and report.deferred == 0


def test_leases_of_a_dead_sender_return_and_a_repeat_offender_is_set_aside(audience: Service) -> None:
    # Issue #16: a crash counts only against the message in flight when the sender died (before, every row it
    # merely held counted, and was poisoned with no attempt at all).
    with smtp_server() as server:
        service = sending(audience, server, lease_seconds=60, max_crashes=3)
        plan_edition(service, "weekly", SINCE, UNTIL)
        moment = NOW
        for crash in range(3):  # a sender claims two, starts sending the first and dies, three times over
            with database.transaction(service.engine) as session:
                claims, poisoned = ledger.claim(session, f"dead-{crash}", moment, lease=timedelta(seconds=60),
                                                limit=2, max_crashes=3)  # fmt: skip
                assert len(claims) == 2 or poisoned
                ledger.begin_attempt(session, claims[0], f"dead-{crash}", moment, lease=timedelta(seconds=60))
            moment += timedelta(seconds=61)
        report = deliver(sending(audience, server, moment + timedelta(seconds=61), max_crashes=3))
        assert report.poisoned == 1 and report.sent == 2
        assert server.accepted == 2
        with database.transaction(service.engine) as session:
            (problem,) = ledger.problems(session, 1)
        assert problem.status == DeliveryStatus.POISONED and "while sending it" in problem.detail


def test_a_fenced_claim_cannot_be_sent_or_recorded_by_the_sender_that_lost_it(audience: Service) -> None:
    with smtp_server() as server:
        service = sending(audience, server)
        plan_edition(service, "weekly", SINCE, UNTIL)
        lease = timedelta(seconds=60)
        with database.transaction(service.engine) as session:
            (old,), _ = ledger.claim(session, "slow", NOW, lease=lease, limit=1, max_crashes=3)
        later = NOW + timedelta(seconds=61)  # the slow sender's lease ran out without a renewal
        with database.transaction(service.engine) as session:
            (new,), _ = ledger.claim(session, "fast", later, lease=lease, limit=1, max_crashes=3)
            assert new.delivery_id == old.delivery_id and new.token == old.token + 1
            assert not ledger.begin_attempt(session, old, "slow", later, lease=lease)  # the late one may not send
            assert ledger.renew(session, [old], "slow", later, lease=lease) == {old.delivery_id}
            assert ledger.begin_attempt(session, new, "fast", later, lease=lease)
            assert ledger.record(session, new, "fast", later, DeliveryStatus.SENT)
            assert not ledger.record(session, old, "slow", later, DeliveryStatus.DEFERRED)  # never overwrites
            assert ledger.progress(session, 1) == {DeliveryStatus.QUEUED: 2, DeliveryStatus.SENT: 1}
        with database.transaction(service.engine) as session:  # the same owner's earlier claim is fenced too
            (first,), _ = ledger.claim(session, "same", later, lease=lease, limit=1, max_crashes=3)
        with database.transaction(service.engine) as session:
            ledger.release(session, [first], "same")
            (second,), _ = ledger.claim(session, "same", later, lease=lease, limit=1, max_crashes=3)
            assert not ledger.record(session, first, "same", later, DeliveryStatus.SENT)
            assert ledger.release(session, [second], "same") == 1


def test_paused_editions_wait_and_cancelled_ones_never_go(audience: Service) -> None:
    with smtp_server() as server:
        service = sending(audience, server)
        plan = plan_edition(service, "weekly", SINCE, UNTIL)
        assert plan.edition is not None
        with database.transaction(service.engine) as session:
            ledger.set_edition_status(session, plan.edition.id, EditionStatus.PAUSED, NOW)
        assert deliver(service).handled == 0
        with database.transaction(service.engine) as session:
            ledger.set_edition_status(session, plan.edition.id, EditionStatus.SENDING, NOW)
        assert deliver(service).sent == 3


def test_someone_who_left_before_the_send_gets_nothing(audience: Service) -> None:
    with smtp_server() as server:
        service = sending(audience, server)
        plan_edition(service, "weekly", SINCE, UNTIL)
        with database.transaction(service.engine) as session:
            bo = subscriber_store.subscriber_by_email(session, "bo@example.org")
            assert bo is not None
            subscriber_store.set_status(session, bo.id, "unsubscribed", NOW)
        report = deliver(service)
        assert report.sent == 2 and report.failed == 1
        assert not server.received_for("bo@example.org")


def test_sqlite_runs_one_sender_at_a_time(audience: Service) -> None:
    if audience.engine.dialect.name != "sqlite":
        pytest.skip("PostgreSQL senders share the queue")
    with smtp_server() as server:
        service = sending(audience, server)
        first = Sender(service.settings, service.engine, service.clock, service.mailer)
        second = Sender(service.settings, service.engine, service.clock, service.mailer)
        with first._single_sender_on_sqlite(), pytest.raises(SenderBusy, match="one sender at a time"):
            deliver(service, sender=second)


@pytest.fixture
def cli_config(audience: Service, tmp_path: Path) -> Iterator[tuple[Path, SmtpTestServer]]:
    with smtp_server() as server:
        assert audience.settings.config_path is not None
        text = audience.settings.config_path.read_text("utf-8")
        text += f'\n[smtp]\nhost = "127.0.0.1"\nport = {server.port}\n'
        config = tmp_path / "sending.toml"
        config.write_text(text, "utf-8")
        yield config, server


def test_command_line_send_dry_run_list_and_pause(
    cli_config: tuple[Path, SmtpTestServer], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    config, server = cli_config
    monkeypatch.setenv("SYNDICATION_SECRET_KEY", "cli-signing-key-" + "y" * 16)
    window = ["--since", SINCE.isoformat(), "--until", UNTIL.isoformat()]
    assert main(["--config", str(config), "digest", "send", "--cadence", "weekly", *window, "--dry-run"]) == 0
    assert "3 would get a digest, 1 have nothing new" in capsys.readouterr().out
    assert main(["--config", str(config), "digest", "send", "--cadence", "weekly", *window]) == 0
    out = capsys.readouterr().out
    assert "3 deliveries queued" in out and "3 sent" in out
    assert server.accepted == 3
    assert main(["--config", str(config), "digest", "send", "--cadence", "weekly", *window]) == 0
    assert "already existed: 0 deliveries queued" in capsys.readouterr().out
    assert main(["--config", str(config), "editions", "list"]) == 0
    assert "3 sent" in capsys.readouterr().out
    assert main(["--config", str(config), "editions", "pause", "1"]) == 1
    assert "it cannot be paused" in capsys.readouterr().err
    assert server.accepted == 3


def test_one_click_unsubscribe_through_the_web_app(audience: Service) -> None:
    import httpx

    from syndication.web.app import create_app
    from tests.live_server import live_server

    with smtp_server() as server:
        service = sending(audience, server)
        plan_edition(service, "weekly", SINCE, UNTIL)
        deliver(service)
        message = server.received_for("bo@example.org")[0].parsed()
    url = message["List-Unsubscribe"].split(">", 1)[0][1:]
    path = url.removeprefix("https://news.example.org")
    with live_server(create_app(service.settings)) as web, httpx.Client(base_url=web.url(), timeout=10) as client:
        page = client.get(path)  # what a link scanner does: nothing changes
        assert page.status_code == 200 and 'name="List-Unsubscribe" value="One-Click"' in page.text
        assert status_of(service, "bo@example.org") == "active"
        # The site's own page: its policy forbids framing and inline script, and the token stays in this address.
        assert "frame-ancestors 'none'" in page.headers["content-security-policy"] and not page.cookies
        assert page.headers["referrer-policy"] == "no-referrer" and page.headers["cache-control"] == "no-store"
        flood = client.post(path, content=b"List-Unsubscribe=One-Click&" + b"x" * 200_000,
                            headers={"Content-Type": "application/x-www-form-urlencoded"})  # fmt: skip
        assert flood.status_code == 413 and status_of(service, "bo@example.org") == "active"
        forged = client.post(path[:-3] + "abc", data={"List-Unsubscribe": "One-Click"})
        assert forged.status_code == 400 and status_of(service, "bo@example.org") == "active"
        assert forged.headers["referrer-policy"] == "no-referrer" and "Traceback" not in forged.text
        done = client.post(path, files={"List-Unsubscribe": (None, "One-Click")})  # multipart, as some send it
        assert done.status_code == 200 and "You are unsubscribed" in done.text
        assert not done.cookies and "location" not in done.headers
        assert status_of(service, "bo@example.org") == "unsubscribed"
        again = client.post(path, content=b"List-Unsubscribe=One-Click",
                            headers={"Content-Type": "application/x-www-form-urlencoded"})  # fmt: skip
        assert again.status_code == 200


def status_of(service: Service, address: str) -> str:
    with database.transaction(service.engine) as session:
        subscriber = subscriber_store.subscriber_by_email(session, address)
    assert subscriber is not None
    return subscriber.status


def test_preview_as_a_subscriber_uses_their_themes_and_language(
    audience: Service, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert audience.settings.config_path is not None
    config = str(audience.settings.config_path)
    window = ["--since", SINCE.isoformat(), "--until", UNTIL.isoformat()]
    out = tmp_path / "bo.txt"
    assert main(["--config", config, "digest", "preview", "--subscriber", "BO@example.org", *window,
                 "--format", "text", "--out", str(out)]) == 0  # fmt: skip
    text = out.read_text("utf-8")
    assert text.startswith("1 new post on Resilience") and "Karachi" not in text
    assert main(["--config", config, "digest", "preview", "--subscriber", "ana@example.org", *window,
                 "--format", "text", "--out", str(out)]) == 0  # fmt: skip
    assert out.read_text("utf-8").startswith("2 artículos nuevos")
    assert main(["--config", config, "digest", "preview", "--subscriber", "nobody@example.org", *window]) == 1
    assert "no subscriber 'nobody@example.org'" in capsys.readouterr().err


def test_one_click_without_a_signing_key_is_a_clear_503(audience: Service) -> None:
    import httpx

    from syndication.web.app import create_app
    from tests.live_server import live_server

    keyless = audience.settings.model_copy(update={"secret_key": None})
    with live_server(create_app(keyless)) as web, httpx.Client(base_url=web.url(), timeout=10) as client:
        answer = client.post("/unsubscribe/bogus", data={"List-Unsubscribe": "One-Click"})
    assert answer.status_code == 503 and "not available" in answer.text
    assert "Traceback" not in answer.text and answer.headers["retry-after"] == "3600"


def test_sent_digests_are_dkim_signed_over_the_unsubscribe_headers(audience: Service, tmp_path: Path) -> None:
    import dkim
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    from syndication.config import DkimSettings
    from tests.test_dkim import DOMAIN, SELECTOR, published

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    key_file = tmp_path / "dkim.pem"
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    with smtp_server() as server:
        base = sending(audience, server)
        dkim_settings = DkimSettings(selector=SELECTOR, domain=DOMAIN, key_file=key_file)
        service = Service(base.settings.model_copy(update={"dkim": dkim_settings}), base.engine, base.clock)
        plan_edition(service, "weekly", SINCE, UNTIL)
        assert deliver(service).sent == 3
        received = server.received_for("bo@example.org")[0].data
    assert received.startswith(b"DKIM-Signature:")
    assert dkim.verify(received, dnsfunc=published(key))
    header = received.split(b"\r\nFrom:", 1)[0].replace(b"\r\n", b"").replace(b" ", b"").replace(b"\t", b"").lower()
    tags = dict(tag.split(b"=", 1) for tag in header.removeprefix(b"dkim-signature:").split(b";") if b"=" in tag)
    signed_headers = set(tags[b"h"].split(b":"))
    assert {b"list-unsubscribe", b"list-unsubscribe-post", b"from", b"subject"} <= signed_headers


def test_a_post_cannot_carry_a_readers_own_links(service: Service, tmp_path: Path) -> None:
    # Readers' links go into a rendered digest by substitution: a post naming the placeholders must stay as it is.
    lure = {
        "url": "https://recipient.invalid/unsubscribe",
        "summary": "See https://recipient.invalid/view and https://recipient.invalid/preferences today.",
    }
    import_file(service, write_jsonl(tmp_path / "lure.jsonl", [post_record(
        7, themes=["resilience"], published="2024-05-29T10:00:00Z", title="Read our statement", **lure)]))  # fmt: skip
    add_subscriber(service, "bo@example.org", name="Bo Li", cadence="weekly", confirmed=True)
    with smtp_server() as server:
        sender = sending(service, server)
        plan_edition(sender, "weekly", SINCE, UNTIL)
        assert deliver(sender).sent == 1
        message = server.received_for("bo@example.org")[0].parsed()
    own_unsubscribe = message["List-Unsubscribe"].split(">", 1)[0][1:]
    for kind in ("html", "plain"):
        part = message.get_body((kind,))
        assert part is not None
        body = part.get_content()
        assert "https://recipient.invalid/unsubscribe" in body and "https://recipient.invalid/view" in body
        assert body.count(own_unsubscribe) == 1, kind  # the footer's, not the post's link


def test_long_and_non_ascii_names_and_titles_make_lines_a_mail_server_takes(service: Service, tmp_path: Path) -> None:
    import_file(service, write_jsonl(tmp_path / "posts.jsonl", [post_record(
        8, themes=["resilience"], published="2024-05-29T10:00:00Z")]))  # fmt: skip
    names = {
        "globe@example.org": "🌍" * 200,  # a To line of over 1,000 characters unless folded
        "long@example.org": "Departamento de Medio Ambiente " * 6,  # long ASCII
        "lure@example.org": "=?utf-8?b?QmFuayA8Y2VvQGJhbmsuY29tPg==?=",  # would read "Bank <ceo@bank.com>"
        "quote@example.org": 'Evil "Quote", Inc.',
    }
    for address, name in names.items():
        add_subscriber(service, address, name=name, cadence="weekly", confirmed=True)
    site = service.settings.site.model_copy(update={"title": "Réseau Malmö 北九州市"})
    titled = Service(service.settings.model_copy(update={"site": site}), service.engine, service.clock)
    with smtp_server() as server:
        sender = sending(titled, server)
        plan_edition(sender, "weekly", SINCE, UNTIL)
        assert deliver(sender).sent == len(names)  # the server refuses a line over 998 octets
        received = {address: server.received_for(address)[0] for address in names}
    for address, name in names.items():
        head = received[address].data.split(b"\r\n\r\n", 1)[0]
        lines = head.split(b"\r\n")
        assert max(len(line) for line in lines) <= 998
        start = next(n for n, line in enumerate(lines) if line.startswith(b"To: "))
        end = next(n for n in range(start + 1, len(lines) + 1) if n == len(lines) or not lines[n].startswith(b" "))
        assert max(len(line) for line in lines[start:end]) <= 78 + len(address) + 3, address  # folded
        # Read as RFC 2047 says (the modern parser of the standard library keeps the space between two
        # encoded-words in a display name; mail clients drop it, as decode_header does).
        unfolded = {line.split(b": ", 1)[0]: line.split(b": ", 1)[1].decode("ascii")
                    for line in head.replace(b"\r\n ", b" ").split(b"\r\n")}  # fmt: skip
        shown, addr_spec = parseaddr(unfolded[b"To"])
        assert (str(make_header(decode_header(shown))), addr_spec) == (name.strip(), address)
        list_name, list_id = unfolded[b"List-Id"].rsplit(" ", 1)
        assert (str(make_header(decode_header(list_name))), list_id) == ("Réseau Malmö 北九州市", "<news.example.org>")


def sent_at(received: Any) -> datetime:
    return parsedate_to_datetime(received.parsed()["Date"])


def test_a_digest_sent_a_week_after_its_window_is_dated_when_it_is_sent(audience: Service) -> None:
    # The window ended at NOW; the send runs a week later. The Date is the send's, not the window's end
    # (a Date days in the past is scored as spam: DATE_IN_PAST_96_XX).
    late = NOW + timedelta(days=7, hours=3, minutes=12)
    with smtp_server() as server:
        plan_edition(sending(audience, server), "weekly", SINCE, UNTIL)
        assert deliver(sending(audience, server, late)).sent == 3
        for received in server.messages:
            assert abs(sent_at(received) - late) < timedelta(minutes=1), received.parsed()["Date"]


def test_a_retry_is_dated_when_it_is_retried_with_the_same_message_id(audience: Service) -> None:
    with smtp_server(defer={"bo@example.org": 1}, defer_at="data") as server:  # a 451 after the first message
        first_try = NOW + timedelta(days=1)
        plan = plan_edition(sending(audience, server), "weekly", SINCE, UNTIL)
        assert deliver(sending(audience, server, first_try)).deferred == 1
        retry = first_try + timedelta(minutes=5)
        assert deliver(sending(audience, server, retry)).sent == 1
        (bo,) = server.received_for("bo@example.org")
        assert abs(sent_at(bo) - retry) < timedelta(minutes=1)
        assert all(abs(sent_at(m) - first_try) < timedelta(minutes=1) for m in server.messages if m is not bo)
    assert plan.edition is not None
    with database.transaction(audience.engine) as session:
        kept = session.execute(select(DeliveryRow.message_id).where(DeliveryRow.edition_id == plan.edition.id))
        ids = {f"<{message_id}@news.example.org>" for message_id in kept.scalars()}
    assert bo.parsed()["Message-ID"] in ids  # the one the delivery was given when it was queued


def test_list_unsubscribe_is_folded_between_its_uris(audience: Service) -> None:
    with smtp_server() as server:
        service = sending(audience, server)
        plan_edition(service, "weekly", SINCE, UNTIL)
        deliver(service)
        received = server.received_for("bo@example.org")[0]
    head = received.data.split(b"\r\n\r\n", 1)[0].decode("ascii")
    lines = head.split("\r\n")
    start = next(n for n, line in enumerate(lines) if line.startswith("List-Unsubscribe: "))
    end = next(n for n in range(start + 1, len(lines) + 1) if n == len(lines) or not lines[n].startswith(" "))
    header = lines[start:end]
    assert len(header) >= 2 and header[-1] == " <mailto:leave@news.example.org?subject=unsubscribe>", header
    assert all(len(line) <= 78 for line in header if "/unsubscribe/" not in line)  # a URI is never broken
    uris = re.findall(r"<([^<>\s]+)>", " ".join(header))  # RFC 2369: no whitespace inside the brackets
    assert uris[1] == "mailto:leave@news.example.org?subject=unsubscribe"
    assert uris[0].startswith("https://news.example.org/unsubscribe/")
    parsed = received.parsed()["List-Unsubscribe"]
    assert re.findall(r"<([^<>]+)>", parsed) == uris  # read back unfolded: the same two URIs
    assert "Feedback-ID" not in received.parsed()  # not configured


def test_list_unsubscribe_lines_stay_under_78_when_the_uris_fit() -> None:
    from syndication.mailing.message import folded_list

    uris = ["<https://news.example.org/unsubscribe/" + "t" * 20 + ">", "<mailto:leave@news.example.org?subject=x>"]
    value = folded_list("List-Unsubscribe", uris)
    lines = f"List-Unsubscribe: {value}".split("\r\n")
    assert len(lines) == 2 and max(map(len, lines)) == 78  # the first line just fits
    assert re.findall(r"<[^<>]+>", value) == uris
    wide = [uris[0].replace("t" * 20, "t" * 35), uris[1]]  # too long after the name: it starts a line of its own
    lines = f"List-Unsubscribe: {folded_list('List-Unsubscribe', wide)}".split("\r\n")
    assert len(lines) == 3 and max(map(len, lines)) <= 78 and lines[0] == "List-Unsubscribe: "
    long = ["<https://news.example.org/unsubscribe/" + "t" * 60 + ">"]  # a URI is never broken
    assert re.findall(r"<[^<>\s]+>", folded_list("List-Unsubscribe", long)) == long


def test_feedback_id_names_the_edition_cadence_and_sender_when_configured(audience: Service) -> None:
    with smtp_server() as server:
        base = sending(audience, server)
        mail = base.settings.mail.model_copy(update={"feedback_id": "news.example.org"})
        service = Service(base.settings.model_copy(update={"mail": mail}), base.engine, base.clock)
        plan = plan_edition(service, "weekly", SINCE, UNTIL)
        deliver(service)
        assert plan.edition is not None
        for received in server.messages:
            assert received.parsed()["Feedback-ID"] == f"{plan.edition.id}:weekly:digest:news.example.org"


def test_a_feedback_id_with_a_colon_or_space_is_refused() -> None:
    from pydantic import ValidationError

    from syndication.config import MailSettings

    assert MailSettings(feedback_id="news.example.org").feedback_id == "news.example.org"
    for wrong in ("a:b", "two words", ""):
        with pytest.raises(ValidationError):
            MailSettings(feedback_id=wrong)
