"""Behind a reverse proxy (GitHub #20): the visitor's address comes from X-Forwarded-For only when the request came
from one of ``[web] trusted_proxies``; from anybody else the header is ignored, so that it cannot dodge a limit.

The real app under a real uvicorn, over HTTP; the test's client is the "proxy" (it connects from 127.0.0.1).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from syndication.config import load_settings
from syndication.errors import ConfigError
from tests.support import write_config
from tests.web_site import form_post, web_site

# One subscribe form post per client address per hour: a second from the same address is refused (429).
LIMITS = "subscribe_per_client_per_hour = 1\nsubscribe_per_address_per_hour = 50\n"


def subscribe_from(site_folder: Path, database_url: str, trusted: str, visitors: list[str]) -> list[int]:
    """The status of one subscribe post from each of ``visitors`` (their X-Forwarded-For) on a site that trusts
    ``trusted`` (a TOML list)."""
    extra = f"[web]\ntrusted_proxies = {trusted}\n{LIMITS}"
    with web_site(site_folder, database_url, extra) as site, site.client() as client:
        page = client.get("/subscribe").text
        choices: dict[str, str | list[str]] = {"themes": [], "cadence": "weekly", "language": "en"}
        return [
            form_post(client, "/subscribe", {**choices, "email": f"v{n}@example.org"}, page, **{
                "X-Forwarded-For": visitor, "X-Forwarded-Proto": "https"}).status_code
            for n, visitor in enumerate(visitors)
        ]  # fmt: skip


def test_visitors_behind_a_trusted_proxy_each_have_their_own_limit(tmp_path: Path, database_url: str) -> None:
    statuses = subscribe_from(tmp_path, database_url, '["10.1.2.3", "127.0.0.0/8"]', ["203.0.113.7", "198.51.100.2"])
    assert statuses == [200, 200]


def test_a_visitor_behind_a_trusted_proxy_is_still_limited(tmp_path: Path, database_url: str) -> None:
    # The same visitor twice, through the proxy: their own address reached its limit.
    statuses = subscribe_from(tmp_path, database_url, '["127.0.0.1"]', ["203.0.113.7", "203.0.113.7"])
    assert statuses == [200, 429]


def test_forwarded_headers_from_an_untrusted_client_are_ignored(tmp_path: Path, database_url: str) -> None:
    # The proxy is elsewhere: this client's X-Forwarded-For is not believed, so both posts are this client's.
    statuses = subscribe_from(tmp_path, database_url, '["10.0.0.0/8"]', ["203.0.113.7", "198.51.100.2"])
    assert statuses == [200, 429]
    (tmp_path / "none").mkdir()
    none = subscribe_from(tmp_path / "none", database_url, "[]", ["203.0.113.7", "198.51.100.2"])
    assert none == [200, 429]


def test_metrics_see_the_visitor_not_the_proxy(tmp_path: Path, database_url: str) -> None:
    extra = '[web]\ntrusted_proxies = ["127.0.0.1"]\n'
    with web_site(tmp_path, database_url, extra) as site, site.client() as client:
        assert client.get("/metrics").status_code == 200  # from loopback, directly
        outside = client.get("/metrics", headers={"X-Forwarded-For": "203.0.113.7"})
    assert outside.status_code == 403  # a visitor from outside, through the proxy


def test_a_proxy_that_is_not_an_address_is_refused_naming_it(tmp_path: Path) -> None:
    config = write_config(tmp_path, f"sqlite:///{tmp_path / 'store.db'}", '[web]\ntrusted_proxies = ["proxy.lan"]\n')
    with pytest.raises(ConfigError, match=r"'proxy\.lan' is not an IP address or network"):
        load_settings(config, environ={})
