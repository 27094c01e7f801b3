"""What a source yields while it is pulled: posts, refusals, warnings and, last, its new cursor."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from syndication.core.models import Post


@dataclass(frozen=True, slots=True)
class Rejected:
    """One item refused: where it stood and why. The items around it go on."""

    where: str
    reason: str


@dataclass(frozen=True, slots=True)
class Warned:
    """One item kept, with something the editor should know (unknown theme, date without offset)."""

    where: str
    message: str


@dataclass(frozen=True, slots=True)
class CursorMoved:
    """The state to remember once every item before it is stored; a source yields it last."""

    state: dict[str, Any]


PullEvent = Post | Rejected | Warned | CursorMoved


class Source(Protocol):
    """A place posts come from. ``pull`` raises SourceError when the whole source cannot be read."""

    name: str

    def pull(self, cursor: Mapping[str, Any]) -> Iterator[PullEvent]:
        """Yield what is new since ``cursor`` (an empty mapping on the first pull)."""
        ...
