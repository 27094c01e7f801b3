"""Publishing: build the feeds from the store, and the feed of sent editions."""

from __future__ import annotations

from pathlib import Path

from syndication.app.service import Service
from syndication.feeds.build import FeedBuildReport, build_feeds


def publish_feeds(
    service: Service, directory: Path | None = None, *, full: bool = False, archives: bool = True
) -> FeedBuildReport:
    """Write every feed that changed since the last build (or all of them), then the manifest.

    ``directory`` defaults to ``[feeds] output_dir``; ``archives=False`` leaves archive pages for a later build.
    """
    return build_feeds(service.settings, service.engine, service.clock(), directory, full=full, archives=archives)
