"""The edition life cycle (GitHub #17) as editors see it: each defect of the issue through the command line and the
editor's pages side by side, over real HTTP with a signed-in editor and CSRF forms, a real SMTP server (or a
closed port), SQLite and PostgreSQL. ``editions list``, ``status`` and the pages must tell the same story: a
re-run strands nothing, an empty window is not published nor emailed about, ``digest send`` under
``require_approval`` makes a draft the page approves and sends, every deferral keeps its reason (grouped, with its
count), and what the page previews for a subscriber is what that subscriber is sent."""

from __future__ import annotations

import errno
import html
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from email.message import EmailMessage
from itertools import takewhile
from pathlib import Path

import httpx
import pytest

from syndication.app.subscribers import add_subscriber, find_subscriber
from syndication.cli import main
from syndication.core.models import DeliveryStatus, EditionStatus
from syndication.store import database, ledger
from tests.support import wait_for
from tests.test_editions_lifecycle import closed_port
from tests.test_web_editor import SINCE, UNTIL, edition_status, sign_in
from tests.web_site import KEY, WebSite, form_post, web_site

WINDOW = ["--since", SINCE.isoformat(), "--until", UNTIL.isoformat()]
# A week after the fixture posts (all of May 2024): nothing was published in it.
EMPTY_WINDOW = ["--since", UNTIL.isoformat(), "--until", UNTIL.replace(day=8).isoformat()]
APPROVAL = '[digest]\nrequire_approval = true\napproval_emails = ["editor@example.org"]\n'
_COUNT = re.compile(rf"(\d+) ({'|'.join(DeliveryStatus)})\b")


@dataclass
class Site:
    """The running site, the configuration file the command line reads, and what the command line printed."""

    web: WebSite
    config: Path
    capsys: pytest.CaptureFixture[str]

    def cli(self, *args: str, config: Path | None = None) -> tuple[int, str]:
        """Run ``syndication ARGS`` on the site's store; its exit status and standard output."""
        self.capsys.readouterr()
        status = main(["--config", str(config or self.config), *args])
        return status, self.capsys.readouterr().out


@pytest.fixture(autouse=True)
def keyed(monkeypatch: pytest.MonkeyPatch) -> None:
    """The command line signs links with the site's own key, so the links it sends work on the site."""
    monkeypatch.setenv("SYNDICATION_SECRET_KEY", KEY)


@contextmanager
def lifecycle_site(
    tmp_path: Path, database_url: str, capsys: pytest.CaptureFixture[str], extra: str = ""
) -> Iterator[Site]:
    """A running site with three weekly subscribers: Ana (everything, English), Bo (resilience, Spanish) and Gone,
    whom the SMTP server refuses (550 5.1.1); no edition yet."""
    with web_site(tmp_path, database_url, extra, reject=["gone@example.org"]) as site:
        add_subscriber(site.service, "ana@example.org", cadence="weekly", confirmed=True)
        add_subscriber(site.service, "bo@example.org", themes="resilience", cadence="weekly", language="es",
                       confirmed=True)  # fmt: skip
        add_subscriber(site.service, "gone@example.org", cadence="weekly", confirmed=True)
        yield Site(site, tmp_path / "config.toml", capsys)


# --- What each driver shows of an edition ---------------------------------------------------------------------


@dataclass(frozen=True)
class Shown:
    """An edition as one driver shows it: its status, its deliveries per status (those there are), the grouped
    reasons of those that did not go ("3 deferred: Connection refused (127.0.0.1:9)") and the page or output."""

    status: str
    counts: dict[str, int]
    reasons: list[str]
    text: str


def _counts(summary: str) -> dict[str, int]:
    return {status: int(count) for count, status in _COUNT.findall(summary)}


def edition_page(client: httpx.Client, edition_id: int, **params: str) -> Shown:
    """The editor's page of the edition."""
    answer = client.get(f"/editor/editions/{edition_id}", params=params)
    assert answer.status_code == 200, answer.text
    page = answer.text
    status = re.search(r"data-edition-status>(\w+)<", page)
    assert status, page
    counts = {name: int(count) for name, count in re.findall(r'data-count="(\w+)">(\d+)<', page) if int(count)}
    reasons = [html.unescape(line) for line in re.findall(r'<li data-reason="\w+">([^<]*)</li>', page)]
    return Shown(status.group(1), counts, reasons, page)


def actions_of(page: str, edition_id: int) -> list[str]:
    """The actions the edition page offers, as the forms it holds post them."""
    return re.findall(rf'action="/editor/editions/{edition_id}/(approve|pause|resume|cancel)\?', page)


def dashboard_row(client: httpx.Client, edition_id: int) -> Shown:
    """The edition's row in the dashboard's last editions."""
    page = client.get("/editor/").text
    row = re.search(rf'<a href="/editor/editions/{edition_id}">Edition {edition_id}</a></th>(.*?)</tr>', page, re.S)
    assert row, page
    cells = row.group(1)
    status = re.search(r'class="status status-\w+">(\w+)<', cells)
    assert status, cells
    numbers = [int(n) for n in re.findall(r'<td class="number">(\d+)</td>', cells)]
    counts = dict(zip(("sent", "waiting", "given up"), numbers, strict=True))
    reasons = [html.unescape(line) for line in re.findall(r'<small data-reason="\w+">([^<]*)</small>', cells)]
    return Shown(status.group(1), {name: n for name, n in counts.items() if n}, reasons, cells)


_LISTED = re.compile(
    r"^\s*(?P<id>\d+)\s+\w+\s+\S+ \S+ \.\. \S+ \S+\s+(?P<status>\w+)\s+(?P<summary>.*?)(?:  \((?P<reason>[^)]*)\))?$"
)

# A reason under an edition: indented to its cadence, deeper than the widest id the list right-aligns.
_REASON_LINE = re.compile(r"^ {7}\d+ \w+: ")


def listed(site: Site, edition_id: int) -> Shown:
    """The edition as ``editions list`` prints it (``text``: its line and the indented ones under it)."""
    code, out = site.cli("editions", "list")
    assert code == 0
    lines = out.splitlines()
    for index, line in enumerate(lines):
        found = _LISTED.match(line)
        if found and found["id"] == str(edition_id):
            under = [below.strip() for below in takewhile(_REASON_LINE.match, lines[index + 1 :])]
            return Shown(found["status"], _counts(found["summary"]), under, "\n".join([line, *under]))
    raise AssertionError(f"edition {edition_id} is not listed:\n{out}")


def status_of(site: Site, edition_id: int, cadence: str = "weekly") -> tuple[Shown, int]:
    """The cadence's last edition as ``status`` prints it (it must be ``edition_id``), and the queue depth."""
    code, out = site.cli("status")
    assert code == 0
    lines = out.splitlines()
    queue = re.search(r"^queue: (\d+) deliveries waiting to be sent$", out, re.M)
    assert queue, out
    for index, line in enumerate(lines):
        found = re.match(rf"^  {cadence}\s+#(\d+) .* (\w+) \(([^)]*)\); ", line)
        if found:
            assert found.group(1) == str(edition_id), line
            under = [below.strip() for below in takewhile(lambda below: below.startswith("    "), lines[index + 1 :])]
            reasons = [reason for reason in under if _COUNT.match(reason)]  # not the edition's own reason line
            return Shown(found.group(2), _counts(found.group(3)), reasons, out), int(queue.group(1))
    raise AssertionError(f"no {cadence} edition in:\n{out}")


def agree(site: Site, client: httpx.Client, edition_id: int, status: str, counts: dict[str, int],
          reasons: list[str]) -> Shown:  # fmt: skip
    """The edition page, the dashboard, ``editions list`` and ``status`` all show the edition as ``status`` with
    ``counts`` and the grouped ``reasons``, and the queue holds what it has still to send; the page."""
    page = edition_page(client, edition_id)
    assert (page.status, page.counts, page.reasons) == (status, counts, reasons)
    row = dashboard_row(client, edition_id)
    waiting = sum(counts.get(open_, 0) for open_ in ("queued", "claimed", "deferred"))
    given_up = sum(n for name, n in counts.items() if name in ("failed", "bounced", "poisoned"))
    expected = {"sent": counts.get("sent", 0), "waiting": waiting, "given up": given_up}
    assert (row.status, row.counts, row.reasons) == (status, {k: n for k, n in expected.items() if n}, reasons)
    in_list = listed(site, edition_id)
    assert (in_list.status, in_list.counts, in_list.reasons) == (status, counts, reasons), in_list.text
    in_status, queue = status_of(site, edition_id)
    assert (in_status.status, in_status.counts, in_status.reasons) == (status, counts, reasons), in_status.text
    assert queue == (waiting if status == EditionStatus.SENDING else 0)
    return page


def _text(message: EmailMessage, kind: str = "plain") -> str:
    part = message.get_body((kind,))
    assert part is not None
    return str(part.get_content())


def _wait_until_sent(site: Site, edition_id: int) -> None:
    wait_for(lambda: edition_status(site.web, edition_id) == EditionStatus.SENT, f"edition {edition_id} to be sent",
             timeout=20)  # fmt: skip


def bounced(site: Site) -> str:
    """The SMTP server's refusal of gone@example.org, as the pages and the commands group it."""
    return f"1 bounced: 550 RCPT TO refused by 127.0.0.1:{site.web.smtp.port}: 5.1.1 No such user here"


# --- A re-run strands nothing ---------------------------------------------------------------------------------


def test_a_rerun_strands_nothing_and_every_driver_agrees(
    tmp_path: Path, database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with lifecycle_site(tmp_path, database_url, capsys) as site, site.web.client() as client:
        code, out = site.cli("digest", "send", "--cadence", "weekly", *WINDOW)
        assert code == 0 and "edition 1 (weekly" in out and "created: 3 deliveries queued" in out
        assert site.web.smtp.accepted == 2  # Gone is refused
        sign_in(client)
        agree(site, client, 1, "sent", {"sent": 2, "bounced": 1}, [bounced(site)])

        # Someone subscribes after the edition went out, and the window is sent again: nothing is queued to an
        # edition that is over, so nothing waits that will never go.
        add_subscriber(site.web.service, "late@example.org", cadence="weekly", confirmed=True)
        code, out = site.cli("digest", "send", "--cadence", "weekly", *WINDOW)
        assert code == 0 and "already existed: 0 deliveries queued" in out and "edition 1 is sent" in out
        agree(site, client, 1, "sent", {"sent": 2, "bounced": 1}, [bounced(site)])

        # A delivery an older version left queued under the sent edition: the page shows it waiting, and the next
        # run of the window sends it; then everything agrees again.
        late = find_subscriber(site.web.service, "late@example.org")
        assert late is not None
        with database.transaction(site.web.service.engine) as session:
            ledger.queue(session, 1, [(late.id, "stranded.1")], site.web.service.clock())
        assert edition_page(client, 1).counts == {"sent": 2, "bounced": 1, "queued": 1}
        code, out = site.cli("digest", "send", "--cadence", "weekly", *WINDOW)
        assert code == 0 and "1 sent" in out
        agree(site, client, 1, "sent", {"sent": 3, "bounced": 1}, [bounced(site)])
    assert site.web.smtp.copies == {"ana@example.org": 1, "bo@example.org": 1, "late@example.org": 1}


# --- An empty window ------------------------------------------------------------------------------------------


def test_an_empty_window_is_neither_published_nor_emailed_and_the_pages_say_it_is_empty(
    tmp_path: Path, database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with lifecycle_site(tmp_path, database_url, capsys, APPROVAL) as site, site.web.client() as client:
        code, out = site.cli("digest", "send", "--cadence", "weekly", *WINDOW, "--approve")
        assert code == 0 and "approved by the operator" in out
        assert site.web.smtp.accepted == 2
        code, out = site.cli("digest", "send", "--cadence", "weekly", *EMPTY_WINDOW)
        assert code == 0 and "edition 2" in out and "nothing new in this window" in out
        assert "draft" not in out
        # Not a draft: the editors are not asked to approve it, and nobody else is emailed either.
        assert site.web.smtp.accepted == 2 and site.web.smtp.received_for("editor@example.org") == []

        # The public archive and its feed hold the sent edition, not the empty one.
        archive = client.get("/editions/")
        assert archive.status_code == 200
        assert 'href="/editions/1"' in archive.text and "/editions/2" not in archive.text
        assert client.get("/editions/2").status_code == 404
        feed = client.get("/feeds/editions.atom")
        assert feed.status_code == 200 and "/editions/1" in feed.text and "/editions/2" not in feed.text

        # The editor's pages show it as what it is: empty, nothing to approve or send, no alarm.
        sign_in(client)
        page = edition_page(client, 2)
        assert (page.status, page.counts, page.reasons) == ("empty", {}, [])
        assert actions_of(page.text, 2) == [] and "Approve and send" not in page.text
        assert "Empty: nothing new was published in this window. Nothing is sent" in page.text
        assert 'role="alert"' not in page.text
        refused = form_post(client, "/editor/editions/2/approve", {}, page.text)
        assert refused.status_code == 409 and "Edition 2 is empty: it cannot be approved." in refused.text
        row = dashboard_row(client, 2)
        assert (row.status, row.counts, row.reasons) == ("empty", {}, [])
        assert '<small class="hint" data-edition-reason>nothing new</small>' in row.text
        in_list = listed(site, 2)
        assert (in_list.status, in_list.counts, in_list.reasons) == ("empty", {}, [])
        assert "no deliveries  (nothing new)" in in_list.text
        assert edition_status(site.web, 2) == EditionStatus.EMPTY
    assert site.web.smtp.accepted == 2


# --- require_approval holds digest send -----------------------------------------------------------------------


def test_digest_send_makes_a_draft_that_the_page_approves_and_sends(
    tmp_path: Path, database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with lifecycle_site(tmp_path, database_url, capsys, APPROVAL) as site, site.web.client() as client:
        code, out = site.cli("digest", "send", "--cadence", "weekly", *WINDOW)
        assert code == 0 and "edition 1 is a draft" in out
        # The editors are asked, with a link to the edition's page; no subscriber got anything.
        assert site.web.smtp.wait_for(1)
        [asked] = site.web.smtp.messages
        assert asked.recipients == ("editor@example.org",)
        link = re.search(r"http://127\.0\.0\.1:\d+(/editor/editions/1)\b", _text(asked.parsed()))
        assert link, _text(asked.parsed())
        assert client.get(link.group(1)).status_code == 303  # to the sign-in page, and back after it
        assert sign_in(client, link.group(1)).headers["location"] == link.group(1)
        page = agree(site, client, 1, "draft", {"queued": 3}, [])
        assert actions_of(page.text, 1) == ["approve", "cancel"] and ">Approve and send</button>" in page.text

        approved = form_post(client, "/editor/editions/1/approve", {}, page.text)
        assert approved.status_code == 303 and approved.headers["location"] == "/editor/editions/1?done=approved"
        _wait_until_sent(site, 1)
        agree(site, client, 1, "sent", {"sent": 2, "bounced": 1}, [bounced(site)])
    readers = sorted(r for m in site.web.smtp.messages[1:] for r in m.recipients)
    assert readers == ["ana@example.org", "bo@example.org"]


# --- Every deferral keeps its reason --------------------------------------------------------------------------


def test_with_the_smtp_server_down_every_driver_shows_the_deferrals_grouped_with_their_reason(
    tmp_path: Path, database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    port = closed_port()
    with lifecycle_site(tmp_path, database_url, capsys) as site, site.web.client() as client:
        down = site.config.with_name("down.toml")
        configured = site.config.read_text("utf-8")
        down.write_text(configured.replace(f"port = {site.web.smtp.port}\n", f"port = {port}\n"), "utf-8")
        assert down.read_text("utf-8") != configured
        code, out = site.cli("digest", "send", "--cadence", "weekly", *WINDOW, config=down)
        refused = f"[Errno {errno.ECONNREFUSED}] {os.strerror(errno.ECONNREFUSED)}"
        reason = f"3 deferred: temporary: cannot connect to 127.0.0.1:{port}: {refused}"
        assert code == 1 and reason in out
        sign_in(client)
        page = agree(site, client, 1, "sending", {"deferred": 3}, [reason])
        # Above the table of addresses, each with its own copy of the reason.
        assert page.text.index("data-reasons") < page.text.index('<th scope="col">Address</th>')
        for address in ("ana@example.org", "bo@example.org", "gone@example.org"):
            assert re.search(rf"<td>{re.escape(address)}</td>\s*<td>deferred, next try ", page.text), address
    assert site.web.smtp.accepted == 0


# --- The preview is what is sent ------------------------------------------------------------------------------


def test_the_page_previews_for_a_subscriber_what_that_subscriber_is_sent(
    tmp_path: Path, database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with lifecycle_site(tmp_path, database_url, capsys, APPROVAL) as site, site.web.client() as client:
        assert site.cli("digest", "send", "--cadence", "weekly", *WINDOW)[0] == 0
        sign_in(client)
        previews: dict[str, tuple[str, str, str]] = {}
        for address in ("ana@example.org", "bo@example.org"):
            page = edition_page(client, 1, subscriber=address).text
            frame = client.get("/editor/editions/1/preview", params={"subscriber": address})
            assert frame.status_code == 200
            subject = re.search(r"<span data-subject>([^<]*)</span>", page)
            text_part = re.search(r'<pre class="text-part"[^>]*>(.*?)</pre>', page, re.S)
            assert subject and text_part
            previews[address] = (html.unescape(subject.group(1)), frame.text, html.unescape(text_part.group(1)))
        assert previews["ana@example.org"][0] != previews["bo@example.org"][0]  # their own themes and language

        page = edition_page(client, 1).text
        assert form_post(client, "/editor/editions/1/approve", {}, page).status_code == 303
        _wait_until_sent(site, 1)
        base = site.web.settings.site.base_url
        for address, (previewed_subject, previewed_html, previewed_text) in previews.items():
            [received] = site.web.smtp.received_for(address)
            message = received.parsed()
            assert message["Subject"] == previewed_subject, address
            assert as_previewed(_text(message, "html"), base) == previewed_html, address
            assert as_previewed(_text(message), base) == previewed_text, address


def as_previewed(body: str, base: str) -> str:
    """A delivered part with its reader's own links (signed unsubscribe, preferences and view-in-browser links,
    the last with its reader's language: the one thing that differs by design) replaced by the preview's, each of
    which it must hold, and its lines ended as the page's are (SMTP ends them with CRLF)."""
    body = body.replace("\r\n", "\n")
    for kind, pattern, preview in (
        ("unsubscribe", rf"{re.escape(base)}/unsubscribe/[A-Za-z0-9._~%-]+", f"{base}/unsubscribe/preview"),
        ("preferences", rf"{re.escape(base)}/preferences/[A-Za-z0-9._~%-]+", f"{base}/preferences/preview"),
        (
            "view online",
            rf"{re.escape(base)}/editions/\d+\?t=[A-Za-z0-9._~%-]+&(?:amp;)?lang=[A-Za-z-]+",
            f"{base}/editions/preview",
        ),
    ):
        body, found = re.subn(pattern, preview, body)
        assert found, f"no {kind} link in {body}"
    return body
