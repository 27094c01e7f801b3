"""Each variation point is listed once: the lists that must name the same things do, and their readers use them."""

from __future__ import annotations

import re
from pathlib import Path

from syndication.config import SOURCE_KINDS, Settings
from syndication.core.models import CADENCES, DEFAULT_SCHEDULES
from syndication.feeds.catalog import CONTENT_TYPES, FORMATS
from syndication.sources import SOURCES

ROOT = Path(__file__).resolve().parent.parent


def test_every_source_kind_the_configuration_accepts_has_an_adapter() -> None:
    assert list(SOURCES) == list(SOURCE_KINDS)
    for kind, settings in SOURCE_KINDS.items():
        assert settings.model_fields["kind"].annotation.__args__ == (kind,)  # type: ignore[union-attr]


def test_every_cadence_has_a_default_schedule_and_the_configuration_knows_each() -> None:
    assert tuple(DEFAULT_SCHEDULES) == CADENCES
    assert list(Settings().schedule.cadences) == list(CADENCES)


def test_every_feed_format_has_a_content_type() -> None:
    assert set(FORMATS) <= set(CONTENT_TYPES)


def test_no_module_writes_the_cadence_list_out_again() -> None:
    # The list, in any order and any quoting, outside core/models.py: a copy that would drift.
    copy = re.compile(r"""["'](daily|weekly|monthly)["'],\s*["'](daily|weekly|monthly)["']""")
    found = [
        str(path.relative_to(ROOT))
        for path in (ROOT / "syndication").rglob("*.py")
        if path.name != "models.py" and copy.search(path.read_text(encoding="utf-8"))
    ]
    assert found == []
