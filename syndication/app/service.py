"""The service every use case runs in: the settings, an open store, a clock and the one exit for mail."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from sqlalchemy import Engine
from sqlalchemy.engine import make_url

from syndication.clock import Clock, system_clock
from syndication.config import Settings
from syndication.delivery.mailer import Mailer
from syndication.sources.normalise import Vocabulary
from syndication.store import database


@dataclass(frozen=True)
class Service:
    """Settings, an open store and a clock: what every use case needs."""

    settings: Settings
    engine: Engine
    clock: Clock = system_clock

    @classmethod
    def open(cls, settings: Settings, clock: Clock = system_clock, *, require_schema: bool = True) -> Service:
        """Open the store named by the settings, refusing one that is not initialised."""
        engine = database.open_engine(settings.database.url)
        if require_schema:
            try:
                database.require_current(engine)
            except BaseException:
                engine.dispose()
                raise
        return cls(settings, engine, clock)

    def __enter__(self) -> Service:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close every pooled database connection."""
        self.engine.dispose()

    @cached_property
    def mailer(self) -> Mailer:
        """The service's one Mailer: every message it sends leaves through it (made on first use)."""
        return Mailer(self.settings, self.clock)

    @property
    def vocabulary(self) -> Vocabulary:
        """The themes, regions and defaults the sources check items against."""
        return Vocabulary(
            themes=self.settings.theme_list,
            regions=self.settings.region_list,
            language=self.settings.site.language,
            summary_words=self.settings.gather.summary_words,
        )


def init_store(settings: Settings) -> str:
    """Create or upgrade the store's schema; running it twice is harmless. Returns the schema revision."""
    engine = database.open_engine(settings.database.url)
    try:
        return database.upgrade(engine)
    finally:
        engine.dispose()


def store_location(settings: Settings) -> str:
    """The store's database URL with its password hidden (``***``), for messages such as ``init``'s."""
    return make_url(settings.database.url).render_as_string(hide_password=True)
