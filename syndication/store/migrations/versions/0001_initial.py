"""initial schema: posts, authors, themes, regions, source cursors

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from syndication.store.schema import UTCDateTime

revision = "0001"
down_revision = None


def upgrade() -> None:
    op.create_table(
        "authors",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("slug", sa.String(length=200), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("slug"),
    )
    op.create_table(
        "posts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("guid", sa.String(length=2048), nullable=False),
        sa.Column("source", sa.String(length=100), nullable=True),
        sa.Column("title", sa.Text(), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("summary", sa.Text(), nullable=False),
        sa.Column("content_html", sa.Text(), nullable=False),
        sa.Column("language", sa.String(length=35), nullable=False),
        sa.Column("image_url", sa.Text(), nullable=True),
        sa.Column("image_alt", sa.Text(), nullable=False),
        sa.Column("published", UTCDateTime(), nullable=False),
        sa.Column("updated", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("guid"),
    )
    with op.batch_alter_table("posts", schema=None) as batch_op:
        batch_op.create_index("ix_posts_published_id", ["published", "id"], unique=False)

    op.create_table(
        "source_cursors",
        sa.Column("source", sa.String(length=100), nullable=False),
        sa.Column("state", sa.JSON(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("source"),
    )
    op.create_table(
        "post_authors",
        sa.Column("post_id", sa.Integer(), nullable=False),
        sa.Column("author_id", sa.Integer(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("published", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["author_id"], ["authors.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["post_id"], ["posts.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("post_id", "author_id"),
    )
    with op.batch_alter_table("post_authors", schema=None) as batch_op:
        batch_op.create_index("ix_post_authors_author_published", ["author_id", "published", "post_id"], unique=False)

    op.create_table(
        "post_regions",
        sa.Column("post_id", sa.Integer(), nullable=False),
        sa.Column("region", sa.String(length=100), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("published", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["post_id"], ["posts.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("post_id", "region"),
    )
    with op.batch_alter_table("post_regions", schema=None) as batch_op:
        batch_op.create_index("ix_post_regions_region_published", ["region", "published", "post_id"], unique=False)

    op.create_table(
        "post_themes",
        sa.Column("post_id", sa.Integer(), nullable=False),
        sa.Column("theme", sa.String(length=100), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("published", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["post_id"], ["posts.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("post_id", "theme"),
    )
    with op.batch_alter_table("post_themes", schema=None) as batch_op:
        batch_op.create_index("ix_post_themes_theme_published", ["theme", "published", "post_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("post_themes", schema=None) as batch_op:
        batch_op.drop_index("ix_post_themes_theme_published")

    op.drop_table("post_themes")
    with op.batch_alter_table("post_regions", schema=None) as batch_op:
        batch_op.drop_index("ix_post_regions_region_published")

    op.drop_table("post_regions")
    with op.batch_alter_table("post_authors", schema=None) as batch_op:
        batch_op.drop_index("ix_post_authors_author_published")

    op.drop_table("post_authors")
    op.drop_table("source_cursors")
    with op.batch_alter_table("posts", schema=None) as batch_op:
        batch_op.drop_index("ix_posts_published_id")

    op.drop_table("posts")
    op.drop_table("authors")
