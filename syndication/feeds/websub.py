"""WebSub publisher notifications: tell the hub which feeds changed, so subscribers get them at once."""

from __future__ import annotations

import logging
from collections.abc import Iterable

log = logging.getLogger(__name__)


def notify_hub(hub: str, urls: Iterable[str], timeout: float = 10.0) -> list[str]:
    """POST ``hub.mode=publish`` for each URL; a failing hub is logged and never fails the build.

    Returns the URLs the hub did not accept.
    """
    import httpx  # slow to import (and with the dev extra, rich and pygments with it): only when there is a hub

    refused: list[str] = []
    with httpx.Client(timeout=timeout, follow_redirects=False) as client:
        for url in urls:
            try:
                response = client.post(hub, data={"hub.mode": "publish", "hub.url": url})
            except httpx.HTTPError as error:
                log.warning("websub hub %s: cannot notify %s: %s", hub, url, error)
                refused.append(url)
                continue
            if not 200 <= response.status_code < 300:
                log.warning("websub hub %s refused %s: HTTP %s", hub, url, response.status_code)
                refused.append(url)
    return refused
