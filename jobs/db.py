"""Database engine and sessions, built from Settings by factories (never at import time).

    engine = make_engine(settings)
    sessions = make_session_factory(engine)
    with sessions() as session, session.begin():
        ...

SQLite (the embedded default) is shared by the API, the worker and the supervisor, so it
runs in WAL mode with a busy timeout, and every transaction starts with BEGIN IMMEDIATE: a
deferred transaction that reads and then writes can fail with SQLITE_BUSY_SNAPSHOT, which
no busy timeout retries.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from jobs.settings import Settings


def make_engine(
    settings: Settings, *, idle_in_transaction_s: float | None = None, **kwargs: Any
) -> Engine:
    """An engine for the configured database; SQLite gets the pragmas described above.

    `idle_in_transaction_s` (PostgreSQL): the server ends a session left idle inside a
    transaction that long. A lease holder frozen mid-transaction (SIGSTOP, a paused VM)
    would otherwise keep the job row locked forever, and the reaper, which skips locked
    rows, could never requeue the job.
    """
    url = settings.effective_database_url
    if url.startswith("sqlite"):
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url, connect_args={"timeout": 30, "check_same_thread": False}, **kwargs
        )
        _configure_sqlite(engine)
        return engine
    if idle_in_transaction_s is not None and url.startswith("postgresql"):
        ms = max(int(idle_in_transaction_s * 1000), 1)
        kwargs["connect_args"] = {"options": f"-c idle_in_transaction_session_timeout={ms}"}
    return create_engine(url, pool_pre_ping=True, **kwargs)


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the driver, decide where transactions begin.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        # Readers never upgrade to writers, so they need no write lock (WAL lets them run
        # beside the writer); everything else takes the write lock up front.
        read_only = conn.get_execution_options().get(READ_ONLY, False)
        conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")


READ_ONLY = "lco_read_only"


def db_unreachable(exc: DBAPIError) -> bool:
    """The database cannot be reached right now (down, restarting, a dropped connection,
    SQLite busy): worth retrying. Any other database error is a bug."""
    return isinstance(exc, OperationalError | InterfaceError) or exc.connection_invalidated


def make_session_factory(engine: Engine, *, read_only: bool = False) -> sessionmaker[Session]:
    """Sessions on `engine`; `read_only` ones must not write (on SQLite they take no lock)."""
    bind = engine.execution_options(**{READ_ONLY: True}) if read_only else engine
    return sessionmaker(bind, expire_on_commit=False)


@contextmanager
def transaction(sessions: sessionmaker[Session]) -> Iterator[Session]:
    """One unit of work: commit on success, roll back on error (for workers and the CLI)."""
    with sessions() as session, session.begin():
        yield session
