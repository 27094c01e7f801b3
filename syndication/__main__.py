"""``python -m syndication`` runs the command line."""

from syndication.cli import main

# Guarded: worker processes (large imports) re-import the main module, which must not run the command again.
if __name__ == "__main__":
    raise SystemExit(main())
