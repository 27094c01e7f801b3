"""The audit log (issue 21): who did what, and when. Editors acting over real HTTP, the command line and the use
cases record what they changed in the same transaction as the change (a refused action records nothing); the
editor page lists the events (in the editor's language) and exports them as JSON; ``prune`` lets old ones go as
``[retention] audit_days`` says. SQLite and PostgreSQL."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import delete

from syndication.app.audit import audit_events, record
from syndication.app.editions import plan_edition
from syndication.app.maintenance import prune
from syndication.app.service import Service
from syndication.app.subscribers import SubscriberError, add_subscriber
from syndication.cli import main
from syndication.core.models import EditionStatus
from syndication.store import database
from syndication.store import subscribers as subscriber_store
from syndication.store.schema import AuditEventRow
from tests.support import NOW
from tests.test_web_editor import SINCE, UNTIL, edition_status, sign_in
from tests.web_site import EDITOR, WebSite, form_post, web_site


@pytest.fixture
def site(tmp_path: Path, database_url: str) -> Iterator[WebSite]:
    """A site (nothing sent from the pages) with one weekly subscriber and a draft edition (1) of May 2024."""
    with web_site(tmp_path, database_url, "[web]\nsend_on_approve = false\n") as running:
        add_subscriber(running.service, "ana@example.org", cadence="weekly", confirmed=True)
        plan = plan_edition(running.service, "weekly", SINCE, UNTIL, draft=True)
        assert plan.edition is not None and plan.edition.id == 1
        # Setting the site up made its configured editor an owner of the team, recorded as the service's
        # (``tests/test_team.py`` checks that); these tests start from the editors' own actions.
        assert _actions(running.service) == [("system", "person.added", "person", 1)]
        with database.transaction(running.service.engine) as session:
            session.execute(delete(AuditEventRow))
        yield running


def _actions(service: Service) -> list[tuple[str, str, str, int | None]]:
    return [(e.actor, e.action, e.subject_kind, e.subject_id) for e in audit_events(service, limit=1000)]


def test_an_editors_actions_over_http_are_recorded_as_theirs_and_refusals_are_not(site: WebSite) -> None:
    editor = f"editor:{EDITOR}"
    with site.client() as client:
        sign_in(client)
        page = client.get("/editor/editions/1").text
        saved = form_post(client, "/editor/editions/1/text", {"subject": "May news", "intro": "Hello"}, page)
        assert saved.status_code == 303
        # Saving the same text again changes nothing, so nothing is recorded.
        assert (
            form_post(client, "/editor/editions/1/text", {"subject": "May news", "intro": "Hello"}, page).status_code
            == 303
        )
        tested = form_post(client, "/editor/editions/1/test", {"address": "Desk@Example.org"}, page)
        assert tested.status_code == 303
        refused = form_post(client, "/editor/editions/1/pause", {}, page)  # a draft cannot be paused
        assert refused.status_code == 409
        assert _actions(site.service) == [
            (editor, "edition.test_sent", "edition", 1),
            (editor, "edition.text_changed", "edition", 1),
        ]
        for action in ("approve", "pause", "cancel"):
            assert form_post(client, f"/editor/editions/1/{action}", {}, page).status_code == 303, action
        assert edition_status(site) == EditionStatus.CANCELLED
        again = form_post(client, "/editor/editions/1/approve", {}, page)  # a cancelled edition is over
        assert again.status_code == 409
    events = audit_events(site.service)
    assert [(e.actor, e.action) for e in events] == [
        (editor, "edition.cancelled"),
        (editor, "edition.paused"),
        (editor, "edition.approved"),
        (editor, "edition.test_sent"),
        (editor, "edition.text_changed"),
    ]
    cancelled, paused, approved, tested_event, changed = events
    assert approved.details == {"from": "draft", "to": "sending"}
    assert paused.details == {"from": "sending", "to": "paused"}
    assert cancelled.details == {"from": "paused", "to": "cancelled"}
    assert tested_event.details == {"to": "desk@example.org", "themes": None, "language": "en"}
    assert changed.details == {"old": {"subject": "", "intro": ""}, "new": {"subject": "May news", "intro": "Hello"}}
    assert [e.id for e in events] == sorted((e.id for e in events), reverse=True)


def test_the_audit_page_lists_the_events_in_the_editors_language_and_exports_them(site: WebSite) -> None:
    with site.client() as client:
        assert client.get("/editor/audit").status_code == 303  # signed out: to the sign-in page
        assert client.get("/editor/audit.json").status_code == 401
        sign_in(client)
        page = client.get("/editor/editions/1").text
        form_post(client, "/editor/editions/1/text", {"subject": "May news", "intro": ""}, page)
        assert form_post(client, "/editor/editions/1/approve", {}, page).status_code == 303

        assert 'href="/editor/audit"' in client.get("/editor/").text  # in the editor's navigation
        listed = client.get("/editor/audit")
        assert listed.status_code == 200
        rows = re.findall(r"<tr>\s*<td>.*?</tr>", listed.text, re.S)
        assert len(rows) == 2
        assert "Approved the edition" in rows[0] and f"<td>{EDITOR}</td>" in rows[0]
        assert "Changed the subject or intro" in rows[1] and "“May news”" in rows[1]
        assert 'href="/editor/editions/1"' in rows[0] and 'href="/editor/audit.json"' in listed.text

        spanish = client.get("/editor/audit", params={"lang": "es"}).text
        assert "Aprobó la edición" in spanish and "Cambió el asunto o la introducción" in spanish
        assert "Descargar en JSON" in spanish and "Registro de actividad" in spanish
        assert "Approved the edition" not in spanish

        exported = client.get("/editor/audit.json")
        assert exported.status_code == 200 and "attachment" in exported.headers["content-disposition"]
        body = json.loads(exported.text)
        assert body["events"] == [event.as_json() for event in audit_events(site.service)]
        assert [e["action"] for e in body["events"]] == ["edition.approved", "edition.text_changed"]
        assert body["events"][0]["actor"] == f"editor:{EDITOR}" and body["next_before"] is None
        first = json.loads(client.get("/editor/audit.json", params={"limit": "1"}).text)
        assert [e["action"] for e in first["events"]] == ["edition.approved"]
        rest = json.loads(client.get("/editor/audit.json", params={"before": str(first["next_before"])}).text)
        assert [e["action"] for e in rest["events"]] == ["edition.text_changed"]
        assert client.get("/editor/audit.json", params={"since": "yesterday"}).status_code == 400


def test_the_audit_page_is_paged_newest_first(site: WebSite) -> None:
    with database.transaction(site.service.engine) as session:
        for number in range(1, 56):
            record(session, NOW, f"cli:user{number}", "edition.paused", ("edition", 1))
    with site.client() as client:
        sign_in(client)
        first = client.get("/editor/audit").text
        assert first.count("<tr>\n      <td>") == 50
        assert "user55 (command line)" in first and "user6 (command line)" in first
        assert "user5 (command line)" not in first
        older = re.search(r'href="(/editor/audit\?before=\d+)" rel="next"', first)
        assert older is not None
        second = client.get(older.group(1)).text
        assert second.count("<tr>\n      <td>") == 5 and "user5 (command line)" in second
        assert 'rel="next"' not in second


def test_erasing_from_the_command_line_records_the_operating_system_user_and_no_address(
    config_path: Path, service: Service, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("getpass.getuser", lambda: "operator")
    added = add_subscriber(service, "gone@example.org", confirmed=True)
    assert main(["--config", str(config_path), "subscribers", "remove", "gone@example.org"]) == 0
    assert main(["--config", str(config_path), "subscribers", "remove", "gone@example.org"]) == 0  # nothing more
    events = audit_events(service)
    assert [(e.actor, e.action, e.subject_kind, e.subject_id) for e in events] == [
        ("cli:operator", "subscriber.erased", "subscriber", added.subscriber.id)
    ]
    assert events[0].details == {
        "address_sha256": hashlib.sha256(b"gone@example.org").hexdigest(),
        "outcome": "removed",
    }
    capsys.readouterr()
    assert main(["--config", str(config_path), "audit", "--json"]) == 0
    printed = capsys.readouterr().out
    assert json.loads(printed) == [events[0].as_json()] and "gone@example.org" not in printed
    assert main(["--config", str(config_path), "audit"]) == 0
    assert "cli:operator  subscriber.erased  subscriber" in capsys.readouterr().out


def test_a_reactivation_is_recorded_with_its_reason_and_a_refused_one_is_not(service: Service) -> None:
    added = add_subscriber(service, "back@example.org", confirmed=True)
    with database.transaction(service.engine) as session:
        subscriber_store.set_status(session, added.subscriber.id, "unsubscribed", NOW)
    with pytest.raises(SubscriberError):
        add_subscriber(service, "back@example.org", confirmed=True, actor="cli:ops")  # no --reactivate
    assert audit_events(service) == []
    done = add_subscriber(
        service, "back@example.org", confirmed=True, reactivate=True, reason="asked by  phone", actor="cli:ops"
    )
    assert done.action == "reactivated"
    [event] = audit_events(service)
    assert (event.actor, event.action, event.subject_id) == ("cli:ops", "subscriber.reactivated", added.subscriber.id)
    assert event.details == {"reason": "asked by phone"}


def test_prune_removes_the_events_older_than_audit_days(service: Service) -> None:
    with database.transaction(service.engine) as session:
        record(session, NOW - timedelta(days=731), "system", "edition.paused", ("edition", 1))
        record(session, NOW - timedelta(days=729), "editor:ana", "edition.resumed", ("edition", 1))
    keep_all = service.settings.retention.model_copy(update={"audit_days": 0})
    kept = prune(dataclasses.replace(service, settings=service.settings.model_copy(update={"retention": keep_all})))
    assert kept.audit_before is None and len(audit_events(service)) == 2
    dry = prune(service, dry_run=True)
    assert dry.audit_events == 1 and len(audit_events(service)) == 2
    done = prune(service)
    assert done.audit_before == NOW - timedelta(days=730) and done.audit_events == 1
    assert [e.action for e in audit_events(service)] == ["edition.resumed"]
