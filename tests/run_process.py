"""``syndication run`` as a real process for the tests that start several: its JSON log lines collected as they
come, whether and when it leads, and how it ends (SIGTERM, SIGKILL)."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

SECRET = "run-process-test-signing-key-" + "r" * 16
STOP_WITHIN = 8.0  # seconds from SIGTERM to exit


class RunProcess:
    """One ``syndication run`` process; its JSON log lines (standard error) are collected as they come."""

    def __init__(self, config: Path, web_port: int | None = None) -> None:
        environment = {key: value for key, value in os.environ.items() if not key.startswith("SYNDICATION_")}
        environment["SYNDICATION_SECRET_KEY"] = SECRET
        web = ["--port", str(web_port)] if web_port else ["--no-web"]
        self.process = subprocess.Popen(
            [sys.executable, "-m", "syndication", "--config", str(config), "run", *web],
            env=environment, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip
        self.pid = self.process.pid
        self._lines: list[dict[str, Any]] = []
        self._raw: list[str] = []
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, name=f"log-{self.pid}", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        with self.process.stderr:
            for raw in self.process.stderr:
                line = raw.decode("utf-8", "replace").rstrip("\n")
                try:
                    entry = json.loads(line)
                except ValueError:
                    entry = None
                with self._lock:
                    self._raw.append(line)
                    if isinstance(entry, dict):
                        self._lines.append(entry)

    def events(self, event: str) -> list[dict[str, Any]]:
        """The log lines with this ``event`` field."""
        with self._lock:
            return [line for line in self._lines if line.get("event") == event]

    def lines(self) -> list[dict[str, Any]]:
        """Every JSON log line so far."""
        with self._lock:
            return list(self._lines)

    def created_editions(self) -> list[int]:
        """The editions it said it created (``edition:<cadence>`` job lines)."""
        return [
            int(match[1])
            for line in self.lines()
            if str(line.get("job", "")).startswith("edition:")
            for match in re.finditer(r"edition (\d+) created", str(line.get("message", "")))
        ]

    @property
    def leads(self) -> bool:
        """Whether it logged that it became the scheduler (as itself, ``host:pid``)."""
        return any(str(line.get("runner", "")).endswith(f":{self.pid}") for line in self.events("leader"))

    def log(self, last: int = 40) -> str:
        """The end of its standard error, for failure messages."""
        with self._lock:
            lines = self._raw[-last:]
        return f"--- syndication run, pid {self.pid}, exit status {self.process.poll()} ---\n" + "\n".join(lines)

    def terminate(self) -> tuple[int, float]:
        """SIGTERM it; its exit status and how many seconds it took to exit."""
        sent = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        try:
            status = self.process.wait(timeout=STOP_WITHIN * 3)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"no exit {STOP_WITHIN * 3:.0f} s after SIGTERM\n{self.log()}") from None
        self._reader.join(timeout=10)
        return status, time.monotonic() - sent

    def kill(self) -> None:
        """SIGKILL it (if it still runs) and collect it."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)
        self._reader.join(timeout=10)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port
