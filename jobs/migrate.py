"""Run the Alembic migrations programmatically (`lco serve`, `lco team create`, tests).

upgrade(settings)            # alembic upgrade head on settings' database
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

from jobs.settings import Settings

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"


def alembic_config(settings: Settings) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.attributes["url"] = settings.effective_database_url
    return cfg


def upgrade(settings: Settings, revision: str = "head") -> None:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    command.upgrade(alembic_config(settings), revision)
