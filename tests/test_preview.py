"""``digest preview`` is what ``digest send`` sends: the same headers, and counts that say what the email shows."""

from __future__ import annotations

import re
from datetime import timedelta
from email.message import EmailMessage
from email.parser import BytesParser
from email.policy import default
from pathlib import Path

import pytest

from syndication.app.digests import PREVIEW_RECIPIENT, preview_digest
from syndication.app.editions import deliver, plan_edition
from syndication.app.gathering import import_file
from syndication.app.service import Service
from syndication.app.subscribers import add_subscriber
from syndication.cli import main
from tests.smtp_server import smtp_server
from tests.support import NOW, post_record, write_config, write_jsonl
from tests.test_delivery import SINCE, UNTIL, sending

# What differs between the preview and a reader's message by design: the recipient, the moment and the message.
PER_MESSAGE = {"to", "date", "message-id"}


@pytest.fixture
def config_path(tmp_path: Path, database_url: str) -> Path:
    """The fixture config with sections long enough that the size budget, not the cap, cuts a crowded week."""
    return write_config(tmp_path, database_url, "[digest]\nsection_cap = 200\n")


def parsed(message: bytes) -> EmailMessage:
    result = BytesParser(policy=default).parsebytes(message)
    assert isinstance(result, EmailMessage)
    return result


def unfolded_headers(message: bytes) -> dict[str, str]:
    """The header section as name -> value (unfolded, as written: not decoded)."""
    head = message.split(b"\r\n\r\n", 1)[0].decode("ascii")
    return {
        name.lower(): " ".join(value.split())
        for name, value in re.findall(r"^([!-9;-~]+):(.*(?:\r\n[ \t].*)*)", head, flags=re.MULTILINE)
    }


def post_links(html: str) -> int:
    return html.count('class="post-title"')


@pytest.fixture
def one_reader(service: Service, tmp_path: Path) -> Service:
    records = [
        post_record(1, themes=["climate-action"], published="2024-05-28T10:00:00Z", title="Karachi heat plan"),
        post_record(2, themes=["resilience"], published="2024-05-29T10:00:00Z", title="Sponge cities"),
    ]
    import_file(service, write_jsonl(tmp_path / "posts.jsonl", records))
    add_subscriber(service, "bo@example.org", name="", themes=[], cadence="weekly", language="en", confirmed=True)
    return service


def test_the_preview_has_the_headers_of_a_sent_digest(one_reader: Service) -> None:
    with smtp_server() as server:
        service = sending(one_reader, server)
        plan_edition(service, "weekly", SINCE, UNTIL)
        assert deliver(service).sent == 1
        sent = server.received_for("bo@example.org")[0].data
        preview = preview_digest(service, since=SINCE, until=UNTIL, cadence="weekly")
    assert preview is not None
    sent_headers, preview_headers = unfolded_headers(sent), unfolded_headers(preview.message)
    assert set(sent_headers) == set(preview_headers)
    for name in ("from", "subject", "mime-version", "list-id", "list-unsubscribe-post", "content-type", "reply-to"):
        assert preview_headers.get(name) == sent_headers.get(name), name
    assert {"list-id", "list-unsubscribe", "list-unsubscribe-post", "date"} <= set(preview_headers)
    # The unsubscribe header is the sent one's but for the reader's own link (the preview's points at the site).
    base = service.settings.site.base_url
    assert preview_headers["list-unsubscribe"].startswith(f"<{base}/unsubscribe/preview>")
    own = re.sub(r"<https://[^>]*/unsubscribe/[^>]*>", "<LINK>", sent_headers["list-unsubscribe"])
    assert own == re.sub(r"<https://[^>]*/unsubscribe/[^>]*>", "<LINK>", preview_headers["list-unsubscribe"])
    message = parsed(preview.message)
    assert message["To"] == PREVIEW_RECIPIENT
    assert [part.get_content_type() for part in message.iter_parts()] == ["text/plain", "text/html"]
    html = message.get_body(("html",))
    assert html is not None and f"{base}/unsubscribe/preview" in html.get_content()


def test_the_preview_of_the_next_window_has_a_post_that_came_after_the_last_edition(
    one_reader: Service, tmp_path: Path
) -> None:
    with smtp_server() as server:
        service = sending(one_reader, server)
        plan_edition(service, "weekly", SINCE, UNTIL)
        assert deliver(service).sent == 1
        sent = server.received_for("bo@example.org")[0].data
        # A post of the week just sent arrives afterwards (its source was down).
        late = post_record(3, themes=["resilience"], published="2024-05-30T10:00:00Z", title="Flood barriers")
        import_file(service, write_jsonl(tmp_path / "late.jsonl", [late]))
        next_week = preview_digest(service, since=UNTIL, until=UNTIL + timedelta(days=7), cadence="weekly")
        sent_week = preview_digest(service, since=SINCE, until=UNTIL, cadence="weekly")
    assert next_week is not None and sent_week is not None
    assert next_week.digest.late == next_week.digest.post_count == 1
    assert "Flood barriers" in next_week.email.text and "May 30, 2024" in next_week.email.text
    # The week already sent previews as it was sent: without the newcomer, the same subject and posts.
    assert sent_week.digest.late == 0 and "Flood barriers" not in sent_week.email.text
    subject = "2 new posts on Climate action and Resilience"
    assert parsed(sent)["Subject"] == parsed(sent_week.message)["Subject"] == subject
    # Without a cadence a preview is of the posts published in the window: the late one is not among them.
    assert preview_digest(service, since=UNTIL, until=UNTIL + timedelta(days=7)) is None


def test_the_preview_is_sealed_by_the_mailer(one_reader: Service) -> None:
    # Dated when it is made (the service's clock), not at the window's end.
    preview = preview_digest(one_reader, since=SINCE - timedelta(days=1), until=UNTIL - timedelta(days=1))
    assert preview is not None
    assert preview.message.count(b"\r\nDate: ") + preview.message.startswith(b"Date: ") == 1
    date = parsed(preview.message)["Date"].datetime
    assert abs(date - one_reader.clock()) < timedelta(seconds=5)


@pytest.fixture
def crowded(service: Service, tmp_path: Path) -> Service:
    """311 posts in the week before NOW, over the three themes, each with a long summary."""
    themes = ["climate-action", "resilience", "circular-economy"]
    records = [
        post_record(
            n,
            themes=[themes[n % 3]],
            published=(NOW - timedelta(minutes=30 * n + 1)).isoformat(),
            title=f"A long title for post number {n} about cities",
            summary="Summary words " * 12,
        )
        for n in range(1, 312)
    ]
    import_file(service, write_jsonl(tmp_path / "posts.jsonl", records))
    return service


def test_counts_are_what_the_email_shows_and_the_budget_is_used(crowded: Service) -> None:
    preview = preview_digest(crowded, since=NOW - timedelta(days=7), until=NOW)
    assert preview is not None
    digest, budget = preview.digest, crowded.settings.digest.max_html_bytes
    size = len(preview.email.html.encode("utf-8"))
    assert digest.post_count == 311
    assert digest.shown_count == post_links(preview.email.html) < 311
    assert digest.held_back_count == 311 - digest.shown_count
    assert [int(n) for n in re.findall(r"(\d+) more on ", preview.email.html)] == [
        section.more for section in digest.sections if section.more
    ]
    assert budget - 3_000 <= size <= budget, size
    assert preview.email.problems == ()


def test_the_command_line_says_how_many_are_shown_and_held_back(
    crowded: Service, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert crowded.settings.config_path is not None
    out = tmp_path / "digest.html"
    window = ["--since", (NOW - timedelta(days=7)).isoformat(), "--until", NOW.isoformat()]
    assert main(["--config", str(crowded.settings.config_path), "digest", "preview", *window, "--out", str(out)]) == 0
    shown = post_links(out.read_text("utf-8"))
    line = capsys.readouterr().err
    match = re.search(r"(\d+) posts in (\d+) sections \((\d+) shown, (\d+) held back\)", line)
    assert match, line
    assert (int(match[1]), int(match[2]), int(match[3]), int(match[4])) == (311, 3, shown, 311 - shown)
