"""Reading the pages' form posts: ``application/x-www-form-urlencoded`` only (what every form here sends), with
limits on size and field count, and the subscriber choices (themes, cadence, language, name) checked field by
field with the subscription use cases' own checks, so that each message can stand next to its field."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Final
from urllib.parse import parse_qsl

from starlette.requests import ClientDisconnect, Request

from syndication.app.subscribers import SubscriberError, check_cadence, check_language, clean_name, parse_themes
from syndication.config import Settings

MAX_FORM_BYTES: Final = 64 * 1024
MAX_FIELDS: Final = 200


FORM_EXPIRED: Final = "This form has expired or was not sent from this site: please send it again."


class FormRefused(Exception):
    """A post that is not a form we read: wrong encoding (415) or too large (413)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


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
        raise FormRefused(413, f"the form is larger than {MAX_FORM_BYTES // 1024} KiB")
    body = bytearray()
    try:
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_FORM_BYTES:
                raise FormRefused(413, f"the form is larger than {MAX_FORM_BYTES // 1024} KiB")
    except ClientDisconnect as error:
        raise FormRefused(400, "the form was not sent in full") from error
    return bytes(body)


async def read_form(request: Request) -> Form:
    """The urlencoded form of ``request`` (an empty post is an empty form); FormRefused for another encoding or
    a body over MAX_FORM_BYTES."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/x-www-form-urlencoded" and (kind or request.headers.get("content-length", "0") != "0"):
        raise FormRefused(415, f"a form is sent as application/x-www-form-urlencoded, not {kind or 'unlabelled'}")
    body = await read_body(request)
    try:
        pairs = parse_qsl(body.decode("utf-8", errors="replace"), keep_blank_values=True, max_num_fields=MAX_FIELDS)
    except ValueError as error:  # more than MAX_FIELDS fields
        raise FormRefused(413, f"the form has more than {MAX_FIELDS} fields") from error
    return Form(tuple(pairs))


@dataclass
class Choices:
    """What a subscriber chose on a form, checked; ``errors`` maps a field to what is wrong with it."""

    themes: list[str] = field(default_factory=list)  # empty: every theme
    cadence: str = ""
    language: str = ""
    name: str = ""
    errors: dict[str, str] = field(default_factory=dict)


def read_choices(settings: Settings, form: Form) -> Choices:
    """Themes (checkboxes), cadence, language and name from ``form``, each checked on its own."""
    choices = Choices()
    try:
        choices.themes = list(parse_themes(settings, form.all("themes")) or ())
    except SubscriberError as error:
        choices.errors["themes"] = f"Themes: {error}."
    try:
        choices.cadence = check_cadence(form.text("cadence"))
    except SubscriberError:
        choices.errors["cadence"] = "How often: choose daily, weekly or monthly."
    try:
        choices.language = check_language(settings, form.text("language"))
    except SubscriberError as error:
        choices.errors["language"] = f"Language: {error}."
    try:
        choices.name = clean_name(form.get("name", ""))
    except SubscriberError as error:
        choices.errors["name"] = f"Name: {error}."
    return choices
