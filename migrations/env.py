"""Alembic environment: reads the same Settings as the service, targets `jobs.models`.

The URL comes from `config.attributes["url"]` when a caller (`lco serve`, tests) passes
one, else from `Settings()` (LCO_DATABASE_URL or the SQLite file under LCO_DATA_DIR).
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from jobs.db import make_engine
from jobs.models import Base
from jobs.settings import Settings

config = context.config
target_metadata = Base.metadata


def _settings() -> Settings:
    url = config.attributes.get("url")
    return Settings(database_url=url) if url else Settings()


def _configure(connection: Connection | None = None, url: str | None = None) -> None:
    context.configure(
        connection=connection,
        url=url,
        target_metadata=target_metadata,
        compare_type=True,
        # SQLite cannot ALTER most things in place; batch mode copies the table.
        render_as_batch=True,
    )


def run_migrations_offline() -> None:
    _configure(url=_settings().effective_database_url)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _configure(connection)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = make_engine(_settings())
    try:
        with engine.connect() as conn:
            _configure(conn)
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
