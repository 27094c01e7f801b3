"""Issue 21's team journey in a real browser: an owner invites an editor, the editor chooses a password from the
emailed link, approves an edition, and the owner finds it all in the audit log.

Two headless Chromium contexts (two people, two cookie jars) on the real app (uvicorn) with a real SMTP server
catching the invitation. The forms are filled and submitted as a person would, labels and buttons found by their
accessible names.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, expect

from syndication.app.editions import plan_edition
from syndication.app.subscribers import add_subscriber
from syndication.core.models import EditionStatus
from tests.browser import artifact, chromium_browser, requires_chromium
from tests.test_browser_pages import browsing
from tests.test_web_editor import SINCE, UNTIL, edition_status
from tests.web_site import EDITOR, PASSWORD, WebSite, link_in_email, web_site

pytestmark = requires_chromium

NEW_PASSWORD = "a password lea chose herself"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium_browser() as launched:
        yield launched


@pytest.fixture
def site(tmp_path: Path) -> Iterator[WebSite]:
    """A site on SQLite (nothing sent from the pages) whose owner is ``ana``, with a draft edition (1)."""
    with web_site(tmp_path, f"sqlite:///{tmp_path / 'store.db'}", "[web]\nsend_on_approve = false\n") as running:
        add_subscriber(running.service, "sub@example.org", cadence="weekly", confirmed=True)
        plan = plan_edition(running.service, "weekly", SINCE, UNTIL, draft=True)
        assert plan.edition is not None and plan.edition.id == 1
        yield running


def test_an_owner_invites_an_editor_who_joins_and_approves_and_the_audit_log_shows_it(
    browser: Browser, site: WebSite
) -> None:
    base = site.server.url()
    with browsing(browser, site, width=1280, javascript=True) as (owner, refused):
        owner.goto(f"{base}/editor/login")
        owner.get_by_label("Name").fill(EDITOR)
        owner.get_by_label("Password").fill(PASSWORD)
        owner.get_by_role("button", name="Sign in").click()
        expect(owner.get_by_role("heading", level=1)).to_have_text("Dashboard")
        owner.get_by_role("link", name="People").click()
        expect(owner.get_by_role("heading", level=1)).to_have_text("People")
        invite = owner.get_by_role("region", name="Invite someone")
        invite.get_by_label("Sign-in name").fill("lea")
        invite.get_by_label("Email address").fill("lea@example.org")
        invite.get_by_label("Role").select_option("editor")
        invite.get_by_role("button", name="Send the invitation").click()
        expect(owner.get_by_role("status")).to_have_text("The invitation was sent.")
        expect(owner.get_by_role("row", name="lea")).to_contain_text("Invited, not joined yet")
        assert refused == []

        link = link_in_email(site.smtp, "lea@example.org", "editor/welcome")
        with browsing(browser, site, width=390, javascript=True) as (lea, lea_refused):
            lea.goto(link)
            expect(lea.get_by_role("heading", level=1)).to_have_text("Welcome")
            lea.get_by_label("Password", exact=True).fill(NEW_PASSWORD)
            lea.get_by_label("The same password again").fill(NEW_PASSWORD)
            lea.get_by_role("button", name="Join and sign in").click()
            expect(lea.get_by_role("heading", level=1)).to_have_text("Dashboard")
            expect(lea.get_by_role("button", name="Sign out lea")).to_be_visible()
            expect(lea.get_by_role("link", name="People")).to_have_count(0)  # an editor does not manage the team

            lea.goto(f"{base}/editor/editions/1")
            lea.get_by_role("button", name="Approve and send").click()
            expect(lea.get_by_role("status").first).to_contain_text("Approved")
            lea.screenshot(path=str(artifact("team-editor-approved.png")), full_page=True)
            assert lea_refused == []
        assert edition_status(site) == EditionStatus.SENDING

        owner.get_by_role("link", name="Audit log").click()
        rows = owner.get_by_role("row")
        # Newest first: who (the second cell), then what.
        expect(rows.nth(1).get_by_role("cell").nth(1)).to_have_text("lea")
        expect(rows.nth(1)).to_contain_text("Approved the edition")
        expect(rows.nth(2).get_by_role("cell").nth(1)).to_have_text("lea")
        expect(rows.nth(2)).to_contain_text("Joined the team")
        expect(rows.nth(3).get_by_role("cell").nth(1)).to_have_text(EDITOR)
        expect(rows.nth(3)).to_contain_text("Invited someone to the team")
        owner.screenshot(path=str(artifact("team-audit.png")), full_page=True)
