"""Right-to-left and mixed-language posts (issue 19): each post shown in a digest email or on a theme page carries
its own language and direction (``lang`` and ``dir``, ``rtl`` for a right-to-left language and ``auto`` for the
others, on the element holding its title and summary), so an
Arabic post reads and lines up right to left inside an English email or page, and a Korean post keeps ``lang="ko"``
in a French one. Its date line and "Also in" are in the reader's language (``lang`` of theirs when it differs),
isolated in their own direction while they line up with the post.

The markup is read from the rendered email and the served page; then headless Chromium lays both out and says which
direction each title has, where it sits, and where its ink lands in a screenshot.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from lxml import html as lxml_html
from playwright.sync_api import Browser, Page

from syndication.app.digests import DigestPreview, preview_digest
from syndication.app.gathering import import_file
from syndication.core.languages import text_direction
from tests.browser import artifact, chromium_browser, open_page, requires_chromium
from tests.support import NOW, opened, post_record, write_config, write_jsonl
from tests.test_browser_pages import browsing
from tests.web_site import web_site

ARABIC_TITLE = "خطة العمل المناخية لمدينة عمّان 2030"
ARABIC_SUMMARY = "تشرح البلدية كيف ستخفض انبعاثات المدينة إلى النصف بحلول عام 2030 بالنقل العام والطاقة الشمسية."
ENGLISH_TITLE = "Heat pumps in Kraków"
KOREAN_TITLE = "서울시 자원순환 계획"
THEME = "climate-action"


def rtl_posts() -> list[dict[str, Any]]:
    """An Arabic post among English ones (all on climate action, the Arabic one also on resilience), and a Korean
    one whose tag comes in lower case."""
    return [
        post_record(1, title=ENGLISH_TITLE, summary="Tenement blocks swap coal stoves for heat pumps.",
                    themes=[THEME], published="2024-05-20T10:00:00Z"),
        post_record(2, title=ARABIC_TITLE, summary=ARABIC_SUMMARY, language="ar", authors=["ليلى حداد"],
                    themes=[THEME, "resilience"], published="2024-05-21T10:00:00Z"),
        post_record(3, title="Malmö opens a low-emission zone", themes=[THEME], published="2024-05-22T10:00:00Z"),
        post_record(4, title=KOREAN_TITLE, summary="폐기물을 줄이는 서울의 새 계획.", language="ko-kr",
                    themes=["circular-economy"], published="2024-05-23T10:00:00Z"),
    ]  # fmt: skip


LANGUAGES = '[digest]\nlanguages = ["en", "es", "fr", "pt"]\n'


@pytest.fixture(scope="module")
def previews(tmp_path_factory: pytest.TempPathFactory) -> dict[str, DigestPreview]:
    """The digest of May 2024 from a store holding the posts, in English and in French."""
    folder = tmp_path_factory.mktemp("rtl")
    config = write_config(folder, f"sqlite:///{folder / 'store.db'}", LANGUAGES)
    with opened(config) as service:
        report = import_file(service, write_jsonl(folder / "posts.jsonl", rtl_posts()))
        assert report.ok and report.added == len(rtl_posts()), report
        result = {}
        for language in ("en", "fr"):
            preview = preview_digest(service, since=NOW - timedelta(days=30), until=NOW, language=language)
            assert preview is not None and preview.email.problems == ()
            result[language] = preview
    return result


def post_holder(document: Any, title: str) -> Any:
    """The element that holds the post titled ``title``: the nearest ancestor of its link carrying a ``lang``."""
    links = [link for link in document.iter("a") if link.text_content() == title]
    assert len(links) == 1, f"{title!r} is linked {len(links)} times"
    holders = [element for element in links[0].iterancestors() if element.get("lang") is not None]
    assert holders, f"nothing around {title!r} says its language"
    return holders[0]


# --- The markup ----------------------------------------------------------------------------------------------------


def test_an_arabic_post_in_an_english_email_carries_its_language_and_direction(
    previews: dict[str, DigestPreview],
) -> None:
    document = lxml_html.fromstring(previews["en"].email.html)
    assert document.get("lang") == "en"
    arabic = post_holder(document, ARABIC_TITLE)
    assert (arabic.tag, arabic.get("class"), arabic.get("lang"), arabic.get("dir")) == ("div", "post", "ar", "rtl")
    summary = arabic.find_class("post-summary")
    assert [p.text_content() for p in summary] == [ARABIC_SUMMARY]  # the summary inside it, not a sibling
    # Its date line and "Also in" are English, in their own direction: English is said where the post is Arabic.
    for name, text in (("post-meta", "May 21, 2024 · ليلى حداد"), ("also-in", "Also in Resilience")):
        [line] = arabic.find_class(name)
        assert line.get("lang") == "en", name
        [isolated] = line.findall("span")
        assert (isolated.get("dir"), isolated.text_content()) == ("auto", text)

    english = post_holder(document, ENGLISH_TITLE)
    assert (english.get("class"), english.get("lang"), english.get("dir")) == ("post", "en", "auto")
    assert english.find_class("post-meta")[0].get("lang") is None  # the same language as the email: said once
    # The plain-text part has no markup to carry it: the title is there as written.
    assert ARABIC_TITLE in previews["en"].email.text


def test_a_korean_post_in_a_french_email_keeps_its_canonical_tag(previews: dict[str, DigestPreview]) -> None:
    document = lxml_html.fromstring(previews["fr"].email.html)
    assert document.get("lang") == "fr"
    korean = post_holder(document, KOREAN_TITLE)
    assert (korean.get("lang"), korean.get("dir")) == ("ko-KR", "auto")  # stored as ko-KR, not as imported
    assert korean.find_class("post-meta")[0].get("lang") == "fr"
    assert "mai 2024" in korean.find_class("post-meta")[0].text_content()
    # An English post in a French email is English, its date line French.
    english = post_holder(document, ENGLISH_TITLE)
    assert english.get("lang") == "en" and english.find_class("post-meta")[0].get("lang") == "fr"


def test_the_theme_page_gives_each_post_its_language_and_direction(tmp_path: Path) -> None:
    with (
        web_site(tmp_path, f"sqlite:///{tmp_path / 'store.db'}", LANGUAGES, posts=rtl_posts()) as site,
        site.client() as client,
    ):
        english_page = client.get(f"/themes/{THEME}", headers={"Accept-Language": "en"})
        french_page = client.get("/themes/circular-economy?lang=fr")
    assert english_page.status_code == 200 and french_page.status_code == 200

    document = lxml_html.fromstring(english_page.text)
    arabic = post_holder(document, ARABIC_TITLE)
    assert (arabic.tag, arabic.get("lang"), arabic.get("dir")) == ("li", "ar", "rtl")
    assert [p.text_content() for p in arabic.findall("p") if p.get("class") is None] == [ARABIC_SUMMARY]
    [meta] = arabic.find_class("meta")
    assert meta.get("lang") == "en"
    assert [(span.get("dir"), span.text_content()) for span in meta.findall("span")] == [
        ("auto", "21 May 2024 · ليلى حداد · also in Resilience")
    ]
    english = post_holder(document, ENGLISH_TITLE)
    assert (english.tag, english.get("lang"), english.get("dir")) == ("li", "en", "auto")
    assert english.find_class("meta")[0].get("lang") is None

    korean = post_holder(lxml_html.fromstring(french_page.text), KOREAN_TITLE)
    assert (korean.get("lang"), korean.get("dir")) == ("ko-KR", "auto")
    assert korean.find_class("meta")[0].get("lang") == "fr"


# --- In a real browser ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium_browser() as launched:
        yield launched


# A title's direction and language as Chromium resolves them, its box against the box of the post that holds it,
# and the same for the line under it (the reader's language, isolated in a span).
PLACEMENT = """([title, holderSelector]) => {
  const link = [...document.querySelectorAll("a")].find((a) => a.textContent === title);
  const holder = link.closest(holderSelector);
  const outer = holder.getBoundingClientRect();
  const place = (el) => {
    const box = el.getBoundingClientRect();
    return { direction: getComputedStyle(el).direction, left: box.left - outer.left, right: outer.right - box.right,
             top: box.top, bottom: box.bottom };
  };
  const under = holder.querySelector("p span[dir]");
  return {
    title: place(link),
    arabic: link.matches(":lang(ar)"), english: link.matches(":lang(en)"),
    summaryDirection: getComputedStyle(holder.querySelector("p.post-summary, p:not([class])")).direction,
    under: { ...place(under), english: under.matches(":lang(en)") },
    holder: { left: outer.left, right: outer.right, width: outer.width },
  };
}"""

# Where a screenshot has ink: the first and last columns, within a strip of it, that hold a dark pixel.
INK = """async ([source, strip]) => {
  const image = new Image();
  image.src = source;
  await image.decode();
  const canvas = document.createElement("canvas");
  canvas.width = strip.width;
  canvas.height = strip.height;
  const context = canvas.getContext("2d");
  context.drawImage(image, strip.x, strip.y, strip.width, strip.height, 0, 0, strip.width, strip.height);
  const data = context.getImageData(0, 0, strip.width, strip.height).data;
  let first = -1, last = -1;
  for (let x = 0; x < strip.width; x++) {
    for (let y = 0; y < strip.height; y++) {
      const i = (y * strip.width + x) * 4;
      if (765 - data[i] - data[i + 1] - data[i + 2] > 300) { if (first < 0) first = x; last = x; break; }
    }
  }
  return { first, last, width: strip.width };
}"""

EDGE = 1.0  # CSS px: a box at the holder's edge
INK_EDGE = 4  # px: a glyph's side bearing and anti-aliasing
APART = 60  # px: a short title leaves at least this much of its line empty


def placement(page: Page, title: str, holder: str) -> dict[str, Any]:
    facts: dict[str, Any] = page.evaluate(PLACEMENT, [title, holder])
    return facts


def ink(browser: Browser, shot: Path, facts: dict[str, Any]) -> dict[str, int]:
    """The ink columns of the screenshot ``shot`` in the title's line, across the whole width of its post."""
    box, holder = facts["title"], facts["holder"]
    strip = {"x": round(holder["left"]), "y": round(box["top"]), "width": round(holder["width"]),
             "height": round(box["bottom"] - box["top"])}  # fmt: skip
    source = "data:image/png;base64," + base64.b64encode(shot.read_bytes()).decode("ascii")
    page = browser.new_page()
    try:
        columns: dict[str, int] = page.evaluate(INK, [source, strip])
    finally:
        page.close()
    assert columns["first"] >= 0, f"no ink in the line of the title (see {shot})"
    return columns


def check_right_to_left(browser: Browser, page: Page, shot: Path, holder: str) -> None:
    """The Arabic title runs right to left along its post's right edge, the English one left to right along the
    left edge: in the computed style, the boxes, and the pixels of the screenshot ``shot``."""
    arabic = placement(page, ARABIC_TITLE, holder)
    english = placement(page, ENGLISH_TITLE, holder)
    assert arabic["arabic"] and not arabic["english"], arabic
    assert english["english"] and not english["arabic"], english

    assert arabic["title"]["direction"] == "rtl", arabic
    assert arabic["summaryDirection"] == "rtl", arabic
    assert arabic["title"]["right"] <= EDGE < APART <= arabic["title"]["left"], arabic
    assert english["title"]["direction"] == "ltr", english
    assert english["summaryDirection"] == "ltr", english
    assert english["title"]["left"] <= EDGE < APART <= english["title"]["right"], english

    # The Arabic post's date line is English, read left to right, and lines up with the post on the right.
    assert arabic["under"]["english"] and arabic["under"]["direction"] == "ltr", arabic
    assert arabic["under"]["right"] <= EDGE < APART <= arabic["under"]["left"], arabic
    assert english["under"]["left"] <= EDGE, english

    arabic_ink, english_ink = ink(browser, shot, arabic), ink(browser, shot, english)
    assert arabic_ink["last"] >= arabic_ink["width"] - 1 - INK_EDGE and arabic_ink["first"] >= APART, arabic_ink
    assert english_ink["first"] <= INK_EDGE and english_ink["last"] <= english_ink["width"] - 1 - APART, english_ink


@requires_chromium
def test_the_email_lays_out_the_arabic_post_right_to_left(
    browser: Browser, previews: dict[str, DigestPreview], tmp_path: Path
) -> None:
    # Tall enough for the whole email: the screenshot's pixels are then the page's CSS pixels.
    with open_page(browser, width=1024, height=1600) as (page, requests):
        page.set_content(previews["en"].email.html, wait_until="load")
        assert page.evaluate("document.documentElement.scrollHeight") <= 1600
        shot = tmp_path / "rtl-email.png"
        page.screenshot(path=shot)
        artifact("rtl-email.png").write_bytes(shot.read_bytes())
        check_right_to_left(browser, page, shot, "div.post")
    assert requests.refused == []


@requires_chromium
def test_the_theme_page_lays_out_the_arabic_post_right_to_left(browser: Browser, tmp_path: Path) -> None:
    with web_site(tmp_path, f"sqlite:///{tmp_path / 'store.db'}", LANGUAGES, posts=rtl_posts()) as site:
        with browsing(browser, site, width=1024, javascript=False) as (page, refused):
            page.set_viewport_size({"width": 1024, "height": 1600})
            page.goto(site.server.url(f"/themes/{THEME}"))
            assert page.locator("html").get_attribute("lang") == "en"
            assert page.evaluate("document.documentElement.scrollHeight") <= 1600
            shot = tmp_path / "rtl-theme.png"
            page.screenshot(path=shot)
            artifact("rtl-theme.png").write_bytes(shot.read_bytes())
            check_right_to_left(browser, page, shot, "li")
        assert refused == []


def test_right_to_left_languages_are_said_outright_and_the_others_left_to_the_text() -> None:
    # Said outright: a title opening with a Latin word ("COP28 ...") must still read right to left.
    assert [text_direction(tag) for tag in ("ar", "he-IL", "fa", "ur-PK")] == ["rtl"] * 4
    assert [text_direction(tag) for tag in ("en", "ko-KR", "zz", "not a tag")] == ["auto"] * 4
