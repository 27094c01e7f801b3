"""Subscribers on SQLite and PostgreSQL: checking and normalising addresses, the command line (add, import, list,
export, remove), double opt-in over a real SMTP server, suppression after removal, unsubscribe and bounces."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from syndication.app.bounces import record_bounce
from syndication.app.service import Service, init_store
from syndication.app.subscribers import (
    SubscriberError,
    add_subscriber,
    clean_name,
    confirm,
    export_subscribers,
    import_subscribers,
    list_subscribers,
    normalise_email,
    remove_subscriber,
    spreadsheet_value,
    subscriber_token,
    unsubscribe,
    unsubscribe_url,
)
from syndication.cli import main
from syndication.clock import fixed_clock
from syndication.config import Settings, load_settings, signing_keys
from syndication.core.models import Consent
from syndication.core.tokens import make_token
from syndication.errors import TokenError
from syndication.store import database
from syndication.store import subscribers as store
from syndication.store.schema import DeliveryRow, EditionRow, SubscriberRow, SuppressionRow
from tests.smtp_server import SmtpTestServer, smtp_server
from tests.support import NOW, write_config

KEY = "test-signing-key-0123456789abcdef"
CONFIRM_LINK = re.compile(r"https://news\.example\.org/subscribe/confirm/([A-Za-z0-9._-]+)")


@pytest.fixture
def smtp() -> Iterator[SmtpTestServer]:
    """A real SMTP server on 127.0.0.1 that refuses bounce@example.org."""
    with smtp_server(reject=["bounce@example.org"]) as server:
        yield server


@pytest.fixture
def config(tmp_path: Path, database_url: str, smtp: SmtpTestServer, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A config.toml on this test's database and SMTP server, with the signing key in the environment."""
    for variable in ("SYNDICATION_DATABASE_URL", "SYNDICATION_SMTP_HOST", "SYNDICATION_SMTP_PORT",
                     "SYNDICATION_OLD_SECRET_KEYS", "SYNDICATION_CONFIG"):  # fmt: skip
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("SYNDICATION_SECRET_KEY", KEY)
    extra = f'[smtp]\nhost = "127.0.0.1"\nport = {smtp.port}\ntimeout_seconds = 5\n'
    extra += '[mail]\nfrom_address = "news@example.org"\n[bounces]\naddress = "bounces@example.org"\n'
    path = write_config(tmp_path, database_url, extra)
    init_store(load_settings(path, environ={}))
    return path


@pytest.fixture
def settings(config: Path) -> Settings:
    """The settings of ``config`` with the signing key."""
    return load_settings(config, environ={"SYNDICATION_SECRET_KEY": KEY})


@pytest.fixture
def service(settings: Settings) -> Iterator[Service]:
    """The store of ``config`` with the clock fixed at NOW."""
    with Service.open(settings, fixed_clock(NOW)) as service:
        yield service


def cli(config: Path, *args: str) -> int:
    """Run ``syndication subscribers ARGS`` on ``config``."""
    return main(["subscribers", *args, "--config", str(config)])


def write_csv(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def confirm_token(smtp: SmtpTestServer, address: str) -> str:
    """The token of the confirmation link in the last email ``address`` received, read from its text part."""
    received = smtp.received_for(address)
    assert received, f"no email for {address}"
    body = received[-1].parsed().get_body(("plain",))
    assert body is not None
    match = CONFIRM_LINK.search(body.get_content())
    assert match, body.get_content()
    return match.group(1)


def rows(service: Service) -> dict[str, SubscriberRow]:
    with database.transaction(service.engine) as session:
        return {row.email: row for row in session.scalars(select(SubscriberRow))}


# --- Addresses and names --------------------------------------------------------------------------------------


def test_addresses_are_normalised_case_and_idn() -> None:
    assert normalise_email("  Ana.Perez@Example.ORG ") == "ana.perez@example.org"
    assert normalise_email("Ana@BÜCHER.example.org") == "ana@xn--bcher-kva.example.org"
    assert normalise_email("ana@xn--bcher-kva.example.org") == "ana@xn--bcher-kva.example.org"


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("not-an-address", "must have an @-sign"),
        ("ana@@example.org", "invalid characters"),
        ("ana@example", "should have a period"),
        ("ana@example.invalid", "special-use or reserved"),
        ("ana pérez@example.org", "invalid characters"),
        ("anä@example.org", "Internationalized characters before the @-sign"),
        ("ana@example.org\nBcc: x@example.org", "invalid characters"),
    ],
)
def test_invalid_addresses_are_refused_naming_them(address: str, reason: str) -> None:
    with pytest.raises(SubscriberError) as caught:
        normalise_email(address)
    assert repr(address) in str(caught.value)
    assert reason in str(caught.value)


def test_names_are_kept_on_one_line_without_control_characters() -> None:
    assert clean_name("  Ana\r\nPérez\t\x00 ") == "Ana Pérez"
    assert clean_name("Ana\u2028Pérez\u202e") == "Ana Pérez"  # line separator, right-to-left override
    assert clean_name("北九州市 環境局") == "北九州市 環境局"
    assert clean_name("x" * 200) == "x" * 200
    with pytest.raises(SubscriberError, match="at most 200"):
        clean_name("x" * 201)


def test_an_invalid_address_is_refused_by_the_command_naming_it(
    config: Path, capsys: pytest.CaptureFixture[str], service: Service
) -> None:
    assert cli(config, "add", "ana@example") == 1
    assert "'ana@example' is not a valid email address" in capsys.readouterr().err
    assert rows(service) == {}


def test_themes_cadence_and_language_are_checked(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(config, "add", "ana@example.org", "--themes", "resilience,oceans", "--confirmed") == 1
    assert "ana@example.org: unknown theme 'oceans' (known: climate-action, resilience" in capsys.readouterr().err
    assert cli(config, "add", "ana@example.org", "--language", "fr", "--confirmed") == 1
    assert "unknown language 'fr' (digests are written in en, es)" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exited:
        cli(config, "add", "ana@example.org", "--cadence", "hourly")
    assert exited.value.code == 2
    assert "invalid choice: 'hourly'" in capsys.readouterr().err


# --- Adding ---------------------------------------------------------------------------------------------------


def test_add_confirmed_is_active_at_once_with_defaults_and_consent(
    config: Path, capsys: pytest.CaptureFixture[str], smtp: SmtpTestServer
) -> None:
    assert cli(config, "add", "Ana@Example.ORG", "--name", "Ana Pérez", "--confirmed") == 0
    assert capsys.readouterr().out == "added ana@example.org (active)\n"
    assert smtp.messages == []
    assert cli(config, "list", "--json") == 0
    [listed] = json.loads(capsys.readouterr().out)
    assert listed["email"] == "ana@example.org"
    assert (listed["name"], listed["status"], listed["cadence"], listed["language"], listed["themes"]) == (
        "Ana Pérez",
        "active",
        "weekly",
        "en",
        None,
    )
    assert listed["consent"]["method"] == "cli"
    assert listed["consent"]["source"] == "command line, consent confirmed by the operator"
    assert listed["confirmed_at"] is not None


def test_themes_are_kept_in_digest_order(service: Service) -> None:
    outcome = add_subscriber(service, "ana@example.org", themes="circular-economy; Climate-Action", confirmed=True)
    assert outcome.subscriber.themes == ("climate-action", "circular-economy")
    assert add_subscriber(service, "bo@example.org", themes="", confirmed=True).subscriber.themes is None
    # A theme's aliases stand for it, as they do in posts; a slug and its alias count once.
    aliased = add_subscriber(service, "cy@example.org", themes="Plastics;adaptation,resilience", confirmed=True)
    assert aliased.subscriber.themes == ("resilience", "circular-economy")


def test_adding_an_existing_address_changes_nothing_unless_update(
    config: Path, capsys: pytest.CaptureFixture[str], service: Service
) -> None:
    assert cli(config, "add", "ana@example.org", "--name", "Ana", "--themes", "resilience", "--confirmed") == 0
    capsys.readouterr()
    assert cli(config, "add", "ANA@example.org", "--name", "Someone else", "--cadence", "daily") == 1
    assert "ana@example.org is already subscribed (active); nothing changed" in capsys.readouterr().out
    row = rows(service)["ana@example.org"]
    assert (row.name, row.cadence, row.themes) == ("Ana", "weekly", ["resilience"])

    # --update changes only what is given; '' for themes is every theme.
    assert cli(config, "add", "ana@example.org", "--update", "--cadence", "daily") == 0
    assert "updated the preferences of ana@example.org (active)" in capsys.readouterr().out
    row = rows(service)["ana@example.org"]
    assert (row.name, row.cadence, row.themes, row.language) == ("Ana", "daily", ["resilience"], "en")
    assert cli(config, "add", "ana@example.org", "--update", "--themes", "", "--language", "ES") == 0
    row = rows(service)["ana@example.org"]
    assert (row.themes, row.language) == (None, "es")
    assert cli(config, "add", "ana@example.org", "--update", "--language", "es") == 0
    assert "already has these preferences" in capsys.readouterr().out


def test_without_a_signing_key_nothing_is_added(
    config: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, service: Service
) -> None:
    monkeypatch.delenv("SYNDICATION_SECRET_KEY")
    assert cli(config, "add", "ana@example.org") == 2
    assert "set SYNDICATION_SECRET_KEY" in capsys.readouterr().err
    assert rows(service) == {}


# --- Double opt-in --------------------------------------------------------------------------------------------


def test_a_pending_subscriber_gets_a_confirmation_email_whose_link_confirms(
    config: Path, capsys: pytest.CaptureFixture[str], smtp: SmtpTestServer, service: Service
) -> None:
    assert cli(config, "add", "ana@example.org", "--name", "Ana Pérez", "--language", "es") == 0
    assert capsys.readouterr().out == "added ana@example.org (pending); confirmation email sent\n"
    [received] = smtp.received_for("ana@example.org")
    assert received.mail_from == "bounces@example.org"
    message = received.parsed()
    assert message["To"] == "Ana Pérez <ana@example.org>"
    assert message["Subject"] == "Confirma tu suscripción a Test Network"
    assert message["Auto-Submitted"] == "auto-generated"
    html = message.get_body(("html",))
    assert html is not None
    token = confirm_token(smtp, "ana@example.org")
    assert f'href="https://news.example.org/subscribe/confirm/{token}"' in html.get_content()

    with database.transaction(service.engine) as session:
        assert list(store.active_subscribers(session, "weekly")) == []
    now = Service(service.settings, service.engine)  # the command signed with the system clock
    confirmed = confirm(now, token)
    assert (confirmed.email, confirmed.status) == ("ana@example.org", "active")
    assert confirmed.confirmed_at is not None and confirmed.confirmed_at > NOW
    assert confirm(now, token) == confirmed  # a second click changes nothing
    with database.transaction(service.engine) as session:
        assert [s.email for s in store.active_subscribers(session, "weekly")] == ["ana@example.org"]


def test_confirmation_links_that_are_expired_forged_or_for_something_else_are_refused(
    service: Service, smtp: SmtpTestServer
) -> None:
    subscriber = add_subscriber(service, "ana@example.org").subscriber
    token = confirm_token(smtp, "ana@example.org")
    later = Service(service.settings, service.engine, fixed_clock(NOW + timedelta(days=7, seconds=1)))
    with pytest.raises(TokenError, match="expired"):
        confirm(later, token)
    with pytest.raises(TokenError, match="not valid"):
        confirm(service, subscriber_token(service, "unsubscribe", subscriber))
    with pytest.raises(TokenError, match="not valid"):
        confirm(service, make_token(["an-attackers-key-0123456789"], "confirm", f"{subscriber.id}", now=NOW))
    with pytest.raises(TokenError):
        confirm(service, token[:-2])
    assert rows(service)["ana@example.org"].status == "pending"
    assert confirm(service, token).status == "active"


def test_an_old_confirmation_link_does_not_undo_an_unsubscribe(service: Service, smtp: SmtpTestServer) -> None:
    subscriber = add_subscriber(service, "ana@example.org").subscriber
    token = confirm_token(smtp, "ana@example.org")
    unsubscribe(service, subscriber.id)
    with pytest.raises(SubscriberError, match=r"ana@example\.org is unsubscribed"):
        confirm(service, token)


def test_a_refused_confirmation_email_leaves_them_pending_and_adding_again_resends(
    config: Path, capsys: pytest.CaptureFixture[str], smtp: SmtpTestServer, service: Service
) -> None:
    assert cli(config, "add", "bounce@example.org") == 1
    captured = capsys.readouterr()
    assert captured.out == "added bounce@example.org (pending)\n"
    assert "the confirmation email to bounce@example.org was not sent: 550" in captured.err
    assert rows(service)["bounce@example.org"].status == "pending"
    smtp.behaviour.reject = []
    assert cli(config, "add", "bounce@example.org") == 0
    expected = "bounce@example.org is already subscribed and pending (not confirmed yet); confirmation email sent again"
    assert capsys.readouterr().out == expected + "\n"
    assert len(smtp.received_for("bounce@example.org")) == 1


def test_add_confirmed_activates_a_pending_subscriber(service: Service, smtp: SmtpTestServer) -> None:
    add_subscriber(service, "ana@example.org")
    outcome = add_subscriber(service, "ana@example.org", confirmed=True)
    assert (outcome.action, outcome.subscriber.status) == ("confirmed", "active")
    assert len(smtp.messages) == 1


# --- Import ---------------------------------------------------------------------------------------------------


def test_import_keeps_good_rows_and_reports_bad_ones_by_line(
    config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], smtp: SmtpTestServer, service: Service
) -> None:
    path = write_csv(
        tmp_path / "people.csv",
        "email,name,themes,cadence,language\n"
        "ana@example.org,Ana Pérez,climate-action;resilience,weekly,es\n"  # line 2
        "not-an-address,Nobody,,weekly,en\n"  # line 3
        '"bo@example.org","Bo\nSecond Line","climate-action,circular-economy",daily,\n'  # lines 4-5
        "cy@example.org,Cy,oceans,weekly,en\n"  # line 6
        "\n"  # line 7: blank, skipped
        "dee@example.org,Dee,,fortnightly,en\n"  # line 8
        "ANA@example.org,Ana again,,,\n"  # line 9
        "eve@example.org,Eve,,,de\n"  # line 10
        "fay@example.org,Fay,,,,extra\n"  # line 11
        "gus@example.org\n",  # line 12: short rows are fine
    )
    assert cli(config, "import", str(path)) == 1
    captured = capsys.readouterr()
    refused = [line for line in captured.err.splitlines() if line.startswith("refused: ")]
    assert refused == [
        f"refused: {path}: line 3: 'not-an-address' is not a valid email address: An email address must have an"
        " @-sign.",
        f"refused: {path}: line 6: cy@example.org: unknown theme 'oceans' (known: climate-action, resilience,"
        " circular-economy)",
        f"refused: {path}: line 8: dee@example.org: unknown cadence 'fortnightly' (one of daily, weekly, monthly)",
        f"refused: {path}: line 9: ana@example.org: the same address as line 2",
        f"refused: {path}: line 10: eve@example.org: unknown language 'de' (digests are written in en, es)",
        f"refused: {path}: line 11: 6 fields, the header has 5",
    ]
    assert captured.out == (
        f"{path}: 9 rows read, 3 added, 0 activated, 0 updated, 0 unchanged, 6 refused; 3 confirmation emails sent\n"
    )
    stored = rows(service)
    assert sorted(stored) == ["ana@example.org", "bo@example.org", "gus@example.org"]
    bo = stored["bo@example.org"]
    assert (bo.name, bo.themes, bo.cadence, bo.language, bo.status) == (
        "Bo Second Line",
        ["climate-action", "circular-economy"],
        "daily",
        "en",
        "pending",
    )
    assert (bo.consent_method, bo.consent_source) == ("import", "import of people.csv, line 4, double opt-in")
    assert stored["ana@example.org"].themes == ["climate-action", "resilience"]
    assert stored["gus@example.org"].themes is None
    assert sorted(address for m in smtp.messages for address in m.recipients) == [
        "ana@example.org",
        "bo@example.org",
        "gus@example.org",
    ]

    # The same file again: nothing new, nobody mailed twice.
    good = write_csv(tmp_path / "good.csv", "email,name\nana@example.org,Ana\nbo@example.org,Bo\n")
    assert cli(config, "import", str(good)) == 0
    assert "2 rows read, 0 added, 0 activated, 0 updated, 2 unchanged, 0 refused" in capsys.readouterr().out
    assert len(smtp.messages) == 3
    assert rows(service)["ana@example.org"].name == "Ana Pérez"


def test_import_update_and_confirmed(
    config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], service: Service, smtp: SmtpTestServer
) -> None:
    first = write_csv(tmp_path / "a.csv", "email,name,themes,cadence\nana@example.org,Ana,resilience,monthly\n")
    assert cli(config, "import", str(first), "--confirmed") == 0
    assert rows(service)["ana@example.org"].status == "active"
    assert smtp.messages == []
    changed = write_csv(tmp_path / "b.csv", "email,name,themes,cadence\nana@example.org,Ana P.,,\n")
    assert cli(config, "import", str(changed), "--update") == 0
    assert "1 updated" in capsys.readouterr().out
    row = rows(service)["ana@example.org"]
    assert (row.name, row.themes, row.cadence) == ("Ana P.", None, "monthly")  # empty cadence keeps theirs


def test_an_ended_subscription_is_not_reactivated_by_import_even_confirmed(
    config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], service: Service
) -> None:
    for address in ("ana@example.org", "bo@example.org", "cy@example.org", "di@example.org"):
        add_subscriber(service, address, confirmed=True)
    unsubscribe(service, rows(service)["ana@example.org"].id)
    record_bounce(service, subscriber_id=rows(service)["bo@example.org"].id, fault="address", source="smtp")
    with database.transaction(service.engine) as session:
        store.set_status(session, rows(service)["cy@example.org"].id, "complained", NOW)
    path = write_csv(tmp_path / "again.csv", "email\nana@example.org\nbo@example.org\ncy@example.org\ndi@example.org\n")
    ended = {"ana@example.org": "unsubscribed", "bo@example.org": "bounced", "cy@example.org": "complained",
             "di@example.org": "active"}  # fmt: skip
    for confirmed in ([], ["--confirmed"]):
        assert cli(config, "import", str(path), *confirmed) == 1
        err = capsys.readouterr().err
        assert (f"{path}: line 2: ana@example.org is unsubscribed (since 2024-06-01): not made active again; they can"
                " subscribe again through the subscribe form, or, with their renewed consent, an operator adds"
                " --confirmed --reactivate --reason TEXT (who and why are recorded)") in err  # fmt: skip
        assert f"{path}: line 3: bo@example.org is bounced" in err
        assert f"{path}: line 4: cy@example.org is complained" in err
        assert {row.email: row.status for row in rows(service).values()} == ended
    assert rows(service)["ana@example.org"].consent_source == "command line, consent confirmed by the operator"


def test_reactivating_takes_an_explicit_flag_and_records_who_and_why(
    config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], service: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("USER", "operator-olga")
    monkeypatch.setenv("LOGNAME", "operator-olga")
    for address in ("ana@example.org", "bo@example.org", "cy@example.org"):
        add_subscriber(service, address, confirmed=True)
    unsubscribe(service, rows(service)["ana@example.org"].id)
    record_bounce(service, subscriber_id=rows(service)["bo@example.org"].id, fault="address", source="smtp")
    path = write_csv(tmp_path / "again.csv", "email\nana@example.org\nbo@example.org\n")
    # the flag goes with --confirmed and a reason, refused as a usage error otherwise
    assert cli(config, "import", str(path), "--reactivate", "--reason", "asked again") == 2
    assert "--reactivate needs --confirmed" in capsys.readouterr().err
    assert cli(config, "import", str(path), "--confirmed", "--reactivate") == 2
    assert "--reactivate needs --reason TEXT" in capsys.readouterr().err
    assert cli(config, "import", str(path), "--confirmed", "--reactivate", "--reason", "  ") == 2
    assert cli(config, "import", str(path), "--confirmed", "--reason", "why") == 2
    assert "--reason goes with --reactivate" in capsys.readouterr().err
    assert {row.email: row.status for row in rows(service).values()}["ana@example.org"] == "unsubscribed"
    with pytest.raises(SubscriberError, match="--reactivate needs --confirmed"):
        import_subscribers(service, path, reactivate=True, reason="x")

    reason = "signed up again on paper at the fair"
    assert cli(config, "import", str(path), "--confirmed", "--reactivate", "--reason", reason) == 0
    assert "2 activated" in capsys.readouterr().out
    ana = rows(service)["ana@example.org"]
    assert ana.status == "active"
    assert ana.consent_source == f"import of again.csv, line 2, reactivated by operator-olga: {reason}"
    assert rows(service)["bo@example.org"].status == "active"

    with database.transaction(service.engine) as session:
        store.set_status(session, rows(service)["cy@example.org"].id, "complained", NOW)
    assert cli(config, "add", "cy@example.org", "--confirmed") == 1
    assert "cy@example.org is complained (since 2024-06-01): not made active again" in capsys.readouterr().err
    assert cli(config, "add", "cy@example.org", "--confirmed", "--reactivate", "--reason", "phoned us") == 0
    assert capsys.readouterr().out == "cy@example.org is active again\n"
    cy = rows(service)["cy@example.org"]
    assert (cy.status, cy.consent_method) == ("active", "cli")
    assert cy.consent_source == "command line, reactivated by operator-olga: phoned us"


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("mail,name\nana@example.org,Ana\n", "line 1: unknown column 'mail'"),
        ("name\nAna\n", "line 1: no 'email' column"),
        ("email,email\na@example.org,b@example.org\n", "line 1: a column is named twice"),
        ("", "empty file"),
    ],
)
def test_an_import_file_without_a_proper_header_is_refused_whole(
    config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], service: Service, text: str, reason: str
) -> None:
    path = write_csv(tmp_path / "bad.csv", text)
    assert cli(config, "import", str(path)) == 1
    assert f"syndication: error: {path}: {reason}" in capsys.readouterr().err
    assert rows(service) == {}


def test_import_of_a_missing_file(config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(config, "import", str(tmp_path / "nowhere.csv")) == 1
    assert "nowhere.csv: no such file" in capsys.readouterr().err


def test_an_import_larger_than_a_chunk_keeps_every_rule_across_chunks(
    config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], service: Service
) -> None:
    # Rows are looked up and inserted a thousand at a time: the rules hold wherever a row falls among the chunks.
    add_subscriber(service, "person1500@example.org")  # pending, then confirmed by the import (second chunk)
    add_subscriber(service, "person20@example.org", confirmed=True)
    unsubscribe(service, store_id(service, "person20@example.org"))  # ended: refused (first chunk)
    add_subscriber(service, "person2400@example.org", confirmed=True)
    remove_subscriber(service, "person2400@example.org", actor="cli:tester")  # suppressed: refused (third chunk)
    lines = [f"person{number}@example.org,Person {number},resilience" for number in range(2600)]
    lines[1200] = "not-an-address,Nobody,"  # line 1202
    lines.append("PERSON999@example.org,Again,")  # line 2602: the same address as line 1001, two chunks before
    path = write_csv(tmp_path / "many.csv", "email,name,themes\n" + "\n".join(lines) + "\n")
    assert cli(config, "import", str(path), "--confirmed") == 1
    captured = capsys.readouterr()
    refused = [line.split(": ", 3)[2:] for line in captured.err.splitlines() if line.startswith("refused: ")]
    assert [where for where, _ in refused] == ["line 22", "line 1202", "line 2402", "line 2602"]
    assert refused[0][1].startswith("person20@example.org is unsubscribed (since 2024-06-01)")
    assert refused[2][1].startswith("person2400@example.org was removed on 2024-06-01 and is suppressed")
    assert refused[3][1] == "person999@example.org: the same address as line 1001"
    assert "2601 rows read, 2596 added, 1 activated, 0 updated, 0 unchanged, 4 refused" in captured.out
    stored = rows(service)
    assert len(stored) == 2598  # 2,596 added, the one confirmed and the one unsubscribed
    assert stored["person1500@example.org"].status == "active"
    assert stored["person20@example.org"].status == "unsubscribed"
    assert "person2400@example.org" not in stored and "not-an-address" not in stored
    assert {row.themes == ["resilience"] and row.status == "active" for email, row in stored.items()
            if email not in ("person20@example.org", "person1500@example.org")} == {True}  # fmt: skip
    assert stored["person2599@example.org"].name == "Person 2599"


def test_a_file_not_utf8_far_into_it_is_refused_whole(
    config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], service: Service
) -> None:
    # Read as it goes: the bad byte comes after thousands of rows were read, and none of them is kept.
    good = "".join(f"person{number}@example.org,Person {number}\n" for number in range(5000)).encode()
    path = tmp_path / "latin1.csv"
    path.write_bytes(b"email,name\n" + good + "jos\xe9@example.org,Jos\xe9\n".encode("latin-1"))
    assert cli(config, "import", str(path), "--confirmed") == 1
    offset = len(b"email,name\n" + good) + 3
    expected = f"syndication: error: {path}: not UTF-8 text (invalid continuation byte at byte {offset})"
    assert expected in capsys.readouterr().err
    assert rows(service) == {}


def store_id(service: Service, address: str) -> int:
    """The id of the subscriber with ``address``."""
    return rows(service)[address].id


# --- Removal and suppression ----------------------------------------------------------------------------------


def test_remove_erases_personal_data_and_keeps_only_a_hash(
    config: Path, capsys: pytest.CaptureFixture[str], service: Service
) -> None:
    subscriber = add_subscriber(service, "ana@example.org", name="Ana Pérez", confirmed=True).subscriber
    other = add_subscriber(service, "bo@example.org", confirmed=True).subscriber
    with database.transaction(service.engine) as session:
        edition = EditionRow(cadence="weekly", since=NOW - timedelta(days=7), until=NOW, status="sent", created_at=NOW)
        session.add(edition)
        session.flush()
        for who in (subscriber, other):
            session.add(DeliveryRow(edition_id=edition.id, subscriber_id=who.id, status="sent",
                                    next_attempt_at=NOW, message_id=f"<{who.id}@x>"))  # fmt: skip

    assert cli(config, "remove", "Ana@Example.org") == 0
    assert capsys.readouterr().out == "removed ana@example.org: erased, and suppressed so that it is not added again\n"
    with database.transaction(service.engine) as session:
        assert session.scalars(select(SubscriberRow.email)).all() == ["bo@example.org"]
        deliveries = session.execute(select(DeliveryRow.subscriber_id).order_by(DeliveryRow.id)).scalars().all()
        assert deliveries == [None, other.id]
        [suppression] = session.scalars(select(SuppressionRow)).all()
        assert suppression.email_hash == hashlib.sha256(b"ana@example.org").hexdigest()
        assert suppression.reason == "removed"
    assert cli(config, "export") == 0
    assert "ana@example.org" not in capsys.readouterr().out
    assert cli(config, "remove", "ana@example.org") == 0
    assert "was removed before" in capsys.readouterr().out


def test_a_removed_address_cannot_come_back_by_import_or_add(
    config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], service: Service, smtp: SmtpTestServer
) -> None:
    add_subscriber(service, "ana@example.org", confirmed=True)
    assert remove_subscriber(service, "ana@example.org", actor="cli:tester") == "removed"
    path = write_csv(tmp_path / "old-list.csv", "email,name\nANA@example.org,Ana\nbo@example.org,Bo\n")
    assert cli(config, "import", str(path), "--confirmed") == 1
    err = capsys.readouterr().err
    assert (
        f"refused: {path}: line 2: ana@example.org was removed on 2024-06-01 and is suppressed: not added again"
        " (only 'subscribers add --confirmed --resubscribe' can add it again)"
    ) in err
    assert sorted(rows(service)) == ["bo@example.org"]

    assert cli(config, "add", "ana@example.org", "--confirmed") == 1
    assert "ana@example.org was removed on 2024-06-01 and is suppressed" in capsys.readouterr().err
    assert cli(config, "add", "ana@example.org", "--resubscribe") == 2
    assert "--resubscribe needs --confirmed" in capsys.readouterr().err
    assert "ana@example.org" not in rows(service)

    assert cli(config, "add", "ana@example.org", "--confirmed", "--resubscribe") == 0
    assert "added ana@example.org again (active); its suppression is lifted" in capsys.readouterr().out
    with database.transaction(service.engine) as session:
        assert store.suppression_reason(session, "ana@example.org") is None
    assert smtp.messages == []


def test_removing_an_address_that_was_never_subscribed_suppresses_it(service: Service) -> None:
    assert remove_subscriber(service, "never@example.org", actor="cli:tester") == "suppressed"
    with pytest.raises(SubscriberError, match="is suppressed"):
        add_subscriber(service, "never@example.org", confirmed=True)


# --- Unsubscribe, bounces and reading -------------------------------------------------------------------------


def test_unsubscribe_by_link_or_id_is_idempotent(service: Service) -> None:
    ana = add_subscriber(service, "ana@example.org", confirmed=True).subscriber
    url = unsubscribe_url(service, ana)
    assert url.startswith("https://news.example.org/unsubscribe/")
    token = url.rsplit("/", 1)[1]
    done = unsubscribe(service, token)
    assert done is not None and done.status == "unsubscribed"
    assert unsubscribe(service, token) == done
    with pytest.raises(TokenError):
        unsubscribe(service, subscriber_token(service, "preferences", ana))
    # A link made with the bare id (what the brief allows) works too.
    bo = add_subscriber(service, "bo@example.org", confirmed=True).subscriber
    bare = make_token(signing_keys(service.settings), "unsubscribe", str(bo.id), now=NOW)
    assert unsubscribe(service, bare) == replace(bo, status="unsubscribed")
    assert unsubscribe(service, 999_999) is None


def test_an_old_link_does_not_act_on_whoever_gets_the_id_next(service: Service) -> None:
    ana = add_subscriber(service, "ana@example.org", confirmed=True).subscriber
    token = subscriber_token(service, "unsubscribe", ana)
    remove_subscriber(service, "ana@example.org", actor="cli:tester")
    add_subscriber(service, "bo@example.org", confirmed=True)  # on SQLite, Bo gets Ana's id
    assert unsubscribe(service, token) is None
    assert rows(service)["bo@example.org"].status == "active"


def test_bounces_stop_sending_but_do_not_override_an_unsubscribe(service: Service) -> None:
    ana = add_subscriber(service, "ana@example.org", confirmed=True).subscriber
    bo = add_subscriber(service, "bo@example.org", confirmed=True).subscriber
    bounced = record_bounce(service, subscriber_id=ana.id, fault="address", source="smtp")
    assert bounced.subscriber_status == "bounced"
    unsubscribe(service, bo.id)
    kept = record_bounce(service, subscriber_id=bo.id, fault="address", source="smtp")
    assert kept.subscriber_status == "unsubscribed"
    assert record_bounce(service, subscriber_id=999_999, fault="address", source="smtp").subscriber_id is None
    left = unsubscribe(service, ana.id)
    assert left is not None and left.status == "bounced"


def test_active_subscribers_stream_in_id_order_by_cadence_with_counts(service: Service) -> None:
    now = NOW
    with database.transaction(service.engine) as session:
        for number in range(1203):
            store.insert_subscriber(
                session,
                email=f"reader{number}@example.org",
                name="",
                language="en",
                themes=None if number % 3 == 0 else ["climate-action", "resilience"][number % 7 != 0 :],
                cadence="daily" if number % 2 else "weekly",
                status="pending" if number % 5 == 0 else "active",
                consent=Consent(now, "import", "test"),
                now=now,
            )
    with database.transaction(service.engine) as session:
        weekly = list(store.active_subscribers(session, "weekly"))
        assert [s.id for s in weekly] == sorted(s.id for s in weekly)
        assert {s.cadence for s in weekly} == {"weekly"} and {s.status for s in weekly} == {"active"}
        expected = [n for n in range(1203) if n % 2 == 0 and n % 5 != 0]
        assert [s.email for s in weekly] == [f"reader{n}@example.org" for n in expected]
        counts = store.status_counts(session)
        assert sum(counts.values()) == 1203
        assert counts[("weekly", "active")] == len(expected)
        themes = store.theme_counts(session)
        active = [n for n in range(1203) if n % 5 != 0]
        assert themes == {
            None: sum(1 for n in active if n % 3 == 0),  # everything
            "resilience": sum(1 for n in active if n % 3),
            "climate-action": sum(1 for n in active if n % 3 and n % 7 == 0),
        }
        with pytest.raises(ValueError, match="unknown cadence"):
            store.active_subscribers(session, "hourly")


def test_list_filters_and_prints_one_line_each(
    config: Path, capsys: pytest.CaptureFixture[str], service: Service
) -> None:
    add_subscriber(service, "ana@example.org", name="Ana", themes=["resilience"], confirmed=True)
    add_subscriber(service, "bo@example.org", cadence="daily", confirmed=True)
    assert cli(config, "list") == 0
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert re.fullmatch(r" +\d+  ana@example\.org  active  weekly  en  resilience  Ana", lines[0])
    assert re.fullmatch(r" +\d+  bo@example\.org  active  daily  en  \(every theme\)", lines[1])
    assert captured.err == "2 subscribers\n"
    assert cli(config, "list", "--cadence", "daily", "--json") == 0
    assert [s["email"] for s in json.loads(capsys.readouterr().out)] == ["bo@example.org"]
    assert cli(config, "list", "--status", "pending") == 0
    assert capsys.readouterr().out == ""
    assert [s.email for s in list_subscribers(service, status="active", cadence="weekly")] == ["ana@example.org"]


def test_export_holds_everything_including_consent(
    config: Path, capsys: pytest.CaptureFixture[str], service: Service, smtp: SmtpTestServer
) -> None:
    add_subscriber(service, "ana@example.org", name="Ana Pérez", themes="resilience,climate-action", language="es")
    add_subscriber(service, "bo@example.org", cadence="monthly", confirmed=True, consent_source="paper form, fair")
    assert cli(config, "export") == 0
    captured = capsys.readouterr()
    assert captured.err == "2 subscribers exported\n"
    records = list(csv.DictReader(io.StringIO(captured.out)))
    assert list(records[0]) == [column.key for column in SubscriberRow.__table__.columns]
    ana, bo = records
    assert (ana["email"], ana["name"], ana["language"], ana["themes"], ana["cadence"], ana["status"]) == (
        "ana@example.org",
        "Ana Pérez",
        "es",
        "climate-action;resilience",
        "weekly",
        "pending",
    )
    assert (ana["consent_at"], ana["consent_method"], ana["consent_source"]) == (
        "2024-06-01T12:00:00+00:00",
        "cli",
        "command line, double opt-in",
    )
    assert ana["confirmed_at"] == ""
    assert (bo["themes"], bo["consent_source"], bo["confirmed_at"]) == (
        "",
        "paper form, fair, consent confirmed by the operator",
        "2024-06-01T12:00:00+00:00",
    )
    # An empty store still says which columns an export has.
    out = io.StringIO()
    remove_subscriber(service, "ana@example.org", actor="cli:tester")
    remove_subscriber(service, "bo@example.org", actor="cli:tester")
    assert export_subscribers(service, out) == 0
    assert out.getvalue().splitlines() == [",".join(column.key for column in SubscriberRow.__table__.columns)]


def test_import_reads_a_spreadsheet_export_with_a_byte_order_mark(
    config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], service: Service
) -> None:
    path = tmp_path / "excel.csv"
    path.write_bytes("\ufeffEmail,Name\r\nana@example.org,Ana\u2028Pérez\r\n".encode())
    assert cli(config, "import", str(path), "--confirmed") == 0
    assert rows(service)["ana@example.org"].name == "Ana Pérez"
    assert import_subscribers(service, path, confirmed=True).unchanged == 1


def test_export_cells_never_run_as_spreadsheet_formulas_and_import_reads_them_back(
    config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], service: Service, smtp: SmtpTestServer
) -> None:
    hostile = {
        "=cmd@example.org": '=HYPERLINK("https://evil.example","Click")',
        "+sum@example.org": "+1+1",
        "-minus@example.org": "-2+3",
        "at@example.org": "@SUM(A1)",
        "quote@example.org": "'=already marked",
        "plain@example.org": "O'Brien",
    }
    for email, name in hostile.items():
        add_subscriber(service, email, name=name, confirmed=True)
    assert cli(config, "export") == 0
    exported = capsys.readouterr().out
    records = list(csv.DictReader(io.StringIO(exported)))
    formula_starts = ("=", "+", "-", "@", "\t", "\r")
    for record in records:
        for column, cell in record.items():
            assert not cell.startswith(formula_starts), f"{column} of {record['email']} starts a formula: {cell!r}"
    names = {spreadsheet_value(record["email"]): record["name"] for record in records}
    assert names["=cmd@example.org"] == "'" + hostile["=cmd@example.org"]
    assert names["quote@example.org"] == "''=already marked"
    assert names["plain@example.org"] == "O'Brien"

    # The exported cells, read back by import, give every address and name as they were.
    for email in hostile:
        add_subscriber(service, email, name="Someone else", update=True)
    path = tmp_path / "from-export.csv"
    with path.open("w", encoding="utf-8", newline="") as target:
        writer = csv.writer(target, lineterminator="\n")
        writer.writerow(["email", "name"])
        writer.writerows([record["email"], record["name"]] for record in records)
    assert cli(config, "import", str(path), "--update") == 0
    assert {email: row.name for email, row in rows(service).items()} == hostile
    assert [spreadsheet_value(cell) for cell in ("'@x", "'=x", "''x", "'x", "'")] == ["@x", "=x", "'x", "'x", "'"]


def test_an_unclosed_quote_refuses_only_its_own_row(
    config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], service: Service
) -> None:
    path = write_csv(
        tmp_path / "stray-quote.csv",
        "email,name,themes,cadence,language\n"
        "good1@example.org,Good One,resilience,weekly,en\n"  # line 2
        'bad1@example.org,"Unclosed name,resilience,weekly,en\n'  # line 3: the quote is never closed
        "good2@example.org,Good Two,,daily,es\n"  # line 4
        '"good3@example.org","Three, the\nThird",,weekly,en\n'  # lines 5-6: its quotes are not taken for line 3's
        'bad2@example.org,"Also unclosed\n'  # line 7
        "good4@example.org,Good Four\n",  # line 8
    )
    assert cli(config, "import", str(path), "--confirmed") == 1
    captured = capsys.readouterr()
    assert [line for line in captured.err.splitlines() if line.startswith("refused: ")] == [
        f"refused: {path}: line 3: a quoted field is never closed (the quote opened on this line)",
        f"refused: {path}: line 7: a quoted field is never closed (the quote opened on this line)",
    ]
    assert "6 rows read, 4 added, 0 activated, 0 updated, 0 unchanged, 2 refused" in captured.out
    stored = rows(service)
    assert sorted(stored) == ["good1@example.org", "good2@example.org", "good3@example.org", "good4@example.org"]
    assert (stored["good2@example.org"].name, stored["good2@example.org"].language) == ("Good Two", "es")
    assert stored["good3@example.org"].name == "Three, the Third"


def test_an_unclosed_quote_before_a_long_file_keeps_the_rows_after_it(
    config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], service: Service
) -> None:
    # More than the csv module's 131,072 characters after the stray quote: the field it opens hits that limit first.
    people = "".join(f"person{number}@example.org,Person {number} {'x' * 180}\n" for number in range(700))
    path = write_csv(tmp_path / "long.csv", f'email,name\nbad@example.org,"Unclosed\n{people}')
    assert cli(config, "import", str(path), "--confirmed") == 1
    captured = capsys.readouterr()
    assert f"refused: {path}: line 2: a field is longer than 131,072 characters" in captured.err
    assert "701 rows read, 700 added, 0 activated, 0 updated, 0 unchanged, 1 refused" in captured.out
    stored = rows(service)
    assert len(stored) == 700
    assert stored["person699@example.org"].name == f"Person 699 {'x' * 180}"


def test_an_oversized_field_refuses_only_its_own_row(
    config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], service: Service
) -> None:
    path = write_csv(
        tmp_path / "huge.csv",
        "email,name\n"
        "ana@example.org,Ana\n"  # line 2
        f"big@example.org,{'x' * 2_000_000}\n"  # line 3
        'bo@example.org,"Bo ""B"" Smith"\n',  # line 4
    )
    assert cli(config, "import", str(path), "--confirmed") == 1
    captured = capsys.readouterr()
    assert [line for line in captured.err.splitlines() if line.startswith("refused: ")] == [
        f"refused: {path}: line 3: a field is longer than 131,072 characters",
    ]
    assert "Traceback" not in captured.err
    assert "3 rows read, 2 added, 0 activated, 0 updated, 0 unchanged, 1 refused" in captured.out
    assert {email: row.name for email, row in rows(service).items()} == {
        "ana@example.org": "Ana",
        "bo@example.org": 'Bo "B" Smith',
    }
