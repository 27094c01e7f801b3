"""signed-out sessions: editor sessions ended before they expired, so that their cookies sign nobody in

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from syndication.store.schema import UTCDateTime

revision = "0008"
down_revision = "0007"


def upgrade() -> None:
    op.create_table(
        "signed_out_sessions",
        sa.Column("session_id", sa.String(length=32), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("session_id"),
    )
    with op.batch_alter_table("signed_out_sessions", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_signed_out_sessions_expires_at"), ["expires_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("signed_out_sessions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_signed_out_sessions_expires_at"))
    op.drop_table("signed_out_sessions")
