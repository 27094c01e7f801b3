"""feed documents and store versions: the built feeds kept in the store (``[feeds] storage = "database"``) so that
every web node sharing the database serves the same bytes, and a version per kind of shared content that a web node
checks to know whether what it derived from the store is still current

Revision ID: 0021
Revises: 0020
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from syndication.store.schema import UTCDateTime

revision = "0021"
down_revision = "0020"


def upgrade() -> None:
    op.create_table(
        "store_versions",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    op.create_table(
        "feed_documents",
        sa.Column("path", sa.String(length=1000), nullable=False),
        sa.Column("etag", sa.String(length=80), nullable=False),
        sa.Column("content_type", sa.String(length=200), nullable=False),
        sa.Column("body", sa.LargeBinary(), nullable=False),
        sa.Column("stored_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("path", "etag"),
    )
    op.create_table(
        "feed_manifests",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("body", sa.LargeBinary(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )


def downgrade() -> None:
    op.drop_table("feed_manifests")
    op.drop_table("feed_documents")
    op.drop_table("store_versions")
