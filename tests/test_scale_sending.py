"""Every core sends mail (issue 22): an edition's variants are rendered once and shared by every sender through
the store; an edition whose text or posts change is rendered anew, never shown stale."""

from __future__ import annotations

import dataclasses
from collections import Counter
from datetime import datetime, timedelta
from email import message_from_bytes
from email.policy import default

import pytest
from sqlalchemy import event, func, select, text

from syndication.app.editions import MessageBuilder, change_edition, deliver, plan_edition, set_edition_text
from syndication.app.service import Service
from syndication.app.subscribers import add_subscriber
from syndication.core.editions import EditionAction
from syndication.delivery.sender import Outgoing
from syndication.mailing.render import RenderedEmail
from syndication.store import database, ledger
from syndication.store.schema import DeliveryAttemptRow, DeliveryRow, EditionVariantRow
from tests.smtp_server import smtp_server
from tests.test_delivery import SINCE, UNTIL, sending
from tests.test_delivery import audience as audience


def _claims(service: Service, edition_id: int) -> list[ledger.Claim]:
    with database.transaction(service.engine) as session:
        rows = session.execute(
            select(DeliveryRow.id, DeliveryRow.subscriber_id, DeliveryRow.message_id)
            .where(DeliveryRow.edition_id == edition_id)
            .order_by(DeliveryRow.id)
        ).all()
    return [ledger.Claim(d, edition_id, s, m, 0) for d, s, m in rows]


class _CountingBuilder(MessageBuilder):
    """A builder (a sender's, in its own process) that counts the variants it renders itself."""

    def __init__(self, service: Service) -> None:
        super().__init__(service)
        self.rendered = 0
        render = self.renderer.render_digest

        def counted(*args: object, **kwargs: object) -> RenderedEmail:
            self.rendered += 1
            return render(*args, **kwargs)  # type: ignore[arg-type]

        self.renderer.render_digest = counted  # type: ignore[method-assign]


def _variants(service: Service) -> int:
    with database.transaction(service.engine) as session:
        return session.scalar(select(func.count()).select_from(EditionVariantRow)) or 0


def test_a_second_sender_reads_the_variants_the_first_rendered(audience: Service) -> None:
    with smtp_server() as server:
        service = sending(audience, server)
        plan = plan_edition(service, "weekly", SINCE, UNTIL)
        assert plan.edition is not None
        claims = _claims(service, plan.edition.id)
        first, second = _CountingBuilder(service), _CountingBuilder(service)
        built_first = first.build(claims)
        assert first.rendered == 3 and _variants(service) == 3  # three variants (es everything, en x2)
        built_second = second.build(claims)
        assert second.rendered == 0  # read from the store, not rendered again
        assert all(isinstance(built, Outgoing) for built in built_first + built_second)
        # What the second read is what the first rendered, field by field (its digest aside: previews use it).
        for themes, language in ((None, "es"), (("resilience",), "en"), (("climate-action",), "en")):
            rendered = first.edition_email(plan.edition, themes, language)
            read = _CountingBuilder(service).shared_email(plan.edition, themes, language)
            assert rendered is not None and read is not None
            assert dataclasses.replace(rendered, digest=None) == read
        assert _variants(service) == 3


def test_a_changed_subject_is_rendered_anew(audience: Service) -> None:
    with smtp_server() as server:
        service = sending(audience, server)
        plan = plan_edition(service, "weekly", SINCE, UNTIL, draft=True)
        assert plan.edition is not None
        edition_id = plan.edition.id
        claims = _claims(service, edition_id)
        before = _CountingBuilder(service).build(claims)
        set_edition_text(service, edition_id, subject="This week, edited", intro="", actor="cli:test")
        change_edition(service, edition_id, EditionAction.APPROVE, actor="cli:test")
        builder = _CountingBuilder(service)
        after = builder.build(claims)
        assert builder.rendered == 3 and _variants(service) == 6
        for old, new in zip(before, after, strict=True):
            assert isinstance(old, Outgoing) and isinstance(new, Outgoing)
            assert message_from_bytes(new.message, policy=default)["Subject"] == "This week, edited"
            assert message_from_bytes(old.message, policy=default)["Subject"] != "This week, edited"


def test_nothing_new_is_kept_as_such(audience: Service) -> None:
    with smtp_server() as server:
        service = sending(audience, server)
        plan = plan_edition(service, "weekly", SINCE, UNTIL)
        assert plan.edition is not None
        builder = _CountingBuilder(service)
        assert builder.shared_email(plan.edition, ("circular-economy",), "en") is None
        again = _CountingBuilder(service)
        assert again.shared_email(plan.edition, ("circular-economy",), "en") is None
        assert again.rendered == 0


def test_sent_messages_are_recorded_in_groups_and_once(audience: Service) -> None:
    for number in range(30):
        add_subscriber(audience, f"many{number}@example.org", cadence="weekly", language="en", confirmed=True)
    commits: list[int] = []

    def committed(_connection: object) -> None:
        commits.append(1)

    event.listen(audience.engine, "commit", committed)
    with smtp_server() as server:
        service = sending(audience, server, connections=4)
        plan = plan_edition(service, "weekly", SINCE, UNTIL)
        commits.clear()
        report = deliver(service)
        received = Counter(message.recipients[0] for message in server.messages)
    event.remove(audience.engine, "commit", committed)
    assert report.sent == plan.queued == 33 and len(received) == 33 and max(received.values()) == 1
    # One transaction per outcome and one per in-flight mark made 66 for 33 messages, besides claims and the
    # rest; marks and outcomes now share transactions (each outcome before its connection's next first byte).
    assert len(commits) < 2 * plan.queued, len(commits)
    with database.transaction(service.engine) as session:
        rows = session.execute(select(DeliveryRow.status, DeliveryRow.attempts, DeliveryRow.sent_at)).all()
        attempts = session.scalar(select(func.count()).select_from(DeliveryAttemptRow))
    assert {(status, tries) for status, tries, _ in rows} == {("sent", 1)}
    assert all(sent_at is not None for *_, sent_at in rows)
    assert attempts == 33


def claims_with_one_taken(service: Service, now: datetime) -> tuple[list[ledger.Claim], list[ledger.Claim]]:
    """Every queued delivery claimed by sender "one" under a lease that has run out, and the one of them sender
    "two" then claimed."""
    with database.transaction(service.engine) as session:
        claims, _ = ledger.claim(session, "one", now, lease=timedelta(seconds=-1), limit=10, max_crashes=3)
    with database.transaction(service.engine) as session:  # the lease ran out: another sender takes one
        taken, _ = ledger.claim(session, "two", now, lease=timedelta(minutes=5), limit=1, max_crashes=3)
    return list(claims), list(taken)


def test_a_group_records_only_the_leases_still_held(audience: Service) -> None:
    with smtp_server() as server:
        service = sending(audience, server)
        plan_edition(service, "weekly", SINCE, UNTIL)
        now = service.clock()
        claims, taken = claims_with_one_taken(service, now)
        assert len(claims) == 3 and len(taken) == 1
        with database.transaction(service.engine) as session:
            marked = ledger.begin_attempts(session, claims, "one", now, lease=timedelta(minutes=5))
            kept = ledger.record_sent(session, [(claim, now) for claim in claims], "one")
        assert marked == kept == {claim.delivery_id for claim in claims} - {taken[0].delivery_id}
        with database.transaction(service.engine) as session:
            status = session.scalar(select(DeliveryRow.status).where(DeliveryRow.id == taken[0].delivery_id))
        assert status == "claimed"  # the newer claim's, never overwritten


def test_one_group_commit_records_the_sent_and_marks_the_next_only_under_leases_still_held(
    audience: Service,
) -> None:
    """``record_sent_and_begin``: one statement on PostgreSQL, the two functions elsewhere; the same outcome."""
    with smtp_server() as server:
        service = sending(audience, server)
        plan_edition(service, "weekly", SINCE, UNTIL)
        now = service.clock()
        claims, taken = claims_with_one_taken(service, now)
        assert len(claims) == 3 and taken[0].delivery_id == claims[0].delivery_id
        sent, marking = claims[:2], claims[2:]
        with service.engine.begin() as connection:
            kept, marked = ledger.record_sent_and_begin(
                connection, [(claim, now) for claim in sent], marking, "one", now, lease=timedelta(minutes=5)
            )
        assert kept == {sent[1].delivery_id} and marked == {marking[0].delivery_id}
        with database.transaction(service.engine) as session:
            rows = dict(session.execute(select(DeliveryRow.id, DeliveryRow.status)).all())
            in_flight = session.scalar(select(DeliveryRow.in_flight_at).where(DeliveryRow.id == marking[0].delivery_id))
            attempts = session.execute(select(DeliveryAttemptRow.delivery_id, DeliveryAttemptRow.outcome)).all()
        assert rows == {sent[0].delivery_id: "claimed", sent[1].delivery_id: "sent", marking[0].delivery_id: "claimed"}
        assert in_flight is not None and attempts == [(sent[1].delivery_id, "sent")]


def test_a_pipelined_sender_never_claims_again_what_it_holds(audience: Service) -> None:
    with smtp_server() as server:
        service = sending(audience, server)
        plan_edition(service, "weekly", SINCE, UNTIL)
        now = service.clock()
        with database.transaction(service.engine) as session:  # its leases ran out before it could renew them
            first, _ = ledger.claim(session, "one", now, lease=timedelta(seconds=-1), limit=2, max_crashes=3)
        held = {claim.delivery_id for claim in first}
        with database.transaction(service.engine) as session:
            second, _ = ledger.claim(
                session, "one", now, lease=timedelta(minutes=5), limit=10, max_crashes=3, holding=held
            )
        # Only the third delivery: the two it holds stay its own, though their leases ran out.
        assert len(first) == 2 and len(second) == 1 and second[0].delivery_id not in held


def test_renewing_never_waits_for_a_row_another_transaction_holds(audience: Service) -> None:
    # Renewal and a sender's own group commit once locked the same rows in different orders and deadlocked:
    # on PostgreSQL a renewal skips a locked row (renewed at the next beat) instead of waiting for it.
    if audience.engine.dialect.name != "postgresql":
        pytest.skip("SQLite has one writer at a time: no row locks to skip")
    with smtp_server() as server:
        service = sending(audience, server)
        plan_edition(service, "weekly", SINCE, UNTIL)
        now = service.clock()
        with database.transaction(service.engine) as session:
            claims, _ = ledger.claim(session, "one", now, lease=timedelta(minutes=1), limit=10, max_crashes=3)
        locked = claims[0].delivery_id
        with service.engine.connect() as holder:  # another transaction holds the first row until the end
            holder.execute(select(DeliveryRow.id).where(DeliveryRow.id == locked).with_for_update())
            with database.transaction(service.engine) as session:
                session.execute(text("SET LOCAL lock_timeout = '5s'"))  # waiting would fail here, not hang
                lost = ledger.renew(session, claims, "one", now, lease=timedelta(minutes=10))
            holder.rollback()
        with database.transaction(service.engine) as session:
            leases = dict(session.execute(select(DeliveryRow.id, DeliveryRow.lease_until)).all())
        assert lost == set() and len(claims) == 3
        assert leases[locked] == now + timedelta(minutes=1)  # skipped: left for the next beat
        assert {leases[claim.delivery_id] for claim in claims[1:]} == {now + timedelta(minutes=10)}
