"""What the `lco` commands share: the parent parsers for their common options, and the one
way a server-side command opens the database (settings -> schema check -> transaction).

    p = sub.add_parser("list", parents=[DATA_DIR, JSON])
    with transaction_for(args) as session: ...            # most admin commands
    db = open_database(args)  # db.settings, db.sessions: those that need more
    settings = database_settings(args, create=True)       # serve, migrate

Only `lco serve` and `lco migrate` create (and upgrade) the database; every other command
refuses one that is not there, rather than start an empty one wherever it happens to run.
Each opener names the database on stderr (`database: URL`), so an operator sees which one a
command touched. The imports of `jobs` stay inside the functions: `import cli.main` must not
load SQLAlchemy models, let alone torch, before a command runs.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker

    from jobs.settings import Settings


def _parent(*args: str, **kwargs: object) -> argparse.ArgumentParser:
    """A parser holding one option, for `parents=[...]` (add_help=False, as argparse needs)."""
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument(*args, **kwargs)  # type: ignore[arg-type]
    return parent


# The options many commands take, declared once each.
DATA_DIR = _parent(
    "--data-dir", help="the service's data dir: SQLite database, files (default: LCO_DATA_DIR)"
)
JSON = _parent("--json", action="store_true", help="print JSON (for scripts)")


def client_parent() -> argparse.ArgumentParser:
    """`--base-url` and `--api-key`: every command that talks to a running service."""
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument(
        "--base-url", help="the service's /v1 URL (default: LCO_BASE_URL, or localhost:8000)"
    )
    parent.add_argument("--api-key", help="default: LCO_API_KEY")
    return parent


CLIENT = client_parent()


def settings_for(args: argparse.Namespace) -> Settings:
    """The service settings, with `--data-dir` (when given) in place of LCO_DATA_DIR. It is
    set in the environment, not only passed, so that processes this one starts see it."""
    from jobs.settings import Settings

    if getattr(args, "data_dir", None):
        os.environ["LCO_DATA_DIR"] = str(Path(args.data_dir).resolve())
    return Settings()


@dataclass(frozen=True)
class Database:
    """An opened database: its settings and a session factory on one engine."""

    settings: Settings
    sessions: sessionmaker[Session]


def database_settings(args: argparse.Namespace, *, create: bool = False) -> Settings:
    """The settings of a command that uses the database, which it names on stderr. With
    `create` (serve, migrate) the database is created or upgraded; otherwise it must exist at
    the latest migration, or this raises `ControlError` (one line, with the fix)."""
    from jobs.migrate import require_schema, shown_url, upgrade

    settings = settings_for(args)
    print(f"database: {shown_url(settings)}", file=sys.stderr, flush=True)
    if create:
        upgrade(settings)
    else:
        require_schema(settings)
    return settings


def open_database(args: argparse.Namespace) -> Database:
    """`database_settings(args)` and a session factory on one engine."""
    from jobs.db import make_engine, make_session_factory

    settings = database_settings(args)
    return Database(settings, make_session_factory(make_engine(settings)))


@contextmanager
def transaction_for(args: argparse.Namespace) -> Iterator[Session]:
    """`open_database(args)` and one transaction on it: committed when the block ends,
    rolled back if it raises (a refused change writes nothing)."""
    from jobs.db import transaction

    with transaction(open_database(args).sessions) as session:
        yield session
