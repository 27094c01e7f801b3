"""``python -m bench`` runs every benchmark with its defaults."""

from __future__ import annotations

import sys

from bench import import_posts


def main() -> int:
    """Run each benchmark in turn; extra arguments (e.g. --record) go to each."""
    return import_posts.main(sys.argv[1:])


raise SystemExit(main())
