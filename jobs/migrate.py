"""Run the Alembic migrations programmatically (`lco serve`, `lco migrate`, tests), and check
that a database has been made before other commands use it.

upgrade(settings)            # alembic upgrade head on settings' database (creates it)
require_schema(settings)     # ControlError naming the database unless it has a schema
head_revisions()             # the revisions `upgrade head` leads to (the code's schema)
current_revision(conn)       # the revision a database is at (None: no schema)
"""

from __future__ import annotations

import functools
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, inspect, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

from jobs.db import make_engine
from jobs.errors import ControlError
from jobs.settings import Settings

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"


def alembic_config(settings: Settings) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.attributes["url"] = settings.effective_database_url
    return cfg


@functools.cache
def head_revisions() -> frozenset[str]:
    """The head revision(s) of the migrations shipped with this code (read once)."""
    return frozenset(ScriptDirectory(str(MIGRATIONS_DIR)).get_heads())


def current_revision(conn: Connection) -> str | None:
    """Read directly rather than through Alembic's MigrationContext, which logs two INFO
    lines per call (the readiness probe calls this every few seconds)."""
    if not inspect(conn).has_table("alembic_version"):
        return None
    rows = conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all()
    return rows[0] if len(rows) == 1 else None


def upgrade(settings: Settings, revision: str = "head") -> None:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    command.upgrade(alembic_config(settings), revision)


def shown_url(settings: Settings) -> str:
    """The database URL as it may be printed: absolute path for SQLite, no password."""
    return make_url(settings.effective_database_url).render_as_string(hide_password=True)


def require_schema(settings: Settings) -> None:
    """Refuse a database that `lco migrate` (or `lco serve`) has not made. Opening a missing
    SQLite file would create an empty one, silently, under whatever directory a command
    happened to run in."""
    url = make_url(settings.effective_database_url)
    if url.get_backend_name() == "sqlite":
        fix = (
            f"create it with `lco migrate --data-dir {settings.data_dir.resolve()}`, or point "
            "at an existing one with --data-dir DIR (or LCO_DATA_DIR)"
        )
        path = url.database
        if path and path != ":memory:" and not Path(path).is_file():
            raise ControlError(f"no database at {path}: {fix}")
    else:
        fix = "create its tables with `lco migrate`"
    engine = make_engine(settings)
    try:
        with engine.connect() as conn:
            revision = MigrationContext.configure(conn).get_current_revision()
    except OperationalError as exc:
        raise ControlError(f"cannot open the database {shown_url(settings)}: {exc.orig}") from None
    finally:
        engine.dispose()
    if revision is None:
        raise ControlError(f"the database {shown_url(settings)} has no tables: {fix}")
