"""The web's one error type: a handler that cannot answer raises ``PageError`` (or lets an app-layer error through),
and the app's one exception handler (``syndication.web.app``) renders it as the site's message page.

``page_of`` says which page each error is: a ``PageError`` is its own page; ``NoSuchEdition``, ``EditionRefused``,
``TokenError`` and ``ConfigError`` from the use cases get the page written for them here, so no handler repeats it,
worded in the request's language (a ``PageError`` is worded where it is raised, with the same words). The use
cases' own messages are English, for the command line and the log: a page words what they mean from the
catalog (``token_refusal``, ``edition_refusal``) rather than showing them.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

from syndication.app.editions import NoSuchEdition
from syndication.core.editions import EditionRefused
from syndication.errors import ConfigError, TokenError
from syndication.web.languages import N_, Words

log = logging.getLogger(__name__)

# The app-layer errors rendered as pages of their own; anything else raised by a handler is a 500.
MAPPED_ERRORS: Final = (NoSuchEdition, EditionRefused, TokenError, ConfigError)
# Pages reached through a signed link must not pass its token on to the sites they link to; an error page may be
# reached that way, and says so for every page alike.
NO_REFERRER: Final = {"Referrer-Policy": "no-referrer"}


@dataclass(eq=False)  # compared by identity, as exceptions are
class PageError(Exception):
    """A request answered with the site's message page: its status, title, paragraphs, links onwards (path, label)
    and extra headers."""

    status: int
    title: str
    paragraphs: Sequence[str]
    links: Sequence[tuple[str, str]] = ()
    headers: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        super().__init__(self.status, self.title)


def page_of(error: Exception, method: str, path: str, words: Words) -> PageError:
    """The page answering ``error`` raised by the handler of ``method path``: a PageError as it is, an app-layer
    error as the page written for it below, in ``words``. A configuration error is logged (the page does not show
    it)."""
    if isinstance(error, PageError):
        return error
    if isinstance(error, NoSuchEdition):
        return PageError(
            404,
            words.gettext("No such edition"),
            [words.gettext("There is no edition %(number)s.", number=error.edition_id)],
            links=[(words.url("/editor/"), words.gettext("Dashboard"))],
        )
    if isinstance(error, EditionRefused):
        return PageError(409, words.gettext("This cannot be done now"), [edition_refusal(error, words)])
    if isinstance(error, TokenError):
        return PageError(
            400,
            words.gettext("This link does not work"),
            [token_refusal(error, words)],
            links=[(words.url("/subscribe"), words.gettext("Subscribe, or get a new link"))],
            headers=NO_REFERRER,
        )
    if isinstance(error, ConfigError):
        log.error("%s %s refused: %s", method, path, error)
        return PageError(
            503,
            words.gettext("Not available right now"),
            [words.gettext("This page is not available right now. Please try again later.")],
            headers={**NO_REFERRER, "Retry-After": "3600"},
        )
    raise TypeError(f"no page for {type(error).__name__}") from error


def token_refusal(error: TokenError, words: Words) -> str:
    """Why a signed link was refused, as a reader is told it: it expired, it is for another edition (a view
    link), or it is not valid. The use cases' message (``core.tokens``, ``app.subscribers``) says which in
    English; the page says it in the reader's language."""
    reason = str(error)
    if "expired" in reason:
        return words.gettext("This link has expired: ask for a new one.")
    if "another edition" in reason:
        return words.gettext("This link is for another edition.")
    return words.gettext("This link is not valid: it was altered, or made for something else.")


def edition_refusal(error: EditionRefused, words: Words) -> str:
    """Why the edition state machine refused an editor's action, as an editor is told it: what cannot be done to
    which edition, and its status, in the page's language. The use case's message (``core.editions``) says the
    same in English; it is shown as it is only for a refusal this page does not know (none today)."""
    if error.edition_id is None or error.status is None:
        return sentence(error)
    values = {"number": error.edition_id, "status": words.edition_status(error.status)}
    refusals = {
        "approve": N_("Edition %(number)s is %(status)s: it cannot be approved."),
        "pause": N_("Edition %(number)s is %(status)s: it cannot be paused."),
        "resume": N_("Edition %(number)s is %(status)s: it cannot be resumed."),
        "cancel": N_("Edition %(number)s is %(status)s: it cannot be cancelled."),
        "edit": N_("Edition %(number)s is %(status)s: only a draft or paused edition can change."),
    }
    refusal = refusals.get(error.refused or "")
    return sentence(error) if refusal is None else words.gettext(refusal, **values)


def sentence(error: Exception | str) -> str:
    """An error's text as a sentence of a page: capitalised, with a full stop."""
    text = str(error).strip()
    text = text[:1].upper() + text[1:]
    return text if text.endswith((".", "!", "?")) else text + "."
