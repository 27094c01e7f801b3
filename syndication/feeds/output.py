"""The feeds folder on disk: atomic writes of changed documents only, and the manifest the web app serves from.

``manifest.json`` maps each document's path to its strong ETag (from its bytes), Last-Modified (its newest
item's date), Content-Type and whether it is immutable (a full archive page). It also keeps the build state an
incremental rebuild starts from. It is written last, so a reader of the folder never sees a manifest naming a
document that is not there yet.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from datetime import datetime
from email.utils import format_datetime
from pathlib import Path
from typing import Any

MANIFEST = "manifest.json"
MANIFEST_VERSION = 1


class FeedOutput:
    """One build's view of the feeds folder."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.documents: dict[str, dict[str, Any]] = {}
        self.state: dict[str, Any] = {}
        manifest = directory / MANIFEST
        try:
            data = json.loads(manifest.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return  # no usable manifest: every document is written afresh
        if isinstance(data, dict) and data.get("version") == MANIFEST_VERSION:
            self.documents = dict(data.get("documents", {}))
            self.state = dict(data.get("state", {}))

    def write(self, path: str, body: bytes, content_type: str, updated: datetime, *, immutable: bool = False) -> bool:
        """Write ``body`` at ``path`` unless the same bytes are already there; True when the file changed."""
        etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
        entry = {
            "etag": etag,
            "last_modified": format_datetime(updated, usegmt=True),
            "content_type": content_type,
            "immutable": immutable,
        }
        target = self.directory / path
        unchanged = self.documents.get(path, {}).get("etag") == etag and target.exists()
        self.documents[path] = entry
        if unchanged:
            return False
        write_atomically(target, body)
        return True

    def knows(self, path: str) -> bool:
        """Whether the manifest lists ``path`` and its file exists."""
        return path in self.documents and (self.directory / path).exists()

    def save(self, state: dict[str, Any]) -> None:
        """Write the manifest (last, atomically) with the state the next build starts from."""
        self.state = state
        data = {"version": MANIFEST_VERSION, "state": state, "documents": dict(sorted(self.documents.items()))}
        write_atomically(self.directory / MANIFEST, json.dumps(data, indent=1, ensure_ascii=False).encode("utf-8"))


def write_atomically(target: Path, body: bytes) -> None:
    """Write to a temporary file beside ``target``, then rename it over: readers see the old or the new file."""
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    temporary = Path(name)
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(body)
        temporary.chmod(0o644)  # mkstemp makes it private; feeds are public documents
        temporary.replace(target)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
