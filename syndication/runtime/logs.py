"""Log output for the long-running service: one line per event, plain text or JSON lines (``[logging] format``).

Fields given with ``extra={"job": ..., ...}`` become keys of the JSON object, so a log collector can count
deliveries or alert on a failed job without parsing sentences. A record logged while the web app answers a
request carries that request's id (``request_id``, set by the web app in ``REQUEST_ID``).
"""

from __future__ import annotations

import json
import logging
import sys
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import TextIO

from syndication.config import LoggingSettings

# Attributes every LogRecord has; anything else on a record came from ``extra=`` and is worth keeping.
# (uvicorn's ``color_message`` is the message again with terminal colours.)
_STANDARD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message",
    "asctime",
    "taskName",
    "color_message",
}


# The id of the HTTP request being answered (each request runs in a context of its own), or None.
REQUEST_ID: ContextVar[str | None] = ContextVar("request_id", default=None)


class RequestIdFilter(logging.Filter):
    """Puts the id of the request being answered, if any, on each record as ``request_id``."""

    def filter(self, record: logging.LogRecord) -> bool:
        request_id = REQUEST_ID.get()
        if request_id is not None and not hasattr(record, "request_id"):
            record.request_id = request_id
        return True


class JsonLineFormatter(logging.Formatter):
    """Formats a record as one JSON object: time, level, logger, message, the extra fields, any traceback."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value if isinstance(value, str | int | float | bool | None) else str(value)
        if record.exc_info:
            entry["traceback"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def configure_logging(settings: LoggingSettings, stream: TextIO | None = None) -> None:
    """Send the service's log records to ``stream`` (standard error) in the configured format and level."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.addFilter(RequestIdFilter())
    if settings.format == "json":
        handler.setFormatter(JsonLineFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(settings.level)
    # APScheduler's per-run lines duplicate ours; Alembic's describe its plugins at every start; flufl.bounce logs
    # a line per detector for every message that is not a standard DSN.
    for chatty in ("apscheduler", "alembic", "flufl.bounce"):
        logging.getLogger(chatty).setLevel(max(logging.WARNING, root.level))
    logging.getLogger("apscheduler.scheduler").addFilter(_still_running)


def _still_running(record: logging.LogRecord) -> bool:
    # A long send outlasts the drain interval: the next drain is skipped, as intended, and needs no warning
    # every interval. Missed runs (a real loss) are still logged.
    return "maximum number of running instances reached" not in record.getMessage()
