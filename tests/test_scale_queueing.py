"""Queueing an edition at any list size (issue 22): the readers are grouped and queued by the database, in one
``INSERT … SELECT``, never loaded row by row; what reaches each reader is what it was."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr
from sqlalchemy import event, select, text

from syndication.app.editions import plan_edition
from syndication.app.gathering import import_file
from syndication.app.service import Service
from syndication.app.subscribers import add_subscriber
from syndication.store import database
from syndication.store import subscribers as subscriber_store
from syndication.store.schema import DeliveryRow
from tests.support import NOW, post_record, write_jsonl

SINCE, UNTIL = NOW - timedelta(days=7), NOW


@pytest.fixture
def readers(service: Service, tmp_path: Path) -> Service:
    """Posts on two themes in the week before NOW (one in Spanish) and readers in five groups, one of which has
    nothing new."""
    settings = service.settings.model_copy(update={"secret_key": SecretStr("test-signing-key-" + "x" * 16)})
    service = Service(settings, service.engine, service.clock)
    records = [
        post_record(1, themes=["climate-action"], published="2024-05-28T10:00:00Z", title="Karachi heat plan"),
        post_record(2, themes=["resilience"], published="2024-05-29T10:00:00Z", title="Ciudades esponja",
                    language="es"),
    ]  # fmt: skip
    import_file(service, write_jsonl(tmp_path / "posts.jsonl", records))
    groups: list[tuple[list[str], str]] = [
        ([], "es"),  # everything
        (["resilience"], "en"),
        (["climate-action"], "en"),
        (["circular-economy"], "en"),  # nothing new for them
        (["resilience", "climate-action"], "es"),
    ]
    for number in range(25):
        themes, language = groups[number % len(groups)]
        add_subscriber(service, f"reader{number}@example.org", name=f"Reader {number}", themes=themes,
                       cadence="weekly", language=language, confirmed=True)  # fmt: skip
    add_subscriber(service, "monthly@example.org", cadence="monthly", language="en", confirmed=True)
    add_subscriber(service, "pending@example.org", cadence="weekly", language="en")  # not confirmed: not queued
    return service


def test_readers_are_grouped_by_the_database(readers: Service) -> None:
    with database.transaction(readers.engine) as session:
        groups = subscriber_store.reader_groups(session, "weekly")
    assert {(group.themes, group.language, group.count) for group in groups} == {
        (None, "es", 5),
        (("resilience",), "en", 5),
        (("climate-action",), "en", 5),
        (("circular-economy",), "en", 5),
        (("climate-action", "resilience"), "es", 5),  # stored in order
    }
    assert len({group.key for group in groups}) == len(groups)


def test_an_edition_is_queued_without_loading_a_subscriber(readers: Service) -> None:
    statements: list[str] = []

    def seen(*args: Any) -> None:
        statements.append(args[2])

    event.listen(readers.engine, "before_cursor_execute", seen)
    try:
        plan = plan_edition(readers, "weekly", SINCE, UNTIL)
    finally:
        event.remove(readers.engine, "before_cursor_execute", seen)
    assert (plan.recipients, plan.queued, plan.nothing_new) == (25, 20, 5)
    assert len(plan.variants) == 4
    # Nothing read a subscriber's address or name: the groups were counted and the rows queued by the database.
    reading_rows = [s for s in statements if re.search(r"subscribers\.(email|name)\b", s)]
    assert reading_rows == []
    with database.transaction(readers.engine) as session:
        rows = session.execute(
            text(
                "SELECT s.email, d.message_id, d.status, d.attempts, d.lease_token FROM deliveries d"
                " JOIN subscribers s ON s.id = d.subscriber_id ORDER BY d.id"
            )
        ).all()
        queued = list(session.scalars(select(DeliveryRow.subscriber_id).order_by(DeliveryRow.id)))
    subscriber_ids = [subscriber_id for subscriber_id in queued if subscriber_id is not None]
    assert len(subscriber_ids) == len(queued)
    assert subscriber_ids == sorted(subscriber_ids)  # queued in the list's order
    emails = [email for email, *_ in rows]
    assert len(emails) == 20 and len(set(emails)) == 20
    assert all(f"reader{n}@example.org" not in emails for n in range(3, 25, 5))  # circular-economy: nothing new
    assert "monthly@example.org" not in emails and "pending@example.org" not in emails
    edition_id = plan.edition.id if plan.edition else 0
    ids = [message_id for _, message_id, *_ in rows]
    assert len(set(ids)) == len(ids)
    assert all(re.fullmatch(rf"edition-{edition_id}\.\d+\.[0-9a-f]{{12}}", message_id) for message_id in ids)
    assert {(status, attempts, token) for _, _, status, attempts, token in rows} == {("queued", 0, 0)}


def test_running_it_again_queues_nobody_twice(readers: Service) -> None:
    first = plan_edition(readers, "weekly", SINCE, UNTIL)
    add_subscriber(readers, "late@example.org", cadence="weekly", language="en", confirmed=True)
    again = plan_edition(readers, "weekly", SINCE, UNTIL)
    assert (first.queued, again.queued, again.recipients) == (20, 1, 26)
    with database.transaction(readers.engine) as session:
        assert session.scalar(text("SELECT count(*) FROM deliveries")) == 21


def test_a_dry_run_counts_the_groups_and_writes_nothing(readers: Service) -> None:
    plan = plan_edition(readers, "weekly", SINCE, UNTIL, dry_run=True)
    assert (plan.recipients, plan.queued, plan.nothing_new, len(plan.variants)) == (25, 0, 5, 4)
    with database.transaction(readers.engine) as session:
        assert session.scalar(text("SELECT count(*) FROM deliveries")) == 0
