"""The shipped email and web templates. pyproject.toml installs this folder inside the package, as
``syndication.templates``; ``syndication.resources`` finds it there (editable installs included)."""
