"""When each cadence's edition is due, and which window it covers: crontab strings read in the site's time zone.

An edition's window runs from the cadence's previous fire time to this one, ``(since, until]`` in UTC, so
consecutive editions meet exactly and a late run still covers the period it should: the window comes from the
schedule, never from the clock at run time. Over a DST change a daily window is 23 or 25 hours long, and no
local day is skipped or doubled. APScheduler's ``CronTrigger`` does the calendar arithmetic.

Time goes forward only (``due_windows``): what is due follows from the last edition made (the store's record)
and the crontab, so a clock that jumps neither repeats, skips nor anticipates a window. No window ends after
``now``; a clock behind the last edition's end makes nothing until it passes it; and the next window always
starts where the last edition ended, so a post is never left between two editions.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from apscheduler.triggers.cron import CronTrigger

# How far back to look for a previous fire time, widening step by step (a minute suits a crontab with seconds,
# a year one that fires yearly): few steps forward from there to the fire time itself.
_LOOKBACK = (timedelta(minutes=1), timedelta(hours=2), timedelta(days=2), timedelta(days=35), timedelta(days=400))


def parse_crontab(crontab: str, timezone: str) -> CronTrigger:
    """A trigger for a five-field crontab (minute hour day month weekday), or six fields with seconds first.

    Seconds are for tests and trials (an edition every few seconds); real schedules use five fields.
    """
    fields = crontab.split()
    zone = ZoneInfo(timezone)
    try:
        if len(fields) == 5:
            return CronTrigger.from_crontab(crontab, timezone=zone)
        if len(fields) == 6:
            second, minute, hour, day, month, day_of_week = fields
            return CronTrigger(second=second, minute=minute, hour=hour, day=day, month=month,
                               day_of_week=day_of_week, timezone=zone)  # fmt: skip
    except ValueError as error:
        raise ValueError(f"crontab {crontab!r}: {error}") from None
    raise ValueError(f"crontab {crontab!r} has {len(fields)} fields (expected 5, or 6 with seconds first)")


def next_fire(trigger: CronTrigger, after: datetime) -> datetime | None:
    """The first fire time strictly after ``after``, in UTC."""
    fire: datetime | None = trigger.get_next_fire_time(None, after + timedelta(microseconds=1))
    return fire.astimezone(UTC) if fire else None


def latest_fire(trigger: CronTrigger, at_or_before: datetime) -> datetime | None:
    """The last fire time at or before ``at_or_before``, in UTC."""
    for lookback in _LOOKBACK:
        fire: datetime | None = trigger.get_next_fire_time(None, at_or_before - lookback)
        if fire is None or fire > at_or_before:
            continue
        while True:
            following = next_fire(trigger, fire)
            if following is None or following > at_or_before:
                return fire.astimezone(UTC)
            fire = following
    return None


def window_ending(trigger: CronTrigger, until: datetime) -> tuple[datetime, datetime]:
    """The window of the edition due at fire time ``until``: from the fire time before it to ``until``."""
    since = latest_fire(trigger, until - timedelta(microseconds=1))
    if since is None:
        raise ValueError(f"the schedule has no fire time before {until.isoformat()}")
    return since, until.astimezone(UTC)


def due_windows(
    trigger: CronTrigger, now: datetime, grace: timedelta, last_until: datetime | None
) -> list[tuple[datetime, datetime]]:
    """The windows whose edition is due at ``now``, oldest first, given the end of the last edition made
    (``last_until``, None before the first): one per fire time after ``last_until``, up to ``now`` and no older
    than ``grace``.

    The rules, which hold however the clock moves:

    - **Nothing that has not ended.** Every window ends at a fire time at or before ``now``.
    - **Each window once.** Only fire times after ``last_until`` count, so what was made is never made again,
      and a clock that jumps forward over several fire times gets each missing window once, oldest first.
    - **Time goes forward only.** With ``now`` before ``last_until`` (the clock moved back) nothing is due:
      the scheduler waits until the clock passes the last edition's end, then goes on.
    - **No post in a gap.** The first window starts at ``last_until``, not at the fire time before its end: a
      fire time older than ``grace`` (the service was down, or the clock jumped forward past it) gets no late
      edition of its own, but its posts go in the next edition made, whose window reaches back to the last one.
    - **A new cadence** (no edition yet) starts with the latest window only, not a backlog.
    """
    latest = latest_fire(trigger, now)
    if latest is None or now - latest > grace:
        return []  # the latest fire time is not due yet or went out of date: wait for the next one
    if last_until is None:
        return [window_ending(trigger, latest)]
    if latest <= last_until:
        return []  # made already, or the clock is behind the last edition's end
    fires = [latest]
    while True:
        earlier = latest_fire(trigger, fires[-1] - timedelta(microseconds=1))
        if earlier is None or earlier <= last_until or now - earlier > grace:
            break
        fires.append(earlier)
    windows = []
    since = last_until.astimezone(UTC)
    for fire in reversed(fires):
        windows.append((since, fire))
        since = fire
    return windows
