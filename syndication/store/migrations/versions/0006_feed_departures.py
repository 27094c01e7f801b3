"""feed departures: the feeds a post left when it was edited, for incremental feed builds

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from syndication.store.schema import UTCDateTime

revision = "0006"
down_revision = "0005"


def upgrade() -> None:
    op.create_table(
        "feed_departures",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("changed_at", UTCDateTime(), nullable=False),
        sa.Column("dimension", sa.String(length=16), nullable=False),
        sa.Column("slug", sa.String(length=200), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("feed_departures", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_feed_departures_changed_at"), ["changed_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("feed_departures", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_feed_departures_changed_at"))
    op.drop_table("feed_departures")
