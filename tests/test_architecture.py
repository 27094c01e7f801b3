"""The layers hold: each part of the package imports only what lies below it (docs/architecture.md draws them).

Data flows one way: sources → store → (feeds | digests) → delivery. ``core`` imports nothing of ours; adapters
import ``core`` and their one library; ``app`` (the use cases) wires them; the drivers (the command line, the web
app and the scheduler's runner) call ``app`` and never the store, a transport or SQLAlchemy. Every import counts,
those inside functions and ``TYPE_CHECKING`` blocks too: a lazy import is still a dependency.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "syndication"

# Leaves that every layer may use: the version, the error tree, the clock.
_SHARED = {"syndication", "syndication.errors", "syndication.clock"}
_BELOW_APP = {
    "syndication.core",
    "syndication.config",
    "syndication.config_sources",
    "syndication.resources",
    "syndication.runtime",
    "syndication.store",
    "syndication.sources",
    "syndication.feeds",
    "syndication.mailing",
    "syndication.delivery",
    "syndication.inbound",
    "syndication.scheduling.cadences",
    "syndication.templates",
}
# What the drivers may use besides the use cases: the vocabulary, the settings, the process set-up.
_FOR_DRIVERS = {
    "syndication.app",
    "syndication.core",
    "syndication.config",
    "syndication.config_sources",
    "syndication.runtime",
}

# Each part of the package (the longest prefix decides) and the parts of ours it may import.
ALLOWED: dict[str, set[str]] = {
    "syndication": set(),
    "syndication.errors": set(),
    "syndication.clock": set(),
    "syndication.core": {"syndication.core"},
    "syndication.config": {  # crontabs are checked on load; the environment is read by config_sources
        "syndication.core",
        "syndication.scheduling.cadences",
        "syndication.config_sources",
    },
    "syndication.config_sources": set(),
    "syndication.resources": set(),
    "syndication.templates": set(),
    "syndication.runtime": {"syndication.config", "syndication.runtime"},
    "syndication.store": {"syndication.core", "syndication.store"},
    "syndication.sources": {"syndication.core", "syndication.config", "syndication.runtime", "syndication.sources"},
    "syndication.feeds": {
        "syndication.core",
        "syndication.config",
        "syndication.resources",
        "syndication.runtime",
        "syndication.store",
        "syndication.feeds",
    },
    "syndication.mailing": {"syndication.core", "syndication.config", "syndication.resources", "syndication.mailing"},
    "syndication.delivery": {
        "syndication.core",
        "syndication.config",
        "syndication.store",
        "syndication.mailing",
        "syndication.delivery",
    },
    "syndication.inbound": {"syndication.core", "syndication.config", "syndication.inbound"},
    "syndication.scheduling.cadences": set(),
    "syndication.app": _BELOW_APP | {"syndication.app"},
    # The drivers.
    "syndication.scheduling": _FOR_DRIVERS | {"syndication.scheduling"},
    "syndication.web": _FOR_DRIVERS | {"syndication.resources", "syndication.web"},
    # ``serve`` and ``run`` start the web app and the scheduler: the one way a driver starts another.
    "syndication.cli": _FOR_DRIVERS | {"syndication.cli", "syndication.web.app", "syndication.scheduling.runner"},
    "syndication.__main__": {"syndication.cli"},
}
DRIVERS = ("syndication.cli", "syndication.web", "syndication.scheduling")
# Libraries only the layers below the use cases may touch.
LIBRARIES_BELOW_APP = (
    "sqlalchemy",
    "alembic",
    "smtplib",
    "dkim",
    "feedgen",
    "premailer",
    "aiosmtpd",
    "imap_tools",
    "flufl",
)


def part_of(module: str, parts: dict[str, set[str]] = ALLOWED) -> str:
    """The part ``module`` belongs to: the longest prefix of it that ALLOWED names."""
    candidates = [name for name in parts if module == name or module.startswith(name + ".")]
    return max(candidates, key=len)


def imports_of(source: str, module: str) -> Iterator[tuple[int, str]]:
    """Every module ``source`` (the text of ``module``) imports, with its line: relative imports resolved."""
    package = module if module.endswith("__init__") else module.rpartition(".")[0]
    package = package.removesuffix(".__init__")
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{parent}.{base}" if base else parent
            yield node.lineno, base
            if base.startswith("syndication"):
                # ``from syndication.store import ledger`` imports the module syndication.store.ledger.
                for alias in node.names:
                    yield node.lineno, f"{base}.{alias.name}"


def violations(source: str, module: str) -> list[str]:
    """The imports of ``module`` that break the layers, one line each."""
    own = part_of(module)
    found = []
    for line, target in imports_of(source, module):
        if target.startswith("syndication"):
            if target in _SHARED:
                continue
            try:
                theirs = part_of(target)
            except ValueError:
                continue  # ``from syndication.x import name``: the name is not a module of ours
            if theirs == own or theirs in _SHARED:
                continue
            if not any(
                name == allowed or name.startswith(allowed + ".")
                for allowed in ALLOWED[own]
                for name in (theirs, target)
            ):
                found.append(f"{module}:{line} imports {target} ({own} may not use {theirs})")
        elif own.startswith(DRIVERS) and target.split(".")[0] in LIBRARIES_BELOW_APP:
            found.append(f"{module}:{line} imports {target} (a driver goes through syndication.app)")
    return found


def modules() -> Iterator[tuple[str, Path]]:
    for path in sorted(PACKAGE.rglob("*.py")):
        if "migrations" in path.parts:
            continue  # Alembic's revisions are the store's own, run by it
        relative = path.relative_to(PACKAGE.parent).with_suffix("")
        name = ".".join(relative.parts).removesuffix(".__init__")
        yield name, path


def test_every_module_imports_only_what_lies_below_it() -> None:
    found = [line for name, path in modules() for line in violations(path.read_text(encoding="utf-8"), name)]
    assert found == [], "\n".join(found)


def test_every_module_belongs_to_a_known_part() -> None:
    names = [name for name, _ in modules()]
    assert names, "no module found: the test looks in the wrong place"
    for name in names:
        assert part_of(name) in ALLOWED


@pytest.mark.parametrize(
    ("module", "source"),
    [
        ("syndication.web.editor", "from syndication.store import database\n"),
        ("syndication.web.editor", "def f():\n    from syndication.store.ledger import claim\n"),
        ("syndication.cli.editions", "from syndication.delivery.smtp import SmtpClient\n"),
        ("syndication.scheduling.runner", "import sqlalchemy\n"),
        ("syndication.web.archive", "from syndication.feeds.rss_atom import render_atom\n"),
        ("syndication.store.ledger", "from syndication.app.editions import deliver\n"),
        ("syndication.core.models", "from syndication.config import Settings\n"),
        ("syndication.feeds.catalog", "from syndication.web.feeds import document_of\n"),
    ],
)
def test_the_check_refuses_an_import_across_the_layers(module: str, source: str) -> None:
    assert violations(source, module), f"{module} importing this went unnoticed: {source!r}"


def test_the_check_lets_a_driver_call_the_use_cases() -> None:
    source = "from syndication.app.editions import deliver\nfrom syndication.core.models import Edition\n"
    assert violations(source, "syndication.web.editor") == []
