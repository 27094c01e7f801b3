"""Reading the pages' form posts: ``application/x-www-form-urlencoded`` only (what every form here sends), with
limits on size and field count, and the subscriber choices (themes, cadence, language, name) checked field by
field with the subscription use cases' own checks, so that each message can stand next to its field."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Final
from urllib.parse import parse_qsl

from starlette.requests import ClientDisconnect, Request

from syndication.app.subscribers import (
    MAX_NAME_LENGTH,
    SubscriberError,
    check_cadence,
    check_language,
    check_language_choice,
    check_reads,
    clean_name,
    parse_themes,
)
from syndication.config import Settings
from syndication.core.languages import is_language_tag
from syndication.web.languages import N_, Words

MAX_FORM_BYTES: Final = 64 * 1024
MAX_FIELDS: Final = 200


# Worded where it is shown (``Words.gettext``): the same refusal on every form.
FORM_EXPIRED: Final = N_("This form has expired or was not sent from this site: please send it again.")


class FormRefused(Exception):
    """A post that is not a form we read: wrong encoding (415), too large (413) or cut short (400). ``reason`` is
    a msgid (marked with ``N_``) and ``values`` its placeholders: the page words it (``worded``)."""

    def __init__(self, status: int, reason: str, **values: object) -> None:
        super().__init__(reason % values)
        self.status = status
        self.reason = reason
        self.values = values

    def worded(self, words: Words) -> str:
        """Why the post was refused, as a sentence in the page's language."""
        return words.gettext(self.reason, **self.values)


@dataclass(frozen=True)
class Form(Mapping[str, str]):
    """A posted form: the first value of each field, and every value of repeated ones (``all``)."""

    fields: tuple[tuple[str, str], ...]

    def __getitem__(self, key: str) -> str:
        for name, value in self.fields:
            if name == key:
                return value
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        return iter(dict(self.fields))

    def __len__(self) -> int:
        return len(dict(self.fields))

    def text(self, key: str) -> str:
        """The field's value with surrounding white space removed ('' when absent)."""
        return self.get(key, "").strip()

    def all(self, key: str) -> list[str]:
        """Every value given for ``key`` (checkboxes), in order."""
        return [value for name, value in self.fields if name == key]


async def read_body(request: Request) -> bytes:
    """The body of ``request``, whatever its encoding; FormRefused when it is over MAX_FORM_BYTES (read no
    further) or was not sent in full."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_FORM_BYTES:
        raise FormRefused(413, _TOO_LARGE, size=MAX_FORM_BYTES // 1024)
    body = bytearray()
    try:
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_FORM_BYTES:
                raise FormRefused(413, _TOO_LARGE, size=MAX_FORM_BYTES // 1024)
    except ClientDisconnect as error:
        raise FormRefused(400, N_("The form was not sent in full.")) from error
    return bytes(body)


async def read_form(request: Request) -> Form:
    """The urlencoded form of ``request`` (an empty post is an empty form); FormRefused for another encoding or
    a body over MAX_FORM_BYTES."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/x-www-form-urlencoded" and (kind or request.headers.get("content-length", "0") != "0"):
        if kind:
            raise FormRefused(415, N_("A form is sent as application/x-www-form-urlencoded, not %(kind)s."), kind=kind)
        raise FormRefused(415, N_("A form is sent as application/x-www-form-urlencoded, not unlabelled."))
    body = await read_body(request)
    try:
        pairs = parse_qsl(body.decode("utf-8", errors="replace"), keep_blank_values=True, max_num_fields=MAX_FIELDS)
    except ValueError as error:  # more than MAX_FIELDS fields
        raise FormRefused(413, N_("The form has more than %(count)s fields."), count=MAX_FIELDS) from error
    return Form(tuple(pairs))


_TOO_LARGE: Final = N_("The form is larger than %(size)s KiB.")


@dataclass
class Choices:
    """What a subscriber chose on a form, checked; ``errors`` maps a field to what is wrong with it."""

    themes: list[str] = field(default_factory=list)  # empty: every theme
    cadence: str = ""
    language: str = ""
    name: str = ""
    # The preference centre's choice of posts by language; None where the form does not ask (subscribe).
    reads: list[str] | None = None
    language_choice: str | None = None
    errors: dict[str, str] = field(default_factory=dict)


def read_choices(settings: Settings, form: Form, words: Words) -> Choices:
    """Themes (checkboxes), cadence, language, name and (in the preference centre) the languages read and the
    choice of posts by language from ``form``, each checked on its own (by the use cases'
    checks), each refusal worded in ``words`` next to its field."""
    choices = Choices()
    try:
        choices.themes = list(parse_themes(settings, form.all("themes")) or ())
    except SubscriberError:
        unknown = next((term for term in form.all("themes") if not _known_theme(settings, term)), "")
        choices.errors["themes"] = words.gettext(
            "Themes: unknown theme '%(theme)s'; choose among those listed.", theme=unknown.strip()
        )
    try:
        choices.cadence = check_cadence(form.text("cadence"))
    except SubscriberError:
        choices.errors["cadence"] = words.gettext("How often: choose daily, weekly or monthly.")
    try:
        choices.language = check_language(settings, form.text("language"))
    except SubscriberError:
        choices.errors["language"] = words.gettext(
            "Language: unknown language '%(language)s'; choose one of those listed.", language=form.text("language")
        )
    if "language_choice" in form:  # the preference centre's fieldset: its checkboxes are read with it
        try:
            choices.language_choice = check_language_choice(form.text("language_choice"))
        except SubscriberError:
            choices.errors["language_choice"] = words.gettext("Posts in other languages: choose one of those listed.")
        try:
            choices.reads = list(check_reads(form.all("reads")))
        except SubscriberError:
            unknown = next((tag for tag in form.all("reads") if not is_language_tag(tag)), "")
            choices.errors["reads"] = words.gettext(
                "Languages you read: '%(language)s' is not a language.", language=unknown.strip()
            )
    try:
        choices.name = clean_name(form.get("name", ""))
    except SubscriberError:
        choices.errors["name"] = words.gettext(
            "Name: name is %(length)s characters long (at most %(most)s).",
            length=len(" ".join(form.get("name", "").split())),
            most=MAX_NAME_LENGTH,
        )
    return choices


def _known_theme(settings: Settings, term: str) -> bool:
    """Whether the use cases take ``term`` (a slug or an alias) as a theme."""
    try:
        parse_themes(settings, [term])
    except SubscriberError:
        return False
    return True
