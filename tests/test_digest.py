"""Digests: what goes in them, how they render in both languages, and the MIME message that carries them."""

from __future__ import annotations

import email
import email.policy
import re
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest

from syndication.app.digests import personalised_message, preview_digest, preview_links
from syndication.app.gathering import import_file
from syndication.app.service import Service
from syndication.cli import main
from syndication.config import Settings
from syndication.core.digest import compose_digest, with_cap, with_shown
from syndication.core.models import Author, Image, Post, Theme
from syndication.delivery.mailer import Mailer
from syndication.mailing.message import Envelope, HeaderInjection, build_message
from syndication.mailing.render import PLACEHOLDERS, Links, MailRenderer, RenderedEmail, RenderError, check_email
from tests.golden import check_golden
from tests.support import NOW, post_record, write_config, write_jsonl

CLIMATE, RESILIENCE, CIRCULAR = (
    Theme("climate-action", "Climate action"),
    Theme("resilience", "Resilience"),
    Theme("circular-economy", "Circular economy"),
)
THEMES = (CLIMATE, RESILIENCE, CIRCULAR)
SINCE = datetime(2024, 5, 1, tzinfo=UTC)
UNTIL = datetime(2024, 5, 8, tzinfo=UTC)


def post(number: int, hours: float, *themes: str, title: str | None = None, **fields: Any) -> Post:
    moment = SINCE + timedelta(hours=hours)
    return Post(
        guid=f"g{number}",
        title=title or f"Post {number}",
        url=f"https://news.example.org/{number}",
        summary=f"Summary of post {number}.",
        content_html="",
        published=moment,
        updated=moment,
        language="en",
        themes=themes,
        **fields,
    )


# --- Composition -----------------------------------------------------------------------------------------------


def test_window_is_open_at_since_and_closed_at_until() -> None:
    posts = [post(1, 0, "resilience"), post(2, 24 * 7, "resilience"), post(3, 24 * 7 + 1, "resilience")]
    digest = compose_digest(posts, THEMES, since=SINCE, until=UNTIL)
    assert digest is not None
    assert [item.post.guid for item in digest.sections[0].items] == ["g2"]


def test_sections_follow_the_configured_order_newest_first() -> None:
    posts = [post(1, 1, "circular-economy"), post(2, 2, "climate-action"), post(3, 3, "climate-action")]
    digest = compose_digest(posts, THEMES, since=SINCE, until=UNTIL)
    assert digest is not None
    assert [s.theme.slug if s.theme else None for s in digest.sections] == ["climate-action", "circular-economy"]
    assert [item.post.guid for item in digest.sections[0].items] == ["g3", "g2"]


def test_a_post_on_several_themes_appears_once_naming_the_others() -> None:
    posts = [post(1, 1, "circular-economy", "resilience", "climate-action")]
    digest = compose_digest(posts, THEMES, since=SINCE, until=UNTIL)
    assert digest is not None
    [section] = digest.sections
    assert section.theme == CLIMATE
    assert section.items[0].also_in == (RESILIENCE, CIRCULAR)
    followed = compose_digest(posts, THEMES, since=SINCE, until=UNTIL, followed={"circular-economy", "resilience"})
    assert followed is not None
    assert followed.sections[0].theme == RESILIENCE
    assert followed.sections[0].items[0].also_in == (CIRCULAR,)  # climate is not followed: not named


def test_unthemed_posts_go_to_a_catch_all_only_for_readers_of_everything() -> None:
    posts = [post(1, 1), post(2, 2, "resilience")]
    everything = compose_digest(posts, THEMES, since=SINCE, until=UNTIL)
    assert everything is not None
    assert [s.theme for s in everything.sections] == [RESILIENCE, None]
    some = compose_digest(posts, THEMES, since=SINCE, until=UNTIL, followed={"resilience"})
    assert some is not None and [s.theme for s in some.sections] == [RESILIENCE]


def test_nothing_new_means_no_digest() -> None:
    assert compose_digest([], THEMES, since=SINCE, until=UNTIL) is None
    posts = [post(1, 1, "resilience")]
    assert compose_digest(posts, THEMES, since=SINCE, until=UNTIL, followed={"climate-action"}) is None
    assert compose_digest(posts, THEMES, since=UNTIL, until=UNTIL + timedelta(days=1)) is None


def test_a_section_over_its_cap_counts_the_rest() -> None:
    posts = [post(n, n, "climate-action") for n in range(1, 8)]
    digest = compose_digest(posts, THEMES, since=SINCE, until=UNTIL, section_cap=3)
    assert digest is not None
    section = digest.sections[0]
    assert [item.post.guid for item in section.items] == ["g7", "g6", "g5"]
    assert section.more == 4 and digest.post_count == 7 and digest.shown_count == 3


def test_late_posts_are_kept_when_asked_counted_and_last_by_date() -> None:
    # g1 was published before the window (it reached the store after that window's edition was made).
    posts = [post(1, -30, "resilience"), post(2, 5, "resilience"), post(3, 24 * 7 + 1, "resilience")]
    by_date = compose_digest(posts, THEMES, since=SINCE, until=UNTIL)
    assert by_date is not None and by_date.late == 0
    assert [item.post.guid for item in by_date.sections[0].items] == ["g2"]
    edition = compose_digest(posts, THEMES, since=SINCE, until=UNTIL, with_late=True, section_cap=1)
    assert edition is not None and edition.late == 1 and edition.post_count == 2  # never one after the window
    assert [item.post.guid for item in edition.sections[0].items] == ["g2"] and edition.sections[0].more == 1
    assert with_cap(edition, 1).late == with_shown(edition, 1).late == 1
    only_late = compose_digest(posts[:1], THEMES, since=SINCE, until=UNTIL, with_late=True, followed={"resilience"})
    assert only_late is not None and only_late.late == only_late.post_count == 1
    climate = {"climate-action"}
    assert compose_digest(posts[:1], THEMES, since=SINCE, until=UNTIL, with_late=True, followed=climate) is None


def test_a_late_post_shows_its_own_date_under_the_editions_window(settings: Settings) -> None:
    late = post(1, -30, "resilience", title="Arrived late")
    digest = compose_digest([late, post(2, 5, "resilience")], THEMES, since=SINCE, until=UNTIL, with_late=True)
    assert digest is not None
    text = MailRenderer(settings).render_digest(digest, "en").text
    assert text.splitlines()[1] == "May 1, 2024 - May 8, 2024"
    assert "* Arrived late\n  April 29, 2024" in text  # 18:00 UTC on 29 April is still the 29th in Berlin


# --- Rendering -------------------------------------------------------------------------------------------------


@pytest.fixture
def renderer(settings: Settings) -> MailRenderer:
    return MailRenderer(settings)


def digest_of(*posts: Post, cap: int | None = None) -> Any:
    digest = compose_digest(list(posts), THEMES, since=SINCE, until=UNTIL, section_cap=cap)
    assert digest is not None
    return digest


def four_theme_digest() -> Any:
    themes = (*THEMES, Theme("nature", "Nature"))
    posts = [post(n, n, slug) for n, slug in enumerate(["climate-action", "resilience", "circular-economy", "nature"]
                                                       * 3, start=1)]  # fmt: skip
    return compose_digest(posts, themes, since=SINCE, until=UNTIL)


@pytest.mark.parametrize(
    ("language", "expected"),
    [
        ("en", "12 new posts on Climate action, Resilience and 2 more themes"),
        ("es", "12 artículos nuevos sobre Climate action, Resilience y 2 temas más"),
    ],
)
def test_subject_counts_posts_and_names_themes(renderer: MailRenderer, language: str, expected: str) -> None:
    assert renderer.render_digest(four_theme_digest(), language).subject == expected


def test_subject_for_one_two_and_three_themes(renderer: MailRenderer) -> None:
    one = renderer.render_digest(digest_of(post(1, 1, "resilience")), "en")
    assert one.subject == "1 new post on Resilience"
    two = renderer.render_digest(digest_of(post(1, 1, "resilience"), post(2, 2, "climate-action")), "en")
    assert two.subject == "2 new posts on Climate action and Resilience"
    three = digest_of(post(1, 1, "resilience"), post(2, 2, "climate-action"), post(3, 3, "circular-economy"))
    assert (
        renderer.render_digest(three, "en").subject == "3 new posts on Climate action, Resilience and Circular economy"
    )


def test_html_is_built_for_mail_clients(renderer: MailRenderer) -> None:
    image = Image("https://cdn.example.org/a.jpg", "A river")
    rendered = renderer.render_digest(digest_of(post(1, 1, "resilience", image=image)), "en", intro="Hello.\n\nBye.")
    html = rendered.html
    assert 'style="' in html and "<style>@media only screen and (max-width: 620px)" in html.replace("\n", "")
    assert "!important" in html  # premailer configured not to strip it from the phone and dark-mode rules
    assert 'class="preheader"' in html and rendered.preheader in html
    assert 'width="536"' in html and 'alt="A river"' in html
    assert 'role="presentation"' in html and 'width="600"' in html
    assert "View this email in your browser" in html
    assert f'href="{PLACEHOLDER_UNSUBSCRIBE}"' in html
    assert ">Hello.</p>" in html and ">Bye.</p>" in html  # one paragraph each, styled inline
    assert rendered.problems == ()


PLACEHOLDER_UNSUBSCRIBE = PLACEHOLDERS.unsubscribe


def test_text_part_is_written_for_reading_as_text(renderer: MailRenderer) -> None:
    rendered = renderer.render_digest(digest_of(post(1, 1, "resilience", "climate-action")), "en")
    text = rendered.text
    assert "<" not in text and "&amp;" not in text
    assert "CLIMATE ACTION" in text and "Also in Resilience" in text
    assert "  https://news.example.org/1" in text
    assert f"Unsubscribe: {PLACEHOLDER_UNSUBSCRIBE}" in text
    assert all(len(line) <= 80 or line.split()[-1].startswith("http") for line in text.splitlines())  # or ends a link


def test_babel_formats_dates_in_the_readers_language(renderer: MailRenderer) -> None:
    digest = digest_of(post(1, 30, "resilience"))
    assert "May 2, 2024" in renderer.render_digest(digest, "en").text
    spanish = renderer.render_digest(digest, "es")
    assert "2 de mayo de 2024" in spanish.text
    assert "Darse de baja" in spanish.html and "Ver este correo en el navegador" in spanish.html


def test_unknown_language_is_refused(renderer: MailRenderer) -> None:
    with pytest.raises(RenderError, match="no digest language 'fr'"):
        renderer.render_digest(digest_of(post(1, 1, "resilience")), "fr")


def test_hostile_post_content_cannot_break_the_email(renderer: MailRenderer) -> None:
    hostile = post(
        1,
        1,
        "resilience",
        title='<script>alert("x")</script> & <b>bold</b> Malmö',
        authors=(Author("x", "<img src=x onerror=alert(1)>"),),
    )
    rendered = renderer.render_digest(digest_of(hostile), "en")
    assert "<script>" not in rendered.html and "<img src=x" not in rendered.html
    assert "&lt;script&gt;" in rendered.html and "&amp; &lt;b&gt;bold&lt;/b&gt; Malmö" in rendered.html
    assert '<script>alert("x")</script> & <b>bold</b> Malmö' in rendered.text
    message = build_message(
        Mailer(renderer.settings).envelope("r@example.org", "R", rendered.subject, key="k", date=UNTIL),
        rendered.text,
        rendered.html,
    )
    parsed = email.message_from_bytes(message, policy=email.policy.default)
    assert parsed["Subject"] == rendered.subject


def test_header_injection_is_refused() -> None:
    envelope = Envelope(
        "from@example.org", "Site", "to@example.org", "Eve\r\nBcc: x@evil.example", "Hi", UNTIL, "<k@x>"
    )
    with pytest.raises(HeaderInjection):
        build_message(envelope, "text", "<p>html</p>")
    with pytest.raises(HeaderInjection):
        build_message(replace(envelope, to_name="Eve", subject="Hi\nBcc: x@evil.example"), "t", "h")


def test_oversized_digests_cut_sections_instead_of_being_clipped(settings: Settings) -> None:
    small = settings.model_copy(update={"digest": settings.digest.model_copy(update={"max_html_bytes": 12_000})})
    posts = [post(n, n, "resilience", title=f"A long title number {n} " * 4) for n in range(1, 40)]
    rendered = MailRenderer(small).render_digest(digest_of(*posts), "en")
    assert len(rendered.html.encode()) <= 12_000
    assert "more on Resilience" in rendered.html
    assert rendered.problems == ()


def test_checks_find_relative_links_missing_alt_and_clipping() -> None:
    bad = RenderedEmail("s", "p", '<a href="/x">x</a><img src="https://e.org/i.png">' + "x" * 200, "", "en",
                        Links("u", "p", "v"))  # fmt: skip
    problems = check_email(bad, max_html_bytes=100)
    assert any("not an absolute URL" in p for p in problems)
    assert any("has no alt text" in p for p in problems)
    assert any("Gmail clips" in p for p in problems)
    assert any("plain-text part is empty" in p for p in problems)


def test_templates_can_be_overridden_by_a_site(settings: Settings, tmp_path: Path) -> None:
    folder = tmp_path / "my-templates"
    folder.mkdir()
    (folder / "digest.subject.txt").write_text("Our weekly letter: {{ digest.post_count }} posts", "utf-8")
    custom = settings.model_copy(update={"digest": settings.digest.model_copy(update={"templates_dir": folder})})
    rendered = MailRenderer(custom).render_digest(digest_of(post(1, 1, "resilience")), "en")
    assert rendered.subject == "Our weekly letter: 1 posts"
    assert "View this email in your browser" in rendered.html  # the rest still comes from the shipped templates


def test_notices_render_for_later_issues(renderer: MailRenderer) -> None:
    confirm = renderer.render_notice("confirm", "es", {"confirm_url": "https://news.example.org/confirm/abc"})
    assert confirm.subject == "Confirma tu suscripción a Test Network"
    assert 'href="https://news.example.org/confirm/abc"' in confirm.html
    assert ":\n\nhttps://news.example.org/confirm/abc\n\n" in confirm.text  # the link on a line of its own


# --- The message -----------------------------------------------------------------------------------------------


RECIPIENTS = [
    ("ana@example.org", "Ana Pérez", "tok-1"),
    ("o'brien+news@example.org", 'Seán "the reader" O\'Brien', "tok-2"),
    ("kita@example.jp", "北九州市 役所", "tok_3.x~y"),
    ("plain@example.org", "", "t4"),
]


def links_for(token: str) -> Links:
    base = "https://news.example.org"
    return Links(f"{base}/u/{token}?a=1&b=2", f"{base}/p/{token}", f"{base}/e/7?t={token}")


def test_fast_path_gives_exactly_the_message_a_full_render_gives(renderer: MailRenderer) -> None:
    digest = digest_of(post(1, 1, "resilience", "climate-action", title="São Paulo & 北九州市 🌍"), post(2, 2))
    mailer = Mailer(renderer.settings)
    for language in ("en", "es"):
        variant = renderer.render_digest(digest, language)  # once, with placeholder links
        for address, name, token in RECIPIENTS:
            extra = (("List-Unsubscribe", f"<{links_for(token).unsubscribe}>"),)
            fast = personalised_message(mailer, variant, to_address=address, to_name=name, links=links_for(token),
                                        date=UNTIL, message_key=f"e1.{token}", extra=extra)  # fmt: skip
            full = renderer.render_digest(digest, language, links_for(token))
            envelope = mailer.envelope(address, name, full.subject, key=f"e1.{token}", date=UNTIL, extra=extra)
            assert fast == build_message(envelope, full.text, full.html), (language, address)


def test_message_lines_encodings_and_structure(renderer: MailRenderer) -> None:
    long_title = "Malmö São Paulo 北九州市 " + "x" * 1500  # one very long line in both parts
    rendered = renderer.render_digest(digest_of(post(1, 1, "resilience", title=long_title)), "en")
    settings = renderer.settings
    message = personalised_message(Mailer(settings), rendered, to_address="kita@example.jp", to_name="北九州市 役所",
                                   links=links_for("t"), date=UNTIL, message_key="e1.t")  # fmt: skip
    lines = message.split(b"\r\n")
    assert max(len(line) for line in lines) <= 78
    assert b"\n" not in message.replace(b"\r\n", b"")
    assert message.isascii()
    parsed = email.message_from_bytes(message, policy=email.policy.default)
    assert isinstance(parsed, EmailMessage)
    assert parsed.get_content_type() == "multipart/alternative"
    parts = list(parsed.iter_parts())
    assert [part.get_content_type() for part in parts] == ["text/plain", "text/html"]
    assert long_title in parts[0].get_content() and "北九州市" in parts[1].get_content()
    assert str(parsed["To"]) == "北九州市 役所 <kita@example.jp>"
    assert str(parsed["Subject"]) == rendered.subject
    assert parsed["Message-ID"] == "<e1.t@news.example.org>"
    assert str(parsed["From"]) == "Test Network <newsletter@localhost>"


# --- Preview through the store and the command line --------------------------------------------------------------


@pytest.fixture
def stored(service: Service, tmp_path: Path) -> Service:
    records = [
        post_record(1, themes=["climate-action", "resilience"], published="2024-05-20T10:00:00Z",
                    title="Karachi's heat plan", image={"url": "https://cdn.example.org/k.jpg", "alt": "Karachi"}),
        post_record(2, themes=["circular-economy"], published="2024-05-21T10:00:00Z", title="Plastics in Kitakyushu",
                    authors=["北九州市"]),
        post_record(3, themes=[], published="2024-05-22T10:00:00Z", title="Network news"),
        post_record(4, themes=["resilience"], published="2024-07-01T10:00:00Z", title="Not yet published"),
    ]  # fmt: skip
    import_file(service, write_jsonl(tmp_path / "posts.jsonl", records))
    return service


def test_preview_reads_the_store_and_never_shows_future_posts(stored: Service) -> None:
    preview = preview_digest(stored, since=NOW - timedelta(days=30), until=NOW + timedelta(days=60))
    assert preview is not None
    titles = [item.post.title for section in preview.digest.sections for item in section.items]
    assert titles == ["Karachi's heat plan", "Plastics in Kitakyushu", "Network news"]
    assert preview.email.links == preview_links(stored.settings)
    assert preview.message.startswith(b"From: Test Network <newsletter@localhost>\r\n")
    nothing = preview_digest(stored, since=NOW - timedelta(days=30), until=NOW, followed=["nature-based"])
    assert nothing is None


@pytest.mark.parametrize("name", ["digest.html", "digest.txt"])
def test_golden_digest(stored: Service, regenerate_golden: bool, name: str) -> None:
    preview = preview_digest(stored, since=NOW - timedelta(days=30), until=NOW, intro="Welcome to May's digest.")
    assert preview is not None
    body = preview.email.html if name.endswith(".html") else preview.email.text
    check_golden(f"email/{name}", body.encode("utf-8"), regenerate_golden)


def test_preview_command_writes_each_format(
    database_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path, database_url, "[digest]\nsection_cap = 5\n")
    assert main(["--config", str(config), "init"]) == 0
    write_jsonl(tmp_path / "p.jsonl", [post_record(1, published="2024-05-20T10:00:00Z")])
    assert main(["--config", str(config), "import", str(tmp_path / "p.jsonl")]) == 0
    window = ["--since", "2024-05-01", "--until", "2024-06-01"]
    for fmt in ("html", "text", "eml"):
        out = tmp_path / f"preview.{fmt}"
        assert main(["--config", str(config), "digest", "preview", *window, "--format", fmt, "--out", str(out)]) == 0
        assert out.stat().st_size > 400
    assert email.message_from_bytes((tmp_path / "preview.eml").read_bytes()).is_multipart()
    assert "Post number 1" in (tmp_path / "preview.text").read_text("utf-8")
    capsys.readouterr()
    assert main(["--config", str(config), "digest", "preview", "--since", "2020-01-01", "--until", "2020-02-01"]) == 0
    assert "no digest: nothing was published" in capsys.readouterr().err
    assert main(["--config", str(config), "digest", "preview", "--themes", "astrology"]) == 2  # a wrong argument
    assert "unknown theme 'astrology'" in capsys.readouterr().err


def test_the_preheader_is_hidden_without_low_contrast_tricks(renderer: MailRenderer) -> None:
    # SpamAssassin scores text coloured like its background (HTML_FONT_LOW_CONTRAST): the preheader is kept out
    # of sight by display and size alone, never by a transparent colour or no opacity.
    rendered = renderer.render_digest(digest_of(post(1, 1, "resilience")), "en")
    match = re.search(r'<div class="preheader" style="([^"]*)"', rendered.html)
    assert match is not None
    style = match.group(1).replace(" ", "")
    assert "display:none" in style and "mso-hide:all" in style and "overflow:hidden" in style
    for trick in ("transparent", "opacity", "color:", "visibility"):
        assert trick not in style, trick
    assert rendered.preheader in rendered.html
