"""A whole site for the web page tests: a store with posts, a real SMTP server, and the real app under uvicorn
whose ``site.base_url`` is its own address, so the links in the emails it sends lead back to it."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from starlette.types import ASGIApp, Receive, Scope, Send

from syndication.app.gathering import import_file
from syndication.app.service import Service, init_store
from syndication.config import Settings, load_settings
from syndication.core.passwords import hash_password
from syndication.store import database
from syndication.store import subscribers as subscriber_store
from syndication.web.app import create_app
from tests.live_server import LiveServer
from tests.smtp_server import SmtpTestServer, smtp_server
from tests.support import FIXTURE_THEMES, poll, post_record, write_jsonl

KEY = "web-test-signing-key-0123456789abcdef"
EDITOR = "ana"
PASSWORD = "correct horse battery staple"
# A cheap scrypt cost: the hash format carries it, and the tests sign in often.
EDITOR_HASH = hash_password(PASSWORD, log2_n=10)
CSRF_FIELD = re.compile(r'name="csrf_token" value="([^"]*)"')


class _Later:
    """An ASGI app given after the server is made: the app's settings need the server's port."""

    app: ASGIApp | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        assert self.app is not None
        await self.app(scope, receive, send)


@dataclass
class WebSite:
    """The running site: its settings, the app's server, the SMTP server, and a store handle for the test."""

    settings: Settings
    server: LiveServer
    smtp: SmtpTestServer
    service: Service

    def client(self) -> httpx.Client:
        """An HTTP client of the site (no redirects followed, cookies kept)."""
        return httpx.Client(base_url=self.server.url(), timeout=10, follow_redirects=False)

    def status_of(self, address: str) -> str | None:
        """The status of the subscriber with ``address``, or None."""
        with database.transaction(self.service.engine) as session:
            subscriber = subscriber_store.subscriber_by_email(session, address)
        return subscriber.status if subscriber else None


def site_posts() -> list[dict[str, Any]]:
    """A few posts of May 2024 over the fixture themes."""
    return [
        post_record(1, title="Malmö opens a low-emission zone", themes=["climate-action"]),
        post_record(2, title="Sponge streets for São Paulo", themes=["resilience"]),
        post_record(3, title="Repair cafés & <tool> libraries", themes=["circular-economy"]),
        post_record(4, title="Heat pumps in Kraków", themes=["climate-action", "resilience"]),
    ]


@contextmanager
def web_site(
    folder: Path,
    database_url: str,
    extra: str = "",
    *,
    posts: list[dict[str, Any]] | None = None,
    environ: Mapping[str, str] | None = None,
    wake_sender: Callable[[], None] | None = None,
    **smtp: Any,
) -> Iterator[WebSite]:
    """A running site in ``folder`` on ``database_url``; ``extra`` TOML is added to its configuration;
    ``wake_sender`` is given to the app as ``syndication run`` gives it."""
    later = _Later()
    server = LiveServer(later)
    started = False
    try:
        with smtp_server(**smtp) as mail:
            settings = load_settings(
                _write_config(folder, server, mail, database_url, extra),
                environ={"SYNDICATION_SECRET_KEY": KEY, **(environ or {})},
            )
            init_store(settings)
            with Service.open(settings) as service:
                records = site_posts() if posts is None else posts
                report = import_file(service, write_jsonl(folder / "posts.jsonl", records))
                assert report.ok, report
                later.app = create_app(settings, wake_sender)
                server.start()
                started = True
                yield WebSite(settings, server, mail, service)
    finally:
        if started:
            server.close()
        else:
            server._socket.close()  # it never started: its socket is all there is to close


def _write_config(folder: Path, server: LiveServer, mail: SmtpTestServer, database_url: str, extra: str) -> Path:
    config = folder / "config.toml"
    config.write_text(
        f"""
[site]
title = "Test Network"
base_url = "{server.url()}"
language = "en"
timezone = "Europe/Berlin"

[database]
url = "{database_url}"

[smtp]
host = "127.0.0.1"
port = {mail.port}
timeout_seconds = 5

[mail]
from_address = "news@example.org"

[feeds]
output_dir = "{folder / "feeds"}"

[editors.passwords]
{EDITOR} = "{EDITOR_HASH}"
{FIXTURE_THEMES}
{extra}
""",
        encoding="utf-8",
    )
    return config


def csrf_of(html: str) -> str:
    """The CSRF token a page's form carries."""
    match = CSRF_FIELD.search(html)
    assert match, "the page has no form with a CSRF token"
    return match.group(1)


def form_post(
    client: httpx.Client, path: str, data: Mapping[str, str | list[str]], page: str | None = None, **headers: str
) -> httpx.Response:
    """Post ``data`` to ``path`` with the CSRF token of ``page`` (by default: the form page at ``path`` itself)."""
    html = page if page is not None else client.get(path).text
    return client.post(path, data={"csrf_token": csrf_of(html), **data}, headers=headers)


def link_in_email(smtp: SmtpTestServer, address: str, path: str, timeout: float = 10.0) -> str:
    """The URL of the ``path`` link (``subscribe/confirm``, ``preferences``) in the last email ``address``
    received (its plain-text part), waiting for that email: the pages send it after answering."""
    received = poll(lambda: smtp.received_for(address), timeout, interval=0.02)
    assert received, f"no email for {address}"
    body = received[-1].parsed().get_body(("plain",))
    assert body is not None
    match = re.search(rf"http://127\.0\.0\.1:\d+/{path}/[A-Za-z0-9._-]+", body.get_content())
    assert match, body.get_content()
    return match.group(0)
