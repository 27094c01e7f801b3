"""The demo's local mail sink: an SMTP server that keeps every message it is given as an .eml file."""

from __future__ import annotations

from pathlib import Path

from syndication.delivery.outbox import run_outbox


def run_mail_sink(host: str, port: int, outbox: Path) -> int:
    """Accept mail on ``host:port`` into the folder ``outbox`` until SIGINT or SIGTERM; returns how many messages
    were kept."""
    return run_outbox(host, port, outbox)
