"""The one place that finds the files shipped with the package: the email and web templates, the message catalogs,
and the one loader of those catalogs (``translations``) for whatever renders words in a reader's language.

They are found with ``importlib.resources``, never from ``__file__``, so the answer is the same for every kind of
install. The templates stay at the top of the repository (``templates/email``, ``templates/web``) and
pyproject.toml installs that folder inside the package as ``syndication.templates``: a wheel or ``pip install .``
copies it to ``site-packages/syndication/templates``, an editable install maps the package to the checkout's
folder itself.

The answers are ``Path`` objects, not just ``Traversable`` ones, because Jinja2's ``FileSystemLoader`` and the
pages' assets read real files for as long as the process runs. ``importlib.resources.as_file`` would only lend a
copy for the length of a ``with`` block, and is not needed: pip installs a wheel as plain folders, where
``files()`` already answers with a ``Path``. A package imported from a zip archive is refused, by name.
"""

from __future__ import annotations

import io
import threading
from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING

from syndication.errors import SyndicationError

if TYPE_CHECKING:
    from babel.support import Translations


def email_templates() -> Path:
    """The shipped email templates (``templates/email`` of the repository)."""
    return _folder("syndication.templates", "email")


def web_templates() -> Path:
    """The shipped templates, stylesheet and script of the web pages and the feeds' index page (``templates/web``)."""
    return _folder("syndication.templates", "web")


def catalogs() -> Path:
    """The gettext catalogs, one folder a language (``syndication/locales/<language>/LC_MESSAGES``): the emails'
    (domain ``messages``) and the web pages' and feeds' (domain ``web``) side by side, so that a language is added
    as one folder."""
    return _folder("syndication", "locales")


def catalog_languages(folder: Path, domain: str = "messages") -> tuple[str, ...]:
    """The languages ``folder`` holds a catalog of ``domain`` for (``<language>/LC_MESSAGES/<domain>.po``), as
    their folders name them (``es``, ``pt_BR``), sorted."""
    return tuple(sorted(path.parent.parent.name for path in folder.glob(f"*/LC_MESSAGES/{domain}.po")))


def catalog_file(folder: Path, language: str, domain: str = "messages") -> Path | None:
    """The ``.po`` file of ``domain`` that words ``language`` in ``folder``: its own (``pt-BR`` is ``pt_BR``),
    else its base language's (``pt``), else None."""
    wanted = language.replace("-", "_")
    for candidate in dict.fromkeys((wanted, wanted.split("_")[0])):
        po_file = folder / candidate / "LC_MESSAGES" / f"{domain}.po"
        if po_file.is_file():
            return po_file
    return None


def translations(po_file: Path) -> Translations:
    """The catalog ``po_file`` compiled in memory, once per process: the package ships the ``.po`` files only
    (no build step makes ``.mo`` files, so a wheel and a checkout read the same text)."""
    with _compiled_lock:
        if po_file not in _compiled:
            # Babel's catalog reader, imported when a catalog is first read: a command that words nothing skips it.
            from babel.messages.mofile import write_mo
            from babel.messages.pofile import read_po
            from babel.support import Translations

            with po_file.open("rb") as handle:
                catalog = read_po(handle)
            buffer = io.BytesIO()
            write_mo(buffer, catalog)
            buffer.seek(0)
            _compiled[po_file] = Translations(buffer)
        return _compiled[po_file]


_compiled: dict[Path, Translations] = {}
# Pages are rendered from several threads at once (the event loop and the thread pool): one compiles each file.
_compiled_lock = threading.Lock()


def _folder(package: str, name: str) -> Path:
    folder = files(package) / name
    if not isinstance(folder, Path) or not folder.is_dir():
        raise SyndicationError(f"{package}: {name} is not a folder on disk ({folder}); reinstall syndication")
    return folder
