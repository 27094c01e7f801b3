"""form emails: how many emails the subscribe form sent to each address per day, to cap them

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"


def upgrade() -> None:
    op.create_table(
        "form_emails",
        sa.Column("email_hash", sa.String(length=64), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("email_hash", "day"),
    )


def downgrade() -> None:
    op.drop_table("form_emails")
