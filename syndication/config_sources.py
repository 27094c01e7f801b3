"""Where settings come from besides ``config.toml``: the environment, by one naming rule, and files named by
``<VARIABLE>_FILE``; and, for ``syndication config show``, where each effective value came from.

The rule: ``SYNDICATION_<SECTION>__<KEY>`` sets ``[section] key`` (``SYNDICATION_SMTP__HOST``), a table inside a
section one ``__`` deeper (``SYNDICATION_BOUNCES__MAILBOX__PASSWORD``), and a key outside any section is
``SYNDICATION_<KEY>`` (the arrays ``SYNDICATION_THEMES``, ``SYNDICATION_REGIONS``, ``SYNDICATION_SOURCES``, as JSON).
Names are matched without regard to case after the prefix. A value is read as the key's type: text as is, a
number or a boolean as pydantic reads one from text, a list as a JSON array or a comma-separated list, a table or
an array of tables as JSON; an empty value unsets a key that may be unset. ``<VARIABLE>_FILE`` instead names a
file whose content (its trailing newline taken off) is the value: the convention of container secrets and systemd
credentials. The variables older than the rule (``config.ENVIRONMENT_OVERRIDES``, ``SYNDICATION_SMTP_HOST``...)
keep working; an empty one is ignored, as it always was.

This module knows the settings only through the pydantic model it is given (``syndication.config.Settings``).
"""

from __future__ import annotations

import json
import types
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal, Union, get_args, get_origin

from pydantic import BaseModel, SecretStr

from syndication.errors import ConfigError

PREFIX: Final = "SYNDICATION_"
FILE_SUFFIX: Final = "_FILE"
NESTING: Final = "__"

# Settings that never come from the file, each read from one variable (or its _FILE).
SECRET_KEY_VARIABLE: Final = "SYNDICATION_SECRET_KEY"  # noqa: S105 - its name
OLD_SECRET_KEYS_VARIABLE: Final = "SYNDICATION_OLD_SECRET_KEYS"  # noqa: S105 - its name
# "name:hash,name:hash": editors added to [editors] passwords.
EDITORS_VARIABLE: Final = "SYNDICATION_EDITORS"
# SYNDICATION_ variables that are not settings: where the file is, and switches of the tools and tests.
NOT_SETTINGS: Final = frozenset({"SYNDICATION_CONFIG", "SYNDICATION_DEBUG", "SYNDICATION_TEST_POSTGRES_URL"})

OriginKind = Literal["default", "file", "environment", "variable file", "key file"]
# Where a value came from: its kind and a name (the configuration file, the variable, the file and its variable).
Origin = tuple[OriginKind, str]
DEFAULT: Final[Origin] = ("default", "")

# Words that make a key a secret in `config show` (besides SecretStr values); a path to a secret is not one.
_SECRET_WORDS: Final = frozenset({"password", "passwords", "secret", "secrets", "token", "tokens", "key", "keys"})
MASK: Final = "****"


@dataclass(frozen=True)
class Override:
    """One key set from the environment: its path (``("smtp", "host")``), the value read, and whence."""

    path: tuple[str, ...]
    value: Any
    variable: str
    origin: Origin


def _unwrapped(annotation: Any) -> tuple[Any, bool]:
    """``annotation`` without ``| None``, and whether None was allowed."""
    if get_origin(annotation) in (Union, types.UnionType):
        arguments = [argument for argument in get_args(annotation) if argument is not type(None)]
        optional = len(arguments) < len(get_args(annotation))
        if len(arguments) == 1:
            return arguments[0], optional
        return Union[tuple(arguments)], optional  # noqa: UP007 - built from a tuple
    return annotation, False


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def field_type(model: type[BaseModel], path: tuple[str, ...]) -> Any | None:
    """The annotation of the key at ``path`` of ``model`` (tables followed down), or None when there is none."""
    current: Any = model
    annotation: Any = None
    for part in path:
        if not _is_model(current):
            return None
        field = current.model_fields.get(part)
        if field is None or field.exclude:
            return None
        annotation = field.annotation
        current, _ = _unwrapped(annotation)
    return annotation


def is_table(annotation: Any) -> bool:
    """Whether a key of this type is a table of keys (a section, ``[bounces.mailbox]``)."""
    return _is_model(_unwrapped(annotation)[0])


def read_value(variable: str, text: str, annotation: Any) -> Any:
    """``text`` as a value of a key of type ``annotation``, ready for pydantic; ConfigError naming ``variable``."""
    inner, optional = _unwrapped(annotation)
    if optional and text == "":
        return None
    container = get_origin(inner)
    if container in (tuple, list):
        items = [item for item in get_args(inner) if item is not Ellipsis]
        simple = all(item in (str, SecretStr) for item in items)
        if simple and not text.lstrip().startswith("["):
            return [item.strip() for item in text.split(",") if item.strip()]
        return _json(variable, text, list, "a JSON array" + (" or a comma-separated list" if simple else ""))
    if container is dict:
        return _json(variable, text, dict, "a JSON object")
    return text


def _json(variable: str, text: str, kind: type, expected: str) -> Any:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise ConfigError(f"{variable}: not {expected} ({error})") from None
    if not isinstance(value, kind):
        raise ConfigError(f"{variable}: not {expected}")
    return value


def read_variable_file(variable: str, environ: Mapping[str, str]) -> str:
    """The content of the file ``<variable>`` names, its trailing newline taken off; ConfigError otherwise."""
    name = environ[variable]
    if not name:
        raise ConfigError(f"{variable} is empty: set it to the path of a file")
    try:
        return Path(name).read_text(encoding="utf-8").rstrip("\r\n")
    except (OSError, UnicodeDecodeError) as error:
        reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
        raise ConfigError(f"{variable}: cannot read {name}: {reason}") from None


def value_of(variable: str, environ: Mapping[str, str]) -> tuple[str, Origin] | None:
    """The text of ``variable`` or of the file ``<variable>_FILE`` names, with its origin; None when neither is
    set; ConfigError when both are, or the file cannot be read."""
    file_variable = variable + FILE_SUFFIX
    if variable in environ and file_variable in environ:
        raise ConfigError(f"{variable} and {file_variable} are both set: keep one")
    if file_variable in environ:
        return read_variable_file(file_variable, environ), (
            "variable file",
            f"{file_variable} ({environ[file_variable]})",
        )
    if variable in environ:
        return environ[variable], ("environment", variable)
    return None


def _rule_path(variable: str) -> tuple[str, ...]:
    return tuple(part.lower() for part in variable.removeprefix(PREFIX).split(NESTING))


def _rule_variables(
    model: type[BaseModel], environ: Mapping[str, str], legacy: Mapping[str, tuple[str, ...]]
) -> dict[str, tuple[str, ...]]:
    """Every variable of the environment written by the rule, without its _FILE, with its key's path; ConfigError
    for one that names no key (a typo would otherwise be silently ignored)."""
    found: dict[str, tuple[str, ...]] = {}
    for name in environ:
        if not name.startswith(PREFIX) or name in NOT_SETTINGS or name in legacy:
            continue
        base = name
        if field_type(model, _rule_path(name)) is None and name.endswith(FILE_SUFFIX):
            base = name.removesuffix(FILE_SUFFIX)
        if base in legacy or base in (SECRET_KEY_VARIABLE, OLD_SECRET_KEYS_VARIABLE, EDITORS_VARIABLE):
            continue
        path = _rule_path(base)
        annotation = field_type(model, path)
        if annotation is None:
            if NESTING not in base and len(path) == 1 and not name.endswith(FILE_SUFFIX):
                continue  # SYNDICATION_SOMETHING: not written by the rule, and not ours to refuse
            raise ConfigError(
                f"{name}: names no configuration key ({'.'.join(path)}); the rule is"
                f" SYNDICATION_<SECTION>__<KEY>, e.g. SYNDICATION_SMTP__HOST (docs/configuration.md)"
            )
        if is_table(annotation):
            example = next(iter(_unwrapped(annotation)[0].model_fields)).upper()
            raise ConfigError(f"{name}: {'.'.join(path)} is a table: set its keys, e.g. {base}{NESTING}{example}")
        found[base] = path
    return found


def environment_overrides(
    model: type[BaseModel], environ: Mapping[str, str], legacy: Mapping[str, tuple[str, ...]]
) -> list[Override]:
    """What the environment sets, key by key: the variables of the rule, and those of ``legacy`` (older names,
    each of one key; an empty one is ignored). The secret key, old keys and editors aside: see config."""
    overrides: list[Override] = []
    by_path: dict[tuple[str, ...], str] = {}
    rule = _rule_variables(model, environ, legacy)
    for variable, path in [*rule.items(), *legacy.items()]:
        read = value_of(variable, environ)
        if read is None or (variable in legacy and read[0] == ""):
            continue
        if path in by_path:
            raise ConfigError(f"{by_path[path]} and {variable} both set {'.'.join(path)}: keep one")
        by_path[path] = variable
        text, origin = read
        overrides.append(Override(path, read_value(origin[1], text, field_type(model, path)), variable, origin))
    return overrides


def apply(data: dict[str, Any], override: Override) -> None:
    """Set ``override`` in the parsed file ``data`` (tables on the way made or copied); ConfigError when the file
    has something else than a table where a table goes."""
    table = data
    for depth, part in enumerate(override.path[:-1]):
        inner = table.get(part, {})
        if not isinstance(inner, Mapping):
            raise ConfigError(f"{override.variable}: {'.'.join(override.path[: depth + 1])} must be a table")
        table[part] = dict(inner)
        table = table[part]
    table[override.path[-1]] = override.value


def file_origins(model: type[BaseModel], data: Mapping[str, Any], where: str) -> dict[str, Origin]:
    """The keys the parsed file ``data`` sets, down to the keys of each table (an array of tables is one key)."""
    origins: dict[str, Origin] = {}

    def walk(table: Mapping[str, Any], path: tuple[str, ...]) -> None:
        for key, value in table.items():
            inner = (*path, key)
            if isinstance(value, Mapping) and is_table(field_type(model, inner)):
                walk(value, inner)
            else:
                origins[".".join(inner)] = ("file", where)

    walk(data, ())
    return origins


def origin_of(key: str, origins: Mapping[str, Origin]) -> Origin:
    """Where ``key`` (dotted) came from: its own entry, else its nearest table's, else its default."""
    while key:
        if key in origins:
            return origins[key]
        key = key.rpartition(".")[0]
    return DEFAULT


def is_secret_name(name: str) -> bool:
    """Whether a key named ``name`` holds a secret (a path to a file is not one: ``dkim.key_file``)."""
    words = name.lower().split("_")
    return bool(_SECRET_WORDS.intersection(words)) and words[-1] not in ("file", "dir", "path")


def masked(value: Any) -> Any:
    """``value`` with what it holds replaced by ****: a mapping keeps its keys, a list its length."""
    if value is None or value == "":
        return value
    if isinstance(value, Mapping):
        return dict.fromkeys(value, MASK)
    if isinstance(value, list | tuple):
        return [MASK for _ in value]
    return MASK


@dataclass(frozen=True)
class ShownValue:
    """One key of the effective configuration, as ``config show`` prints it."""

    key: str  # dotted: "smtp.host", "bounces.mailbox.password", "themes"
    value: Any  # JSON-compatible; secrets masked; None when not set
    origin: Origin
    secret: bool


def shown_values(settings: BaseModel, origins: Mapping[str, Origin]) -> list[ShownValue]:
    """Every key of ``settings`` with its value (secrets masked) and origin, in declaration order: a section's
    keys one by one, an array of tables as one value."""
    shown: list[ShownValue] = []

    def walk(model: BaseModel, path: tuple[str, ...]) -> None:
        dumped = model.model_dump(mode="json", exclude_none=False)
        for name in type(model).model_fields:
            if not path and name in ("config_path", "origins"):
                continue
            value = getattr(model, name)
            key = ".".join((*path, name))
            if isinstance(value, BaseModel):
                walk(value, (*path, name))
                continue
            secret = _holds_secret(value) or is_secret_name(name)
            plain = dumped[name] if name in dumped else _jsonable(value)
            plain = masked(plain) if secret else _without_passwords(plain)
            shown.append(ShownValue(key, plain, origin_of(key, origins), secret))

    walk(settings, ())
    return shown


def _without_passwords(value: Any) -> Any:
    """A URL with its password masked (``postgresql://user:****@host/db``); any other value as it is."""
    if not isinstance(value, str) or "://" not in value:
        return value
    scheme, _, rest = value.partition("://")
    credentials, at, host = rest.rpartition("@")
    if not at or ":" not in credentials or "/" in credentials:
        return value
    user = credentials.partition(":")[0]
    return f"{scheme}://{user}:{MASK}@{host}"


def _holds_secret(value: Any) -> bool:
    if isinstance(value, SecretStr):
        return True
    return isinstance(value, tuple | list) and any(isinstance(item, SecretStr) for item in value)


def _jsonable(value: Any) -> Any:
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, tuple | list):
        return [_jsonable(item) for item in value]
    if isinstance(value, Path):
        return str(value)
    return value
