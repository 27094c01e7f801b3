"""per-language feeds: posts' language tags in their canonical case, and an index to list a language's posts

Revision ID: 0014
Revises: 0013
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from syndication.core.languages import canonical_tag

revision = "0014"
down_revision = "0013"


def upgrade() -> None:
    # "pt-br" and "pt-BR" are one language: one feed (languages/pt-br), so one stored form.
    connection = op.get_bind()
    posts = sa.table("posts", sa.column("language", sa.String))
    for (tag,) in connection.execute(sa.select(posts.c.language).distinct()).all():
        if canonical_tag(tag) != tag:
            connection.execute(posts.update().where(posts.c.language == tag).values(language=canonical_tag(tag)))
    with op.batch_alter_table("posts", schema=None) as batch_op:
        batch_op.create_index("ix_posts_language_published_id", ["language", "published", "id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("posts", schema=None) as batch_op:
        batch_op.drop_index("ix_posts_language_published_id")
