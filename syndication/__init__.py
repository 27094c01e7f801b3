"""syndication: gather posts, publish feeds, send themed email digests."""

__version__ = "0.1.0"
