"""The editor's dashboard: what the next edition of each cadence holds so far, who subscribes to what, and how the
last editions went. Read-only; the web's dashboard page shows it as it is."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Final

from syndication.app.digests import compose
from syndication.app.editions import EditionReport, list_editions
from syndication.app.service import Service
from syndication.app.subscribers import following_counts, subscriber_counts
from syndication.core.models import CADENCES
from syndication.scheduling.cadences import latest_fire, next_fire, parse_crontab

LAST_EDITIONS: Final = 12


@dataclass(frozen=True)
class Upcoming:
    """The next edition of a cadence: when it goes, the period it covers so far (since its last fire time) and the
    posts it would hold now, per theme slug (None: posts of no theme). ``off`` when the cadence has no schedule."""

    cadence: str
    off: bool
    crontab: str = ""
    since: datetime | None = None
    goes: datetime | None = None
    per_theme: dict[str | None, int] = field(default_factory=dict)
    posts: int = 0


@dataclass(frozen=True)
class Dashboard:
    """The dashboard's figures: the upcoming edition per cadence (in CADENCES order), subscribers per (cadence,
    status), active subscribers per followed theme slug (None: everything), the last editions with their
    deliveries (and the reason the sender paused one for, ``edition.reason``), newest first."""

    upcoming: list[Upcoming]
    subscribers: dict[tuple[str, str], int]
    following: dict[str | None, int]
    editions: list[EditionReport]


def dashboard(service: Service) -> Dashboard:
    """The dashboard as it is now."""
    return Dashboard(
        upcoming=[upcoming_edition(service, cadence) for cadence in CADENCES],
        subscribers=subscriber_counts(service),
        following=following_counts(service),
        editions=list_editions(service, limit=LAST_EDITIONS),
    )


def upcoming_edition(service: Service, cadence: str) -> Upcoming:
    """The next edition of ``cadence`` as it stands now (``[schedule.cadences]``, read in ``site.timezone``)."""
    settings = service.settings
    crontab = settings.schedule.cadences.get(cadence, "off")
    if crontab == "off":
        return Upcoming(cadence, off=True)
    now = service.clock()
    trigger = parse_crontab(crontab, settings.site.timezone)
    since = latest_fire(trigger, now)
    # What its next edition would hold if made now: the window's posts and the late ones no edition took.
    digest = compose(service, since, now, cadence=cadence) if since is not None else None  # never fired yet
    per_theme: dict[str | None, int] = {}
    for section in digest.sections if digest else ():
        per_theme[section.theme.slug if section.theme else None] = section.total
    return Upcoming(
        cadence,
        off=False,
        crontab=crontab,
        since=since,
        goes=next_fire(trigger, now),
        per_theme=per_theme,
        posts=digest.post_count if digest else 0,
    )
