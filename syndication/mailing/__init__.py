"""Emails: rendering (templates, CSS inlining, plain text) and the MIME messages that carry them."""
