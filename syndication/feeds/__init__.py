"""Feeds: which exist (catalog), how each format is written, and how the built files are kept on disk."""
