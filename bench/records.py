"""Writing benchmark figures into bench/README.md under a dated heading."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

README = Path(__file__).with_name("README.md")


def record(title: str, lines: list[str]) -> None:
    """Append a dated section with ``lines`` (Markdown) to bench/README.md."""
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    with README.open("a", encoding="utf-8") as handle:
        handle.write(f"\n### {title}, {stamp}\n\n" + "\n".join(lines) + "\n")
