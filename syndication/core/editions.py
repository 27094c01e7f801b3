"""The edition state machine: what an editor (or ``editions approve|pause|resume|cancel``) may do to an edition,
and the things the sender and an operator do by themselves: pause a sending edition, with the reason, when the
relay refuses our side or is slower than the timeout (``pause_for``); finish it, saying what was given up
(``finished``); and open a sent one again when an operator re-queues deliveries of it (``reopen_for_retry``).

Every driver changes an edition's status through ``next_status``, the sender through ``pause_for``; the rules
are written once, here. An editor's action leaves no reason: resuming clears the sender's.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Final

from syndication.core.models import GIVEN_UP_DELIVERIES, Edition, EditionStatus
from syndication.errors import SyndicationError


class EditionAction(StrEnum):
    """What can be done to an edition."""

    APPROVE = "approve"
    PAUSE = "pause"
    RESUME = "resume"
    CANCEL = "cancel"

    @property
    def done(self) -> str:
        """The action as a past participle: "approved", "paused"..."""
        return {"approve": "approved", "pause": "paused", "resume": "resumed", "cancel": "cancelled"}[self.value]


# From which statuses each action may be taken, and the status it leads to.
TRANSITIONS: Final[dict[EditionAction, tuple[tuple[EditionStatus, ...], EditionStatus]]] = {
    EditionAction.APPROVE: ((EditionStatus.DRAFT,), EditionStatus.SENDING),
    EditionAction.PAUSE: ((EditionStatus.SENDING,), EditionStatus.PAUSED),
    EditionAction.RESUME: ((EditionStatus.PAUSED,), EditionStatus.SENDING),
    EditionAction.CANCEL: ((EditionStatus.DRAFT, EditionStatus.SENDING, EditionStatus.PAUSED), EditionStatus.CANCELLED),
}
# An editor may change the subject and intro of an edition that is not being sent.
EDITABLE: Final = (EditionStatus.DRAFT, EditionStatus.PAUSED)
# A reader's own copy can be read as soon as it is sent to them; the public copy once the whole edition is sent.
READABLE: Final = (EditionStatus.SENDING, EditionStatus.PAUSED, EditionStatus.SENT)


class EditionRefused(SyndicationError):
    """An action that the edition's status does not allow; the message names the edition, its status and why, in
    English (the command line and the log). ``edition_id``, ``status`` and ``refused`` (the action refused, or
    ``"edit"`` for a change of subject or intro) say the same for a page that words it in its reader's language."""

    def __init__(
        self, message: str, *, edition_id: int | None = None, status: str | None = None, refused: str | None = None
    ) -> None:
        super().__init__(message)
        self.edition_id = edition_id
        self.status = status
        self.refused = refused


def next_status(edition: Edition, action: EditionAction) -> EditionStatus:
    """The status ``action`` moves ``edition`` to, or EditionRefused when its status does not allow it."""
    allowed, after = TRANSITIONS[action]
    if edition.status not in allowed:
        raise EditionRefused(
            f"edition {edition.id} is {edition.status}: it cannot be {action.done}",
            edition_id=edition.id, status=edition.status, refused=action.value,
        )  # fmt: skip
    return after


def check_editable(edition: Edition) -> None:
    """Refuse (EditionRefused) a change of subject or intro to an edition that is being sent or is over."""
    if edition.status not in EDITABLE:
        raise EditionRefused(
            f"edition {edition.id} is {edition.status}: only a draft or paused edition can change",
            edition_id=edition.id, status=edition.status, refused="edit",
        )  # fmt: skip


# The longest reason kept with an edition (one line: it is listed beside the edition).
MAX_REASON: Final = 500


def pause_for(edition: Edition, reason: str) -> tuple[EditionStatus, str]:
    """The status and the reason the sender's own pause leaves ``edition`` with: paused, with ``reason`` on one
    bounded line. Only a sending edition is paused this way; EditionRefused for any other (an editor paused or
    cancelled it meanwhile: theirs is the last word)."""
    if edition.status != EditionStatus.SENDING:
        raise EditionRefused(f"edition {edition.id} is {edition.status}: the sender cannot pause it")
    line = " ".join("".join(ch if ch.isprintable() else " " for ch in reason).split())
    return EditionStatus.PAUSED, line[:MAX_REASON] or "paused by the sender"


def finished(counts: Mapping[str, int]) -> tuple[EditionStatus, str]:
    """The status and reason of a sending edition none of whose deliveries is open any more (``counts``: its
    deliveries per status): sent, with what was given up ("2 failed, 1 unknown, 3 poisoned"; empty if nothing)."""
    given_up = ", ".join(f"{counts[status]} {status}" for status in GIVEN_UP_DELIVERIES if counts.get(status))
    return EditionStatus.SENT, given_up


# Editions nothing more is queued for: over (sent, cancelled), or a window that had nothing new (``empty``: kept
# only so that the next window starts where it ended; never public, never a draft, never emailed).
FINAL: Final = (EditionStatus.SENT, EditionStatus.CANCELLED, EditionStatus.EMPTY)
# What an empty edition's reason says beside it.
NOTHING_NEW: Final = "nothing new"


def on_rerun(edition: Edition, open_deliveries: int) -> tuple[bool, EditionStatus]:
    """What a second run for ``edition``'s window (``digest send`` again, a scheduler catching up) does: whether
    it may queue deliveries to it, and the status it leaves it in. A draft, sending or paused edition takes
    newcomers and keeps its status; a final one takes none, except that a sent one still holding
    ``open_deliveries`` (queued under it by an older version, stranded) goes back to sending, so they are sent."""
    if edition.status == EditionStatus.SENT:
        return False, EditionStatus.SENDING if open_deliveries else EditionStatus.SENT
    if edition.status in FINAL:
        return False, edition.status
    return True, edition.status


def reopen_for_retry(edition: Edition) -> EditionStatus:
    """The status an edition takes when an operator re-queues some of its deliveries (``editions retry``): a sent
    one is sending again, a sending or paused one stays as it is (a paused one goes once resumed); EditionRefused
    for a draft (nothing was sent) or a cancelled one (nothing more of it is sent)."""
    if edition.status == EditionStatus.SENT:
        return EditionStatus.SENDING
    if edition.status in (EditionStatus.SENDING, EditionStatus.PAUSED):
        return edition.status
    raise EditionRefused(f"edition {edition.id} is {edition.status}: none of its deliveries can be retried")
