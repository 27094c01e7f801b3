"""The editor's view of bounces: what came back, what it did, and whose score it raised (issue #15)."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import httpx
from sqlalchemy import select

from syndication.app.bounces import process_message, verp_address
from syndication.app.editions import deliver, plan_edition
from syndication.app.subscribers import add_subscriber, find_subscriber
from syndication.store import database
from syndication.store.schema import DeliveryRow
from tests.support import NOW
from tests.test_bounces import dsn, plain
from tests.test_web_editor import sign_in
from tests.web_site import web_site


def test_the_editor_sees_what_came_back_what_it_did_and_a_subscribers_score(tmp_path: Path, database_url: str) -> None:
    with web_site(tmp_path, database_url, '[bounces]\naddress = "bounces@news.example.org"\n') as site:
        service = site.service
        for address in ("ana@example.org", "bo@example.org"):
            add_subscriber(service, address, cadence="weekly", confirmed=True)
        plan = plan_edition(service, "weekly", datetime(2024, 5, 1, tzinfo=NOW.tzinfo), NOW - timedelta(days=1))
        assert plan.edition is not None and deliver(service).sent == 2
        bo = find_subscriber(service, "bo@example.org")
        assert bo is not None
        with database.transaction(service.engine) as session:
            bo_delivery = session.scalar(
                select(DeliveryRow.id).where(
                    DeliveryRow.edition_id == plan.edition.id, DeliveryRow.subscriber_id == bo.id
                )
            )
        assert bo_delivery is not None
        report = dsn("bo@example.org", to=verp_address(service, bo_delivery), serial=7)
        assert "suppressed" in process_message(service, report).outcome
        process_message(service, plain("someone@example.net", "bounces@news.example.org", "Out of office",
                                       extra="Auto-Submitted: auto-replied\r\n"))  # fmt: skip

        with site.client() as client:
            assert client.get("/editor/bounces").status_code == 303  # signed out: to the sign-in page
            sign_in(client)
            page = client.get("/editor/bounces")
            assert page.status_code == 200
            text = page.text
            assert "bo@example.org" in text and "hard 5.1.1 (reported later)" in text
            assert f'href="/editor/editions/{plan.edition.id}"' in text
            assert "suppressed" in text and "auto-reply" in text
            person = client.get("/editor/bounces", params={"subscriber": "BO@example.org"}).text
            assert "bo@example.org: bounced, score 5.0 of 5.0" in person
            unknown = client.get("/editor/bounces", params={"subscriber": "nobody@example.org"}).text
            assert "There is no subscriber" in unknown
            edition_page = client.get(f"/editor/editions/{plan.edition.id}").text
            assert "Bounces reported later" in edition_page and "User unknown" in edition_page
            assert_escaped(client)


def assert_escaped(client: httpx.Client) -> None:
    hostile = client.get("/editor/bounces", params={"subscriber": "<script>x</script>@example.org"}).text
    assert "<script>x</script>" not in hostile
