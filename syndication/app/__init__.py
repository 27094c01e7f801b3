"""The use cases: one module per area, each function opening its own transaction and returning plain data.

The command line, the web app and the scheduler call these and nothing below them; this package is the only
place that wires the store, the sources, the feed writers, the renderer and the mail exit together.
"""
