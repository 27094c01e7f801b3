"""Posts that arrive late (GitHub #18): a post gathered after the edition of its window was made, or let out of its
embargo after it, goes in the next edition of every cadence whose readers follow it, once, showing its own date;
an edition shows what it held when it was made, whatever comes later; previews say how many posts are late.

SQLite and PostgreSQL (``database_url``), a real SMTP server (``tests.smtp_server``), the CLI through ``main``.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import IntegrityError

from syndication.app.digests import compose, preview_digest
from syndication.app.editions import SendPlan, change_edition, deliver, edition_email, plan_edition, public_copy
from syndication.app.gathering import import_file
from syndication.app.service import Service
from syndication.app.subscribers import add_subscriber
from syndication.cli import main
from syndication.clock import fixed_clock
from syndication.config import Settings
from syndication.core.editions import EditionAction
from syndication.core.models import Edition, EditionStatus
from syndication.store import database, ledger
from syndication.store.schema import EditionPostRow, PostRow
from tests.smtp_server import SmtpTestServer, smtp_server
from tests.support import NOW, post_record, write_jsonl
from tests.test_delivery import sending
from tests.test_migrations import store_at

WEEK = timedelta(days=7)
FIRST, SECOND, THIRD = (NOW - WEEK, NOW), (NOW, NOW + WEEK), (NOW + WEEK, NOW + 2 * WEEK)
READERS = ("ana@example.org", "bo@example.org", "kita@example.org")


@pytest.fixture
def server() -> Iterator[SmtpTestServer]:
    with smtp_server() as running:
        yield running


@pytest.fixture
def readers(service: Service, tmp_path: Path) -> Service:
    """A post of the first week, and three weekly readers: Ana of everything, Bo of resilience, Kita of climate."""
    add_posts(service, tmp_path, post_record(1, themes=["climate-action"], published="2024-05-28T10:00:00Z",
                                             title="Karachi heat plan"))  # fmt: skip
    for address, themes in zip(READERS, ([], ["resilience"], ["climate-action"]), strict=True):
        add_subscriber(service, address, name="", themes=themes, cadence="weekly", language="en", confirmed=True)
    return service


def add_posts(service: Service, tmp_path: Path, *records: dict[str, Any]) -> None:
    """Import ``records`` as a gather at the service's clock would store them."""
    path = tmp_path / f"posts-{len(list(tmp_path.glob('posts-*')))}.jsonl"
    report = import_file(service, write_jsonl(path, records))
    assert not report.failure, report.failure


def at(service: Service, moment: datetime) -> Service:
    """The same service with its clock at ``moment``."""
    return Service(service.settings, service.engine, fixed_clock(moment))


def send(service: Service, server: SmtpTestServer, window: tuple[datetime, datetime]) -> SendPlan:
    """Make the weekly edition of ``window`` at the service's clock (as the scheduler does once it has ended)
    and deliver it through ``server``."""
    plan = plan_edition(sending(service, server, clock=service.clock()), "weekly", *window)
    assert plan.edition is not None
    deliver(sending(service, server, clock=service.clock()), edition_id=plan.edition.id)
    return plan


def listed(text: str, title: str) -> int:
    """How many times the text part lists a post with this title."""
    return text.count(f"* {title}\n")


def texts_for(server: SmtpTestServer, address: str) -> list[str]:
    """The text part of each message ``address`` got, in the order they came."""
    texts = []
    for received in server.received_for(address):
        body = received.parsed().get_body(("plain",))
        assert body is not None
        texts.append(body.get_content().replace("\r\n", "\n"))
    return texts


def held(service: Service, title: str) -> list[int]:
    """The ids of the editions holding the post with this title."""
    with database.transaction(service.engine) as session:
        query = select(EditionPostRow.edition_id).join(PostRow, PostRow.id == EditionPostRow.post_id)
        return list(session.scalars(query.where(PostRow.title == title)))


def test_a_post_imported_after_its_windows_edition_was_sent_goes_in_the_next_edition_once(
    readers: Service, server: SmtpTestServer, tmp_path: Path
) -> None:
    first = send(at(readers, NOW + timedelta(minutes=1)), server, FIRST)
    assert first.queued == 2  # Ana and Kita: Bo follows nothing of it
    # A source that was down comes back: its post of 30 May (the first week) arrives once that week was sent.
    later = at(readers, NOW + timedelta(days=2))
    late = post_record(2, themes=["resilience"], published="2024-05-30T10:00:00Z", title="Flood barriers in Hamburg")
    on_time = post_record(3, themes=["climate-action"], published="2024-06-03T10:00:00Z", title="Heat pumps")
    add_posts(later, tmp_path, late, on_time)

    second = send(at(readers, NOW + WEEK + timedelta(minutes=1)), server, SECOND)
    assert second.queued == 3  # Bo too: the late post is the one on his theme
    third_service = at(readers, NOW + 2 * WEEK + timedelta(minutes=1))
    add_posts(third_service, tmp_path, post_record(4, themes=["resilience", "climate-action"],
                                                   published="2024-06-10T10:00:00Z", title="Green roofs"))  # fmt: skip
    send(third_service, server, THIRD)

    ana, bo, kita = (texts_for(server, address) for address in READERS)
    assert [listed(text, "Flood barriers in Hamburg") for text in ana] == [0, 1, 0]
    assert [listed(text, "Flood barriers in Hamburg") for text in bo] == [1, 0]  # his first digest, then not again
    assert all(listed(text, "Flood barriers in Hamburg") == 0 for text in kita)  # not on a theme she follows
    assert listed(ana[1], "Heat pumps") == 1 and listed(ana[2], "Green roofs") == 1
    # With its own date, under the window of the edition it is in.
    assert "* Flood barriers in Hamburg\n  May 30, 2024" in bo[0]
    assert bo[0].splitlines()[1] == "June 1, 2024 - June 8, 2024"
    assert held(readers, "Flood barriers in Hamburg") == [second.edition.id]  # type: ignore[union-attr]

    # Every copy shows what was sent: the first week's public copy does not take it in afterwards.
    with_public = sending(readers, server, clock=NOW + 3 * WEEK)
    first_copy = public_copy(with_public, ledger_edition(with_public, first))
    second_copy = public_copy(with_public, ledger_edition(with_public, second))
    assert first_copy is not None and second_copy is not None
    assert "Flood barriers in Hamburg" not in first_copy.text and "Karachi heat plan" in first_copy.text
    assert listed(second_copy.text, "Flood barriers in Hamburg") == 1


def ledger_edition(service: Service, plan: SendPlan) -> Edition:
    """The plan's edition as the store has it now (sent, once delivered)."""
    assert plan.edition is not None
    with database.transaction(service.engine) as session:
        edition = ledger.edition(session, plan.edition.id)
    assert edition is not None and edition.status == EditionStatus.SENT
    return edition


def test_a_post_whose_embargo_lifts_is_in_exactly_one_edition(
    readers: Service, server: SmtpTestServer, tmp_path: Path
) -> None:
    # Both stored in the first week, under embargo: one until 4 June, one until 20 June.
    report = post_record(5, themes=["resilience"], published="2024-06-04T10:00:00Z", title="Embargoed report")
    study = post_record(6, themes=["resilience"], published="2024-06-20T10:00:00Z", title="Embargoed study")
    add_posts(readers, tmp_path, report, study)
    send(at(readers, NOW + timedelta(minutes=1)), server, FIRST)
    # The study's embargo is lifted early: its source now dates it 31 May, a day of the week already sent (and
    # marks this version newer than the first, whose "updated" was its embargoed date).
    lifted = at(readers, NOW + timedelta(days=1))
    add_posts(lifted, tmp_path, post_record(6, themes=["resilience"], published="2024-05-31T10:00:00Z",
                                            updated="2024-06-21T09:00:00Z", title="Embargoed study"))  # fmt: skip
    second = send(at(readers, NOW + WEEK + timedelta(minutes=1)), server, SECOND)
    third = send(at(readers, NOW + 2 * WEEK + timedelta(minutes=1)), server, THIRD)

    bo = texts_for(server, "bo@example.org")
    assert len(bo) == 1  # the second week's: nothing of his in the first, nothing new in the third
    assert listed(bo[0], "Embargoed report") == 1 and listed(bo[0], "Embargoed study") == 1
    assert "* Embargoed study\n  May 31, 2024" in bo[0]
    everything = texts_for(server, "ana@example.org")
    assert sum(listed(text, "Embargoed study") for text in everything) == 1
    assert sum(listed(text, "Embargoed report") for text in everything) == 1
    assert held(readers, "Embargoed study") == held(readers, "Embargoed report") == [second.edition.id]  # type: ignore[union-attr]
    assert third.edition is not None and third.edition.status == EditionStatus.EMPTY


def test_an_edition_made_before_its_window_ends_leaves_what_was_not_yet_published_to_the_next(
    readers: Service, server: SmtpTestServer, tmp_path: Path
) -> None:
    # An operator sends a window that ends tomorrow; a post dated this evening is not published when it is made.
    add_posts(readers, tmp_path, post_record(7, themes=["climate-action"], published="2024-06-01T18:00:00Z",
                                             title="Evening briefing"))  # fmt: skip
    early = (NOW - WEEK, NOW + timedelta(days=1))
    first = send(readers, server, early)
    later = sending(readers, server, clock=NOW + WEEK)
    made = ledger_edition(later, first)
    copy = edition_email(later, made, None, "en")
    assert copy is not None and "Evening briefing" not in copy.text  # as sent, even now that it is published
    second = send(later, server, (early[1], NOW + WEEK))
    kita = texts_for(server, "kita@example.org")
    assert [listed(text, "Evening briefing") for text in kita] == [0, 1]
    assert held(readers, "Evening briefing") == [second.edition.id]  # type: ignore[union-attr]


def test_a_rerun_and_a_dry_run_show_what_the_edition_holds(
    readers: Service, server: SmtpTestServer, tmp_path: Path
) -> None:
    first = send(at(readers, NOW + timedelta(minutes=1)), server, FIRST)
    later = at(readers, NOW + timedelta(days=2))
    add_posts(later, tmp_path, post_record(8, themes=["resilience"], published="2024-05-30T10:00:00Z",
                                           title="Late arrival"))  # fmt: skip
    add_subscriber(later, "new@example.org", name="", themes=["resilience"], cadence="weekly", language="en",
                   confirmed=True)  # fmt: skip
    # The first week again: it holds nothing for a reader of resilience, whatever came since.
    again = plan_edition(sending(later, server, clock=later.clock()), "weekly", *FIRST, dry_run=True)
    assert again.edition is not None and first.edition is not None and again.edition.id == first.edition.id
    assert again.nothing_new == 2 and again.posts == 1
    digest = compose(later, *FIRST, ["resilience"], cadence="weekly")
    assert digest is None
    # The second week, not made yet: a dry run and a preview have the late post in it, and say it is late.
    ahead = at(readers, NOW + WEEK + timedelta(minutes=1))
    dry = plan_edition(ahead, "weekly", *SECOND, dry_run=True)
    assert dry.edition is None and dry.nothing_new == 1 and dry.posts == 1  # Kita: nothing of hers
    preview = preview_digest(ahead, since=SECOND[0], until=SECOND[1], followed=["resilience"], cadence="weekly")
    assert preview is not None and preview.digest.late == 1
    assert listed(preview.email.text, "Late arrival") == 1
    assert preview_digest(ahead, since=SECOND[0], until=SECOND[1], followed=["resilience"]) is None  # by date alone


def test_the_preview_command_shows_and_counts_the_late_posts(
    readers: Service, server: SmtpTestServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    send(at(readers, NOW + timedelta(minutes=1)), server, FIRST)
    add_posts(at(readers, NOW + timedelta(days=2)), tmp_path, post_record(
        9, themes=["resilience"], published="2024-05-30T10:00:00Z", title="Arrived late"))  # fmt: skip
    assert readers.settings.config_path is not None
    config = str(readers.settings.config_path)
    out = tmp_path / "next.txt"
    capsys.readouterr()
    # Bo's next digest, from where the last weekly edition ended up to now (the command's own clock).
    assert main(["--config", config, "digest", "preview", "--subscriber", "bo@example.org", "--format", "text",
                 "--out", str(out)]) == 0  # fmt: skip
    text = out.read_text("utf-8")
    assert listed(text, "Arrived late") == 1 and "* Arrived late\n  May 30, 2024" in text
    line = capsys.readouterr().err
    assert "1 posts in 1 sections (1 shown, 0 held back), 1 late (published before 2024-06-01T12:00:00+00:00)" in line
    # The same window without a cadence: what was published in it, by date alone.
    window = ["--since", NOW.isoformat()]
    assert main(["--config", config, "digest", "preview", "--themes", "resilience", *window]) == 0
    assert "no digest: nothing was published between" in capsys.readouterr().err
    assert main(["--config", config, "digest", "preview", "--cadence", "weekly", "--themes", "resilience", *window,
                 "--format", "text", "--out", str(out)]) == 0  # fmt: skip
    assert ", 1 late (" in capsys.readouterr().err and listed(out.read_text("utf-8"), "Arrived late") == 1


def test_a_post_is_held_by_one_edition_of_each_cadence_whoever_races(readers: Service, tmp_path: Path) -> None:
    plan = plan_edition(at(readers, NOW + timedelta(minutes=1)), "weekly", *FIRST)
    daily = plan_edition(at(readers, NOW + timedelta(minutes=1)), "daily", NOW - timedelta(days=5), NOW)
    assert plan.edition is not None and daily.edition is not None
    assert sorted(held(readers, "Karachi heat plan")) == sorted([plan.edition.id, daily.edition.id])  # one each
    with pytest.raises(IntegrityError), database.transaction(readers.engine) as session:
        other, _ = ledger.create_edition(session, "weekly", NOW, NOW + WEEK, NOW, EditionStatus.SENDING)
        post_id = session.scalar(select(PostRow.id).where(PostRow.title == "Karachi heat plan"))
        assert post_id is not None
        ledger.hold_posts(session, other, [post_id])  # a second weekly edition of the same post: refused
    with database.transaction(readers.engine) as session:
        assert ledger.find_edition(session, "weekly", NOW, NOW + WEEK) is None  # and nothing of it was kept


def test_the_upgrade_gives_existing_editions_their_windows_posts_and_empty_ones_none(settings: Settings) -> None:
    with store_at(settings, "0011") as (engine, _when):

        def stored(moment: datetime) -> object:  # raw SQL: SQLite keeps naive UTC text, PostgreSQL a timestamptz
            return moment.strftime("%Y-%m-%d %H:%M:%S.%f") if engine.dialect.name == "sqlite" else moment

        day = datetime(2024, 1, 1, tzinfo=UTC)
        with engine.begin() as connection:
            for number, published in ((1, day + timedelta(days=1)), (2, day + timedelta(days=8))):
                connection.execute(
                    text(
                        "INSERT INTO posts (id, guid, source, title, url, summary, content_html, language, image_alt,"
                        " published, updated, changed_at, links) VALUES (:id, :guid, 'old', 'Old', 'https://x.e/1',"
                        " 's', '<p>c</p>', 'en', '', :published, :published, :published, '')"
                    ),
                    {"id": number, "guid": f"g{number}", "published": stored(published)},
                )
            # The first week was sent with post 1; the second was empty when it was made: post 2 came after it.
            for number, since, status in ((1, day, "sent"), (2, day + WEEK, "empty")):
                connection.execute(
                    text(
                        "INSERT INTO editions (id, cadence, since, until, status, intro, subject, created_at,"
                        " status_reason) VALUES (:id, 'weekly', :since, :until, :status, '', '', :until, '')"
                    ),
                    {"id": number, "since": stored(since), "until": stored(since + WEEK), "status": status},
                )
        database.upgrade(engine)
        with engine.connect() as connection:
            rows = connection.execute(text("SELECT cadence, post_id, edition_id FROM edition_posts")).all()
    assert [tuple(row) for row in rows] == [("weekly", 1, 1)]  # post 2 goes in the next weekly edition made


def test_a_cancelled_edition_that_reached_nobody_lets_the_next_one_take_its_posts(
    readers: Service, server: SmtpTestServer, tmp_path: Path
) -> None:
    first = plan_edition(at(readers, NOW + timedelta(minutes=1)), "weekly", *FIRST, draft=True)  # waits for approval
    assert first.edition is not None and held(readers, "Karachi heat plan") == [first.edition.id]
    change_edition(readers, first.edition.id, EditionAction.CANCEL, actor="cli:tester")
    assert held(readers, "Karachi heat plan") == []  # nobody got it: it is new to every reader still
    second = send(at(readers, NOW + WEEK + timedelta(minutes=1)), server, SECOND)
    assert second.edition is not None and held(readers, "Karachi heat plan") == [second.edition.id]
    assert [listed(text, "Karachi heat plan") for text in texts_for(server, READERS[0])] == [1]
