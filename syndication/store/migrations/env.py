"""Alembic environment: migrations run on the engine the service hands over, never on a URL of their own."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Engine

from syndication.store.schema import Base

engine = context.config.attributes["engine"]
assert isinstance(engine, Engine)

with engine.begin() as connection:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()
