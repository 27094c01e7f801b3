"""posts.changed_at: when the store last wrote a post, so a feed rebuild finds what changed

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from syndication.store.schema import UTCDateTime

revision = "0002"
down_revision = "0001"


def upgrade() -> None:
    with op.batch_alter_table("posts", schema=None) as batch_op:
        batch_op.add_column(sa.Column("changed_at", UTCDateTime(), nullable=True))
    # Rows stored before this revision count as changed when they were last updated.
    op.execute("UPDATE posts SET changed_at = updated")
    with op.batch_alter_table("posts", schema=None) as batch_op:
        batch_op.alter_column("changed_at", existing_type=UTCDateTime(), nullable=False)
        batch_op.create_index("ix_posts_changed_at", ["changed_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("posts", schema=None) as batch_op:
        batch_op.drop_index("ix_posts_changed_at")
        batch_op.drop_column("changed_at")
