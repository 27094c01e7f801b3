"""A local SMTP server that keeps every message it receives as an .eml file.

For the demo and for trying the service without a mail relay: point ``[smtp]`` at it and read what was sent in
the outbox folder. Not a relay: it delivers nothing onwards.
"""

from __future__ import annotations

import re
import signal
import threading
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller

_UNSAFE = re.compile(r"[^A-Za-z0-9@._+-]+")


class OutboxHandler:
    """aiosmtpd handler: one file per message and recipient, numbered in arrival order."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.count = 0
        self._lock = threading.Lock()
        folder.mkdir(parents=True, exist_ok=True)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        data: bytes = envelope.original_content or envelope.content
        for recipient in envelope.rcpt_tos:
            with self._lock:
                self.count += 1
                number = self.count
            name = f"{number:05d}-{_UNSAFE.sub('_', recipient)[:80]}.eml"
            (self.folder / name).write_bytes(data)
        return "250 Message accepted for delivery"


def run_outbox(host: str, port: int, folder: Path, stop: threading.Event | None = None) -> int:
    """Serve until SIGINT/SIGTERM (or ``stop`` is set); returns how many messages were kept."""
    handler = OutboxHandler(folder)
    controller = Controller(handler, hostname=host, port=port, server_hostname="outbox.localhost")
    controller.start()
    stop = stop or threading.Event()
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda *_: stop.set())
    try:
        stop.wait()
    finally:
        controller.stop()
    return handler.count
