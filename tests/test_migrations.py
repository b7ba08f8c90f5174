"""Alembic is the only source of the schema: `upgrade head` builds it on empty SQLite and
PostgreSQL, and autogenerate finds nothing to add (models and migrations do not drift)."""

from __future__ import annotations

from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from jobs.db import make_engine
from jobs.migrate import upgrade
from jobs.models import Base
from jobs.settings import Settings

TABLES = {
    "teams",
    "api_keys",
    "files",
    "jobs",
    "job_events",
    "job_metrics",
    "checkpoints",
    "models",
}


def _assert_head_matches_models(settings: Settings) -> None:
    upgrade(settings)
    engine = make_engine(settings)
    try:
        with engine.connect() as conn:
            assert set(inspect(conn).get_table_names()) >= TABLES
            ctx = MigrationContext.configure(conn, opts={"compare_type": True})
            diff = compare_metadata(ctx, Base.metadata)
        assert diff == [], f"models and migrations drifted: {diff}"
        upgrade(settings)  # idempotent
    finally:
        engine.dispose()


def test_upgrade_head_on_empty_sqlite(tmp_path: Path) -> None:
    _assert_head_matches_models(Settings(data_dir=tmp_path))


def test_upgrade_head_on_empty_postgresql(tmp_path: Path, pg_url: str) -> None:
    _assert_head_matches_models(Settings(data_dir=tmp_path, database_url=pg_url))
