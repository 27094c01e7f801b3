"""The ``config show`` command: the effective configuration, secrets masked, each value with where it came from
(its default, the configuration file, an environment variable, a file a ``_FILE`` variable names, the signing
key file)."""

from __future__ import annotations

import argparse
import json
import re
from typing import TYPE_CHECKING, Any

from syndication.cli.arguments import Commands, add_command, add_group
from syndication.cli.output import EXIT_OK

if TYPE_CHECKING:
    from syndication.config import Settings
    from syndication.config_sources import Origin, ShownValue


def register(commands: Commands, common: argparse.ArgumentParser) -> None:
    """Declare ``config show``."""
    group = add_group(commands, "config", "show the effective configuration", common)
    showing = add_command(
        group, "show", _show,
        "print the effective configuration (file, environment, defaults) with secrets masked and where each value"
        " came from", common,
    )  # fmt: skip
    showing.add_argument("--json", action="store_true", help="one JSON object: each key's value, source and origin")


def _show(args: argparse.Namespace, settings: Settings) -> int:
    from syndication.config_sources import shown_values

    values = shown_values(settings, settings.origins)
    if args.json:
        document = {
            "config_file": str(settings.config_path),
            "values": {
                shown.key: {"value": shown.value, "source": shown.origin[0], "from": shown.origin[1] or None}
                for shown in values
            },
        }
        print(json.dumps(document, indent=2, ensure_ascii=False))
        return EXIT_OK
    print(f"# The effective configuration: {settings.config_path}, overridden by the environment.")
    print("# After each value, where it came from; secrets are shown as ****.")
    top = [shown for shown in values if "." not in shown.key and not _is_array_of_tables(shown)]
    arrays = [shown for shown in values if "." not in shown.key and _is_array_of_tables(shown)]
    print()
    for shown in top:
        print(_line(shown.key, shown))
    section = ""
    for shown in values:
        if "." not in shown.key:
            continue
        table, _, key = shown.key.rpartition(".")
        if table != section:
            section = table
            print(f"\n[{table}]")
        print(_line(key, shown))
    for shown in arrays:
        print(f"\n# {shown.key}: {_where(shown.origin)}")
        for item in shown.value:
            print(f"[[{shown.key}]]")
            for key, value in item.items():
                if value is not None:
                    print(f"{_toml_key(key)} = {_toml(value)}")
    return EXIT_OK


def _is_array_of_tables(shown: ShownValue) -> bool:
    return isinstance(shown.value, list) and bool(shown.value) and all(isinstance(v, dict) for v in shown.value)


def _line(key: str, shown: ShownValue) -> str:
    if shown.value is None:
        return f"# {_toml_key(key)} is not set  # {_where(shown.origin)}"
    return f"{_toml_key(key)} = {_toml(shown.value)}  # {_where(shown.origin)}"


def _where(origin: Origin) -> str:
    kind, name = origin
    if kind == "default":
        return "default"
    if kind == "environment":
        return f"environment {name}"
    if kind == "variable file":
        return f"file named by {name}"
    if kind == "key file":
        return f"signing key file {name}"
    return name


def _toml_key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else json.dumps(key, ensure_ascii=False)


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml(item) for item in value) + "]"
    if isinstance(value, dict):
        items = [f"{_toml_key(str(k))} = {_toml(v)}" for k, v in value.items() if v is not None]
        return "{ " + ", ".join(items) + " }" if items else "{}"
    return json.dumps(str(value), ensure_ascii=False)
