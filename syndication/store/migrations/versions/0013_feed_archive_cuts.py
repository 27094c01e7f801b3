"""feed archive pages with fixed bounds: the cuts where each page begins, and the place a post left in a feed

Revision ID: 0013
Revises: 0012
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from syndication.store.schema import UTCDateTime

revision = "0013"
down_revision = "0012"


def upgrade() -> None:
    op.create_table(
        "feed_archive_cuts",
        sa.Column("feed", sa.String(length=300), nullable=False),
        sa.Column("published", UTCDateTime(), nullable=False),
        sa.Column("post_id", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("feed", "published", "post_id"),
    )
    with op.batch_alter_table("feed_departures", schema=None) as batch_op:
        batch_op.add_column(sa.Column("published", UTCDateTime(), nullable=True))
        batch_op.add_column(sa.Column("post_id", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("feed_departures", schema=None) as batch_op:
        batch_op.drop_column("post_id")
        batch_op.drop_column("published")
    op.drop_table("feed_archive_cuts")
