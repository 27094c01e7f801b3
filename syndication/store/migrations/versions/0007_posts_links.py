"""posts.links: a copy of each post's authors, themes and regions, read with the post in one row

The link tables stay the truth that listings search by theme, region and author; reading them back for every
post loaded was half of what a feed build spent in the store.

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

from collections import defaultdict

import orjson
import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"


def upgrade() -> None:
    with op.batch_alter_table("posts", schema=None) as batch_op:
        batch_op.add_column(sa.Column("links", sa.Text(), nullable=False, server_default=""))
    connection = op.get_bind()
    authors: dict[int, list[list[str]]] = defaultdict(list)
    themes: dict[int, list[str]] = defaultdict(list)
    regions: dict[int, list[str]] = defaultdict(list)
    for post_id, slug, name in connection.execute(
        sa.text(
            "SELECT post_authors.post_id, authors.slug, authors.name FROM post_authors"
            " JOIN authors ON authors.id = post_authors.author_id ORDER BY post_authors.post_id, post_authors.position"
        )
    ):
        authors[post_id].append([slug, name])
    for post_id, theme in connection.execute(
        sa.text("SELECT post_id, theme FROM post_themes ORDER BY post_id, position")
    ):
        themes[post_id].append(theme)
    for post_id, region in connection.execute(
        sa.text("SELECT post_id, region FROM post_regions ORDER BY post_id, position")
    ):
        regions[post_id].append(region)
    post_ids = [row[0] for row in connection.execute(sa.text("SELECT id FROM posts"))]
    rows = [
        {
            "post_id": post_id,
            # The same encoding as syndication.store.posts.encode_links, spelled out: a migration must not change
            # when the code does.
            "links": orjson.dumps({"a": authors[post_id], "t": themes[post_id], "r": regions[post_id]}).decode(),
        }
        for post_id in post_ids
    ]
    for start in range(0, len(rows), 1000):
        connection.execute(sa.text("UPDATE posts SET links = :links WHERE id = :post_id"), rows[start : start + 1000])


def downgrade() -> None:
    with op.batch_alter_table("posts", schema=None) as batch_op:
        batch_op.drop_column("links")
