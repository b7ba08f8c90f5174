"""Alembic migrations: the only source of the schema. `jobs.migrate.upgrade(settings)` runs them."""
