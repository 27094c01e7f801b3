"""subscribers choose posts by language: the languages of posts they read besides their emails', and whether
their digest shows posts in other languages (all), puts theirs first, or shows only theirs

Revision ID: 0016
Revises: 0015
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"


def upgrade() -> None:
    # Both empty for every subscriber there was: they read their emails' language and get the site's default,
    # which is "all", as their digests were until now.
    with op.batch_alter_table("subscribers", schema=None) as batch_op:
        batch_op.add_column(sa.Column("reads", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("language_choice", sa.String(length=8), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("subscribers", schema=None) as batch_op:
        batch_op.drop_column("language_choice")
        batch_op.drop_column("reads")
