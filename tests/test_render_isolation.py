"""A reader whose digest cannot be rendered fails alone, with the reason, never their batch (issue #16).

Through a real SMTP server, on SQLite and PostgreSQL: 50 English readers and two whose stored language the
renderer refuses (a language taken out of ``[digest] languages``, or never one) share a batch; the 50 get their
digest, the two fail with a reason naming the language, nothing is poisoned, and draining again changes nothing.
"""

from __future__ import annotations

from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr
from sqlalchemy import update

from syndication.app.editions import MessageBuilder, deliver, plan_edition
from syndication.app.gathering import import_file
from syndication.app.service import Service
from syndication.app.subscribers import add_subscriber
from syndication.clock import fixed_clock
from syndication.core.digest import Digest
from syndication.core.models import DeliveryStatus, EditionStatus
from syndication.mailing.render import MailRenderer, RenderedEmail, RenderError
from syndication.store import database, ledger
from syndication.store.schema import SubscriberRow
from tests.smtp_server import SmtpTestServer, smtp_server
from tests.support import NOW, post_record, write_jsonl

SINCE, UNTIL = NOW - timedelta(days=7), NOW
READERS = 50
UNRENDERABLE = {"gone@example.org": "pt", "odd@example.org": "xx-notalang"}


def sending(service: Service, server: SmtpTestServer) -> Service:
    """The service pointed at ``server``, with a signing key."""
    settings = service.settings.model_copy(
        update={"secret_key": SecretStr("test-signing-key-" + "x" * 16), "smtp": server.settings(timeout_seconds=2.0)}
    )
    return Service(settings, service.engine, fixed_clock(NOW))


@pytest.fixture
def audience(service: Service, tmp_path: Path) -> Service:
    """A post of the week before NOW; 50 weekly English readers and two whose row holds a language not configured
    (as a reader added before ``pt`` left ``[digest] languages`` would, or one written into the store by hand)."""
    records = [post_record(1, themes=["climate-action"], published="2024-05-28T10:00:00Z", title="Heat plan")]
    import_file(service, write_jsonl(tmp_path / "posts.jsonl", records))
    addresses = [f"reader{number:02d}@example.org" for number in range(READERS)]
    for address in [*addresses[:25], *UNRENDERABLE, *addresses[25:]]:  # the two in the middle of the batch
        add_subscriber(service, address, themes=[], cadence="weekly", language="en", confirmed=True)
    with database.transaction(service.engine) as session:
        for address, language in UNRENDERABLE.items():
            session.execute(update(SubscriberRow).where(SubscriberRow.email == address).values(language=language))
    return service


def test_readers_whose_language_cannot_be_rendered_fail_alone(
    audience: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    rendered: Counter[str] = Counter()
    render_digest = MailRenderer.render_digest

    def counted(self: MailRenderer, digest: Digest, language: str, *args: Any, **kwargs: Any) -> RenderedEmail:
        rendered[language] += 1
        return render_digest(self, digest, language, *args, **kwargs)

    monkeypatch.setattr(MailRenderer, "render_digest", counted)
    with smtp_server() as server:
        service = sending(audience, server)
        plan = plan_edition(service, "weekly", SINCE, UNTIL)
        assert plan.edition is not None and plan.queued == READERS + 2
        report = deliver(service)
        assert (report.sent, report.failed, report.poisoned, report.deferred) == (READERS, 2, 0, 0)
        assert server.accepted == READERS
        assert not set(UNRENDERABLE) & {m.recipients[0] for m in server.messages}
        with database.transaction(service.engine) as session:
            problems = ledger.problems(session, plan.edition.id)
            assert ledger.progress(session, plan.edition.id) == {
                DeliveryStatus.SENT: READERS,
                DeliveryStatus.FAILED: 2,
            }
            assert ledger.edition(session, plan.edition.id).status == EditionStatus.SENT  # type: ignore[union-attr]
        assert {problem.email: problem.status for problem in problems} == dict.fromkeys(
            UNRENDERABLE, DeliveryStatus.FAILED
        )
        for problem in problems:
            language = UNRENDERABLE[problem.email or ""]
            assert problem.detail.startswith("the digest cannot be rendered for this subscriber:"), problem.detail
            assert f"no digest language {language!r}" in problem.detail, problem.detail
        # Each variant is rendered once: the English one for the 50, each refused language once.
        assert rendered == {"en": 1, "pt": 1, "xx-notalang": 1}

        again = deliver(service)
        assert (again.sent, again.failed, again.poisoned, again.deferred, again.held_back) == (0, 0, 0, 0, 0)
        assert server.accepted == READERS
        with database.transaction(service.engine) as session:
            assert ledger.progress(session, plan.edition.id) == {
                DeliveryStatus.SENT: READERS,
                DeliveryStatus.FAILED: 2,
            }
            assert ledger.problems(session, plan.edition.id) == problems


def test_a_variant_that_fails_is_rendered_once_and_refused_again_with_the_same_reason(
    audience: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []

    def broken(self: MailRenderer, digest: Digest, language: str, *args: Any, **kwargs: Any) -> RenderedEmail:
        calls.append(language)
        raise KeyError("a template bug")

    monkeypatch.setattr(MailRenderer, "render_digest", broken)
    plan = plan_edition(audience, "weekly", SINCE, UNTIL)
    assert plan.edition is not None
    with smtp_server() as server:
        builder = MessageBuilder(sending(audience, server))
    for _ in range(3):
        with pytest.raises(RenderError, match=r"rendering failed \(KeyError: 'a template bug'\)"):
            builder.edition_email(plan.edition, None, "en")
    assert calls == ["en"]


def test_a_configured_language_without_a_catalog_is_worded_in_english(service: Service) -> None:
    settings = service.settings.model_copy(
        update={"digest": service.settings.digest.model_copy(update={"languages": ("en", "es", "de")})}
    )
    renderer = MailRenderer(settings)
    source = "{{ ngettext('%(count)s new post', '%(count)s new posts', 3, count=3) }}, {{ moment | date }}"

    def written(language: str) -> str:
        return renderer.environment(language).from_string(source).render(moment=NOW)

    assert written("de") == "3 new posts, 1. Juni 2024"  # English words, Babel's German dates
    assert written("es").startswith("3 artículos nuevos")  # Spanish has its catalog
