"""edition posts: the posts each edition holds, at most one edition of a cadence per post, so that a post
gathered after its window's edition was made goes in the next edition instead of none

Revision ID: 0012
Revises: 0011
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"


def upgrade() -> None:
    op.create_table(
        "edition_posts",
        sa.Column("cadence", sa.String(length=16), nullable=False),
        sa.Column("post_id", sa.Integer(), nullable=False),
        sa.Column("edition_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["edition_id"], ["editions.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["post_id"], ["posts.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("cadence", "post_id"),
    )
    with op.batch_alter_table("edition_posts", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_edition_posts_edition_id"), ["edition_id"], unique=False)
    # Editions made before this revision showed what their window holds now, and their public copies show it:
    # they keep those posts (a post in two overlapping windows goes to the older edition). An empty edition
    # keeps none: what its window holds now came after it was made, and goes in the next edition of its cadence.
    # Both databases compare the times as stored (SQLite's naive UTC text sorts as the moments do).
    op.execute(
        "INSERT INTO edition_posts (cadence, post_id, edition_id)"
        " SELECT e.cadence, p.id, MIN(e.id) FROM editions e"
        " JOIN posts p ON p.published > e.since AND p.published <= e.until"
        " WHERE e.status <> 'empty'"
        " GROUP BY e.cadence, p.id"
    )


def downgrade() -> None:
    with op.batch_alter_table("edition_posts", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_edition_posts_edition_id"))
    op.drop_table("edition_posts")
