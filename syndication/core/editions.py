"""Edition windows: which period a cadence's edition covers, counted in the site's time zone. Pure.

A daily edition covers the local day that just ended, a weekly one the week (Monday to Monday), a monthly one
the calendar month; the window is ``(since, until]`` in UTC, so consecutive editions meet exactly.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from syndication.core.models import CADENCES


def period_before(cadence: str, now: datetime, timezone: str) -> tuple[datetime, datetime]:
    """The whole period of ``cadence`` that ended last before ``now``, as UTC ``(since, until)``."""
    if cadence not in CADENCES:
        raise ValueError(f"unknown cadence {cadence!r} (expected one of {', '.join(CADENCES)})")
    zone = ZoneInfo(timezone)
    local = now.astimezone(zone)
    today = datetime(local.year, local.month, local.day, tzinfo=zone)
    if cadence == "daily":
        until = today
        since = _local_day_before(until, zone)
    elif cadence == "weekly":
        until = today - timedelta(days=today.weekday())  # this week's Monday, 00:00 local
        since = datetime.combine((until - timedelta(days=7)).date(), until.timetz())
    else:
        until = today.replace(day=1)
        previous = (until - timedelta(days=1)).replace(day=1)
        since = datetime(previous.year, previous.month, 1, tzinfo=zone)
    # Days are counted in local time, so a window over a DST change is 23 or 25 hours long, as it should be.
    return since.astimezone(UTC), until.astimezone(UTC)


def _local_day_before(moment: datetime, zone: ZoneInfo) -> datetime:
    day = (moment - timedelta(hours=12)).date()
    return datetime(day.year, day.month, day.day, tzinfo=zone)
