"""Process-wide machinery: logging set-up and the worker processes CPU-bound work runs in."""
