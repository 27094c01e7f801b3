"""The digest email in a real browser: headless Chromium lays it out at 600 px (desktop) and 375 px (phone).

A realistic digest (four sections, one over its cap, images, long titles, an unbreakable URL-like word, text in
Swedish, Portuguese, Japanese and emoji, an editor's intro) is rendered in English and Spanish from a store, loaded
with ``set_content`` and measured: nothing may stick out sideways at 375 px, the 600 px container must reflow to
the phone's width, and every piece of text must be readable in light and dark mode. Full-page screenshots land
in ``test-artifacts/`` to be looked at.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any, Literal

import pytest
from playwright.sync_api import Browser, Page

from syndication.app.digests import DigestPreview, preview_digest
from syndication.app.gathering import import_file
from tests.browser import Requests, Resource, artifact, chromium_browser, open_page, png, requires_chromium
from tests.support import NOW, opened, post_record, write_config, write_jsonl

pytestmark = requires_chromium

SINCE = datetime(2024, 5, 1, tzinfo=UTC)
BASE_URL = "https://news.example.org"
MEDIA = "https://media.example.org/digest"
PNG = "image/png"
# Served to the page as real PNGs; BROKEN_IMAGE is refused, as mail clients that block images do.
IMAGES = {
    f"{MEDIA}/malmo-heat.png": Resource(png(1200, 630, (38, 112, 94), (230, 196, 120)), PNG),
    f"{MEDIA}/bus-depot.png": Resource(png(800, 450, (52, 84, 140), (210, 220, 230)), PNG),
    f"{MEDIA}/flood-wall.png": Resource(png(600, 800, (90, 120, 150), (40, 60, 70)), PNG),
    f"{MEDIA}/repair-cafe.png": Resource(png(300, 200, (180, 90, 60)), PNG),
}
BROKEN_IMAGE = f"{MEDIA}/missing.png"
UNBREAKABLE = (
    "https://data.example.org/datasets/"
    "kitakyushu_saopaulo_malmo_municipal_waste_heat_recovery_comparison_2024_final_revision_with_annexes.csv"
)
INTRO = (
    "Welcome to this month's digest — from Malmö to São Paulo and 北九州市 🌱. Three cities, one question: "
    "where does the heat go?\n\n"
    f"The full comparison dataset: {UNBREAKABLE}"
)
CAP = 2
LANGUAGES = ("en", "es")
MORE_TEXT = {"en": "{count} more on {name} →", "es": "{count} más sobre {name} →"}


def digest_posts() -> list[dict[str, Any]]:
    """Posts of May 2024 over three themes and none: climate action has five (three over the cap of two)."""

    def post(number: int, day: int, title: str, themes: list[str], **fields: Any) -> dict[str, Any]:
        return post_record(
            number, title=title, themes=themes, regions=None, published=f"2024-05-{day:02d}T09:30:00Z", **fields
        )

    return [
        post(
            1,
            28,
            "Malmö's district heating network cuts emissions by a third as São Paulo and 北九州市 compare notes on "
            "recovering waste heat from data centres, sewage and steelworks 🌍🔥",
            ["climate-action"],
            summary="Engineers in Malmö explain how a 40-year-old network became the city's biggest climate win.",
            image={"url": f"{MEDIA}/malmo-heat.png", "alt": "Insulated pipes being laid in a trench in Malmö"},
            authors=["Zoë Ångström", "João Conceição", "田中 花子"],
        ),
        post(
            2,
            27,
            "Every municipal bus in the region now runs on electricity",
            ["climate-action", "resilience"],
            summary=f"The depot's charging logs are public: {UNBREAKABLE} — download them and check our numbers.",
            image={"url": f"{MEDIA}/bus-depot.png", "alt": ""},
        ),
        post(3, 20, "Heat pumps: the quiet revolution in Kraków's tenement blocks", ["climate-action"]),
        post(4, 15, "Carbon budget update for the second quarter", ["climate-action"]),
        post(5, 10, "Why the tram line extension was approved after all", ["climate-action"]),
        post(
            6,
            26,
            "Sea walls or sponge streets? 🌊 How Porto Alegre and São Paulo are rethinking flood defence after 2024",
            ["resilience"],
            summary="Cities that once poured concrete now plant trees, dig ponds and pay farmers upstream to hold "
            "water back.",
            image={"url": f"{MEDIA}/flood-wall.png", "alt": "A green flood barrier beside a river"},
        ),
        post(7, 12, "Heatwave plans ☀️ for Sevilla, Malmö and Athens", ["resilience"]),
        post(
            8,
            25,
            "Repair cafés & tool libraries: 1,200 volunteers fixed 18,000 things last year",
            ["circular-economy"],
            summary="Toasters, bicycles, school trousers: what gets mended and what can't be.",
            image={"url": f"{MEDIA}/repair-cafe.png", "alt": "Volunteers repairing a bicycle"},
        ),
        post(
            9,
            22,
            "Deposit-return for glass arrives in January",
            ["circular-economy"],
            image={"url": BROKEN_IMAGE, "alt": "Crates of returned glass bottles"},
        ),
        post(10, 24, "Letters: your questions on the new waste collection calendar", []),
    ]


@pytest.fixture(scope="module")
def previews(tmp_path_factory: pytest.TempPathFactory) -> dict[str, DigestPreview]:
    """The digest of May 2024 from a store, in each language, with its section cap at two."""
    folder = tmp_path_factory.mktemp("digest")
    config = write_config(folder, f"sqlite:///{folder / 'store.db'}", f"[digest]\nsection_cap = {CAP}\n")
    with opened(config) as service:
        report = import_file(service, write_jsonl(folder / "posts.jsonl", digest_posts()))
        assert report.ok and report.added == len(digest_posts()), report
        result = {}
        for language in LANGUAGES:
            preview = preview_digest(service, since=SINCE, until=NOW, language=language, intro=INTRO)
            assert preview is not None
            assert preview.email.problems == ()
            artifact(f"digest-{language}.html").write_text(preview.email.html, encoding="utf-8")
            result[language] = preview
    return result


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium_browser() as launched:
        yield launched


# Every element's box, the document's and the container's widths: what sticks out sideways, and by how much.
LAYOUT = """() => {
  const width = window.innerWidth;
  const name = (el) => el.tagName.toLowerCase() + [...el.classList].map((c) => "." + c).join("");
  const overflowing = [];
  for (const el of document.body.querySelectorAll("*")) {
    const box = el.getBoundingClientRect();
    if (box.width === 0 && box.height === 0) continue;
    if (box.right > width + 0.5 || box.left < -0.5) {
      overflowing.push(`${name(el)} spans ${box.left.toFixed(1)}..${box.right.toFixed(1)}`);
    }
  }
  return {
    documentScrollWidth: document.documentElement.scrollWidth,
    bodyScrollWidth: document.body.scrollWidth,
    containerWidth: document.querySelector("table.container").getBoundingClientRect().width,
    containerLeft: document.querySelector("table.container").getBoundingClientRect().left,
    contentWidth: document.querySelector("td.content").getBoundingClientRect().width,
    overflowing,
  };
}"""

# WCAG contrast of every piece of visible text against the background it is drawn on (nearest opaque ancestor).
CONTRAST = """() => {
  const parse = (value) => {
    const parts = value.match(/rgba?\\(([^)]*)\\)/);
    if (!parts) return null;
    const [r, g, b, a = 1] = parts[1].split(/[\\s,\\/]+/).filter(Boolean).map(Number);
    return { r, g, b, a };
  };
  const channel = (v) => ((v /= 255) <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4);
  const luminance = (c) => 0.2126 * channel(c.r) + 0.7152 * channel(c.g) + 0.0722 * channel(c.b);
  const backdrop = (el) => {
    for (let node = el; node; node = node.parentElement) {
      const colour = parse(getComputedStyle(node).backgroundColor);
      if (colour && colour.a > 0) return colour;
    }
    return { r: 255, g: 255, b: 255, a: 1 };
  };
  const name = (el) => el.tagName.toLowerCase() + [...el.classList].map((c) => "." + c).join("");
  const failures = [];
  let checked = 0;
  for (const el of document.body.querySelectorAll("*")) {
    if (el.closest(".preheader")) continue;
    if (![...el.childNodes].some((n) => n.nodeType === Node.TEXT_NODE && n.textContent.trim())) continue;
    const style = getComputedStyle(el);
    if (style.display === "none" || style.visibility === "hidden") continue;
    const fg = parse(style.color), bg = backdrop(el);
    const [hi, lo] = [luminance(fg), luminance(bg)].sort((x, y) => y - x);
    const ratio = (hi + 0.05) / (lo + 0.05);
    const size = parseFloat(style.fontSize), bold = Number(style.fontWeight) >= 700;
    const needed = size >= 24 || (size >= 18.66 && bold) ? 3 : 4.5;
    checked += 1;
    if (ratio < needed) {
      const text = el.textContent.trim().slice(0, 30);
      const back = `rgb(${bg.r}, ${bg.g}, ${bg.b})`;
      failures.push(`${name(el)} "${text}": ${style.color} on ${back} is ${ratio.toFixed(2)}:1, under ${needed}:1`);
    }
  }
  return { checked, failures };
}"""

# Every image: its alt text, whether it loaded, and its rendered width.
IMAGE_FACTS = """() => [...document.images].map((img) => ({
  src: img.getAttribute("src"),
  alt: img.getAttribute("alt"),
  loaded: img.complete && img.naturalWidth > 0,
  width: img.getBoundingClientRect().width,
}))"""

Scheme = Literal["light", "dark"]
# 600 px is the container's own width, so the phone rules (max-width: 620px) apply there too; 1024 px is a desktop
# client's reading pane, where the container keeps its fixed 600 px.
VIEWS: list[tuple[str, int, Scheme]] = [
    ("en", 1024, "light"),
    ("en", 600, "light"),
    ("en", 375, "light"),
    ("es", 600, "light"),
    ("es", 375, "light"),
    ("en", 600, "dark"),
    ("en", 375, "dark"),
]


def screenshot_name(language: str, width: int, scheme: Scheme) -> str:
    return f"digest-{language}-{width}{'-dark' if scheme == 'dark' else ''}.png"


@pytest.mark.parametrize(("language", "width", "scheme"), VIEWS, ids=[screenshot_name(*v)[7:-4] for v in VIEWS])
def test_digest_in_chromium(
    browser: Browser, previews: dict[str, DigestPreview], language: str, width: int, scheme: Scheme
) -> None:
    preview = previews[language]
    with open_page(browser, width=width, height=800, color_scheme=scheme, resources=IMAGES) as (page, requests):
        page.set_content(preview.email.html, wait_until="load")
        shot = artifact(screenshot_name(language, width, scheme))
        page.screenshot(path=shot, full_page=True)
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        layout = page.evaluate(LAYOUT)
        contrast = page.evaluate(CONTRAST)
        check_meaning(page, preview, language)
        check_images(page, preview, requests)

    assert not layout["overflowing"], f"sticks out of {width} px (see {shot}):\n" + "\n".join(layout["overflowing"])
    assert layout["documentScrollWidth"] <= width, layout
    assert layout["bodyScrollWidth"] <= width, layout
    if width >= 600:
        assert layout["containerWidth"] == 600, layout
        assert layout["containerLeft"] == (width - 600) / 2, layout  # centred
    else:
        assert layout["containerWidth"] <= width, layout  # the 600 px table reflowed to the phone
        assert layout["contentWidth"] >= width - 1, layout  # and fills it
    assert contrast["checked"] > 20, contrast
    assert not contrast["failures"], f"unreadable in {scheme} mode (see {shot}):\n" + "\n".join(contrast["failures"])


def check_meaning(page: Page, preview: DigestPreview, language: str) -> None:
    """The subject as the heading, every shown post's linked title, the "N more" links, a hidden preheader."""
    heading = page.locator("h1")
    assert heading.count() == 1 and heading.is_visible()
    assert heading.inner_text() == preview.email.subject

    preheader = page.locator(".preheader")
    assert preheader.count() == 1
    assert not preheader.is_visible() and preheader.bounding_box() is None  # not rendered: nothing a reader sees
    assert preheader.text_content() == preview.email.preheader  # yet there for the inbox list

    items = [item for section in preview.digest.sections for item in section.items]
    titles = page.locator("a.post-title").evaluate_all(
        "(links) => links.map((a) => [a.innerText, a.getAttribute('href'), a.checkVisibility()])"
    )
    assert titles == [[item.post.title, item.post.url, True] for item in items]

    capped = [section for section in preview.digest.sections if section.more]
    assert [(s.theme.slug if s.theme else None, s.more) for s in capped] == [("climate-action", 3)]
    for section in capped:
        assert section.theme is not None
        more = page.locator(f'p.more a[href="{BASE_URL}/themes/{section.theme.slug}?lang={language}"]')
        assert more.is_visible()
        assert more.inner_text() == MORE_TEXT[language].format(count=section.more, name=section.theme.name)

    assert "北九州市" in page.locator("div.intro").inner_text()


def check_images(page: Page, preview: DigestPreview, requests: Requests) -> None:
    """Each post's image, with alt text, no wider than the content; all load but the one refused on purpose."""
    facts = page.evaluate(IMAGE_FACTS)
    shown = [item.post for section in preview.digest.sections for item in section.items if item.post.image]
    assert [fact["src"] for fact in facts] == [post.image.url for post in shown if post.image]
    content_width = page.locator("td.content").evaluate("(td) => td.clientWidth")
    for fact, post in zip(facts, shown, strict=True):
        assert post.image is not None
        assert fact["alt"] and fact["alt"] == (post.image.alt or post.title)
        assert fact["loaded"] == (fact["src"] != BROKEN_IMAGE), fact
        assert 0 < fact["width"] <= content_width, fact
    assert requests.refused == [BROKEN_IMAGE]
    assert set(requests.answered) == set(IMAGES)
