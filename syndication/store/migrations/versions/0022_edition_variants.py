"""edition variants: each variant of an edition rendered once and kept for every sender; the deliveries still to
send indexed in id order, so that a claim does not walk past every delivery already sent (issue 22)

Revision ID: 0022
Revises: 0021
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from syndication.store.schema import UTCDateTime

revision = "0022"
down_revision = "0021"


def upgrade() -> None:
    op.create_table(
        "edition_variants",
        sa.Column("edition_id", sa.Integer(), nullable=False),
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("empty", sa.Boolean(), nullable=False),
        sa.Column("subject", sa.Text(), nullable=False),
        sa.Column("preheader", sa.Text(), nullable=False),
        sa.Column("html", sa.Text(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("language", sa.String(length=35), nullable=False),
        sa.Column("links", sa.JSON(), nullable=False),
        sa.Column("problems", sa.JSON(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["edition_id"], ["editions.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("edition_id", "key"),
    )
    still_open = sa.text("status IN ('queued', 'deferred', 'claimed')")
    op.create_index(
        "ix_deliveries_open", "deliveries", ["id"], unique=False, postgresql_where=still_open, sqlite_where=still_open
    )


def downgrade() -> None:
    op.drop_index("ix_deliveries_open", table_name="deliveries")
    op.drop_table("edition_variants")
