"""Feed documents kept in the store (``[feeds] storage = "database"``): their bytes by path and ETag, and the manifest.

A build adds the rows of the documents whose bytes changed (committed in batches as it goes: a row no manifest
names yet is read by nobody), then, in one transaction, moves the ``feeds`` version on, replaces the manifest and
removes the rows of the paths it rewrote that the new manifest no longer names. So every row a committed manifest
names is there, and a web node that sees the new version sees the whole build. A reader holding the previous
manifest may find its row gone: it then reads the version again and takes the new manifest.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Final, cast

from sqlalchemy import Connection, Table, bindparam, delete, select, tuple_
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from syndication.store import versions
from syndication.store.schema import FeedDocumentRow, FeedManifestRow

# The one manifest: one site's feeds per store.
MANIFEST_NAME: Final = "feeds"
# Rows deleted per statement when a full build sweeps out what no manifest names.
_SWEEP_BATCH = 500

_TABLE = cast(Table, FeedDocumentRow.__table__)
_BODY_OF = select(FeedDocumentRow.body).where(
    FeedDocumentRow.path == bindparam("path"), FeedDocumentRow.etag == bindparam("etag")
)
_MANIFEST = select(FeedManifestRow.body).where(FeedManifestRow.name == MANIFEST_NAME)


@dataclass(frozen=True, slots=True)
class StoredDocument:
    """One document's bytes as a build stores them."""

    path: str
    etag: str
    content_type: str
    body: bytes


def add_documents(connection: Session | Connection, documents: Sequence[StoredDocument], now: datetime) -> None:
    """Store ``documents`` (one executemany); a path and ETag already stored (the same bytes) is left as it is."""
    if not documents:
        return
    dialect_insert = pg_insert if versions.dialect_name(connection) == "postgresql" else sqlite_insert
    statement = dialect_insert(_TABLE).on_conflict_do_nothing(index_elements=["path", "etag"])
    connection.execute(
        statement,
        [
            {"path": d.path, "etag": d.etag, "content_type": d.content_type, "body": d.body, "stored_at": now}
            for d in documents
        ],
    )


def document_body(connection: Session | Connection, path: str, etag: str) -> bytes | None:
    """The bytes stored for ``path`` under ``etag``, or None when there are none (any more)."""
    body = connection.execute(_BODY_OF, {"path": path, "etag": etag}).scalar()
    return None if body is None else bytes(body)


def manifest(connection: Session | Connection) -> bytes | None:
    """The stored manifest's bytes, or None while no build has saved one."""
    body = connection.execute(_MANIFEST).scalar()
    return None if body is None else bytes(body)


def save_manifest(session: Session, body: bytes, now: datetime) -> None:
    """Store ``body`` as the manifest (the caller moves the ``feeds`` version on in the same transaction)."""
    dialect_insert = pg_insert if versions.dialect_name(session) == "postgresql" else sqlite_insert
    session.execute(
        dialect_insert(cast(Table, FeedManifestRow.__table__))
        .values(name=MANIFEST_NAME, body=body, updated_at=now)
        .on_conflict_do_update(index_elements=["name"], set_={"body": body, "updated_at": now})
    )


def next_version(session: Session) -> int:
    """Move the ``feeds`` version on in the caller's transaction; the new version. A second build committing at
    the same time waits here for the first."""
    return versions.bump(session, versions.FEEDS)


def remove_replaced(session: Session, listed: Mapping[str, str], paths: Iterable[str]) -> None:
    """Remove the rows of ``paths`` (those a build rewrote) whose ETag is not the one ``listed`` names now."""
    rows = [{"p": path, "e": listed[path]} for path in paths if path in listed]
    for start in range(0, len(rows), _SWEEP_BATCH):
        session.execute(
            delete(_TABLE).where(_TABLE.c.path == bindparam("p"), _TABLE.c.etag != bindparam("e")),
            rows[start : start + _SWEEP_BATCH],
        )


def remove_unlisted(session: Session, listed: Mapping[str, str]) -> int:
    """Remove every row whose path and ETag ``listed`` does not name (a full build's sweep: rows left by builds
    that never committed, or paths no longer built); how many. Reads the keys only, never the bodies."""
    keys = session.execute(select(FeedDocumentRow.path, FeedDocumentRow.etag)).all()
    stale = [(path, etag) for path, etag in keys if listed.get(path) != etag]
    for start in range(0, len(stale), _SWEEP_BATCH):
        batch = stale[start : start + _SWEEP_BATCH]
        session.execute(
            delete(_TABLE).where(tuple_(_TABLE.c.path, _TABLE.c.etag).in_(batch)),
        )
    return len(stale)
