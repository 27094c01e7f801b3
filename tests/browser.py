"""A real browser for tests: Debian's ``chromium`` driven by Playwright (sync API), offline.

No browser is downloaded (never ``playwright install``): Playwright launches the system Chromium that CI installs
with apt-get. Tests that need it are skipped with the reason when it is missing (``requires_chromium``).

Pages run offline: every request a page makes goes through ``open_page``'s router, which answers the URLs it was
given (generated images, say) and refuses everything else, noting what it refused.
"""

from __future__ import annotations

import shutil
import struct
import zlib
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest
from playwright.sync_api import Browser, Page, Route, sync_playwright

CHROMIUM = shutil.which("chromium")
# Chromium's own background connections (updates, sync, QUIC probes) are refused on test machines: switch them off.
CHROMIUM_ARGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
requires_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium is not installed (apt-get install chromium); CI installs it"
)

# Screenshots and other files worth looking at after a run; git-ignored.
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"


def artifact(name: str) -> Path:
    """Where to save the artifact ``name`` (the folder is created)."""
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS / name


@contextmanager
def chromium_browser() -> Iterator[Browser]:
    """Headless system Chromium under Playwright; browser and driver are closed on the way out."""
    if CHROMIUM is None:
        pytest.skip("chromium is not installed (apt-get install chromium); CI installs it")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=list(CHROMIUM_ARGS), headless=True)
        try:
            yield browser
        finally:
            browser.close()


@dataclass
class Resource:
    """A canned answer to one URL."""

    body: bytes
    content_type: str
    status: int = 200


@dataclass
class Requests:
    """What a page asked for: answered from the given resources, or refused."""

    answered: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)


@contextmanager
def open_page(
    browser: Browser,
    *,
    width: int,
    height: int = 800,
    color_scheme: Literal["light", "dark"] = "light",
    resources: Mapping[str, Resource] | None = None,
) -> Iterator[tuple[Page, Requests]]:
    """A page of its own context at ``width`` x ``height`` CSS pixels, offline but for ``resources``."""
    known = dict(resources or {})
    requests = Requests()

    def route(request_route: Route) -> None:
        url = request_route.request.url
        resource = known.get(url)
        if resource is None:
            requests.refused.append(url)
            request_route.abort("blockedbyclient")
            return
        requests.answered.append(url)
        request_route.fulfill(status=resource.status, content_type=resource.content_type, body=resource.body)

    context = browser.new_context(
        viewport={"width": width, "height": height}, device_scale_factor=1, color_scheme=color_scheme
    )
    try:
        context.route("**/*", route)
        yield context.new_page(), requests
    finally:
        context.close()


def png(width: int, height: int, colour: tuple[int, int, int], band: tuple[int, int, int] | None = None) -> bytes:
    """A small RGB PNG of one colour, with its lower third in ``band`` if given: images without Pillow."""
    top = b"\x00" + bytes(colour) * width
    bottom = b"\x00" + bytes(band or colour) * width
    split = height - height // 3
    raw = top * split + bottom * (height - split)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB, no interlace
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")
