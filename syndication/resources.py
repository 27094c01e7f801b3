"""The one place that finds the files shipped with the package: the email and web templates, the message catalogs.

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

from importlib.resources import files
from pathlib import Path

from syndication.errors import SyndicationError


def email_templates() -> Path:
    """The shipped email templates (``templates/email`` of the repository)."""
    return _folder("syndication.templates", "email")


def web_templates() -> Path:
    """The shipped templates, stylesheet and script of the web pages and the feeds' index page (``templates/web``)."""
    return _folder("syndication.templates", "web")


def message_catalogs() -> Path:
    """The gettext catalogs of the emails (``syndication/mailing/locales``)."""
    return _folder("syndication.mailing", "locales")


def _folder(package: str, name: str) -> Path:
    folder = files(package) / name
    if not isinstance(folder, Path) or not folder.is_dir():
        raise SyndicationError(f"{package}: {name} is not a folder on disk ({folder}); reinstall syndication")
    return folder
