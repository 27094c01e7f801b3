"""The service every use case runs in: the settings, an open store, a clock and the one exit for mail."""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Engine
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError

from syndication.clock import Clock, system_clock
from syndication.config import Settings, signing_key_path
from syndication.core.audit import SYSTEM
from syndication.store import database, people

if TYPE_CHECKING:  # the sending side and the sources' checks: imported by the commands that use them
    from syndication.delivery.mailer import Mailer
    from syndication.sources.normalise import Vocabulary


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
        from syndication.delivery.mailer import Mailer

        return Mailer(self.settings, self.clock)

    @property
    def vocabulary(self) -> Vocabulary:
        """The themes, regions and defaults the sources check items against."""
        from syndication.sources.normalise import Vocabulary

        return Vocabulary(
            themes=self.settings.theme_list,
            regions=self.settings.region_list,
            language=self.settings.site.language,
            summary_words=self.settings.gather.summary_words,
        )


def init_store(settings: Settings) -> str:
    """Create or upgrade the store's schema, and make the configured editors the team's owners when it has nobody
    yet (``adopt_editors``); running it twice is harmless. Returns the schema revision."""
    engine = database.open_engine(settings.database.url)
    try:
        revision = database.upgrade(engine)
        adopt_editors(settings, engine, system_clock(), SYSTEM, only_if_empty=True)
        return revision
    finally:
        engine.dispose()


def adopt_editors(settings: Settings, engine: Engine, now: datetime, actor: str, *, only_if_empty: bool) -> list[str]:
    """Make owners of the configuration's editors (``[editors] passwords``) not in the team yet, with
    ``only_if_empty`` only when the team has nobody: from then on the store is where people are managed. Returns
    the names added (none when another process adopted them at the same moment)."""
    if not settings.editors.passwords:
        return []
    try:
        with database.transaction(engine) as session:
            return people.adopt(session, settings.editors.passwords, now, actor, only_if_empty=only_if_empty)
    except IntegrityError:
        return []


def store_location(settings: Settings) -> str:
    """The store's database URL with its password hidden (``***``), for messages such as ``init``'s."""
    return make_url(settings.database.url).render_as_string(hide_password=True)


def ensure_signing_key(settings: Settings) -> tuple[Path, bool] | None:
    """The signing key file of an embedded store, made when the settings have no key (32 random bytes, urlsafe,
    readable by its owner only), and whether it was made now; None when a key is set (SYNDICATION_SECRET_KEY)
    or the store is shared (PostgreSQL: every process needs the same key, so none is made up here)."""
    path = signing_key_path(settings)
    origin = settings.origins.get("secret_key")
    from_environment = settings.secret_key is not None and (origin is None or origin[0] != "key file")
    if path is None or from_environment:
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path, False  # made by an earlier `init` (and read by load_settings), kept
    with os.fdopen(descriptor, "w", encoding="utf-8") as file:
        os.fchmod(file.fileno(), 0o600)
        file.write(secrets.token_urlsafe(32) + "\n")
    return path, True
