"""authors are found by name, not by slug: a name key (Unicode-normalised, case-folded) on each author, so that two
different names never share a slug and a slug, once given, is kept

Revision ID: 0015
Revises: 0014
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from syndication.core.slugs import name_key

revision = "0015"
down_revision = "0014"


def upgrade() -> None:
    with op.batch_alter_table("authors", schema=None) as batch_op:
        batch_op.add_column(sa.Column("name_key", sa.String(length=400), nullable=True))
    connection = op.get_bind()
    authors = sa.table("authors", sa.column("id", sa.Integer), sa.column("name", sa.Text),
                       sa.column("name_key", sa.String))  # fmt: skip
    seen: set[str] = set()
    for author_id, name in connection.execute(sa.select(authors.c.id, authors.c.name).order_by(authors.c.id)).all():
        key = name_key(name)
        # Two stored authors with one key (a name met under two slugs before): the later keeps its own key, so
        # both feeds stay where they are; the name finds the first from now on.
        if key in seen:
            key = f"{key}#{author_id}"
        seen.add(key)
        connection.execute(authors.update().where(authors.c.id == author_id).values(name_key=key))
    with op.batch_alter_table("authors", schema=None) as batch_op:
        batch_op.alter_column("name_key", existing_type=sa.String(length=400), nullable=False)
        batch_op.create_unique_constraint("uq_authors_name_key", ["name_key"])


def downgrade() -> None:
    with op.batch_alter_table("authors", schema=None) as batch_op:
        batch_op.drop_constraint("uq_authors_name_key", type_="unique")
        batch_op.drop_column("name_key")
