"""What this process has committed: a counter per table, bumped by SQLAlchemy session events.

    track_writes()                          # once per process (the API app factory calls it)
    seen = version("api_keys", "teams")     # read before computing something from those tables
    ...
    version("api_keys", "teams") == seen    # False once a commit in this process wrote them

The API's short-lived caches (`jobs.auth.AuthCache`, `jobs.queue.QueueSlots`) use it to drop
an entry the moment a commit *in this process* touches a table the entry was read from, by
any session: an API route, the scheduler thread, a worker task run in-process (tests), a CLI
command. Writes by other processes are not seen here; those caches bound them by age.

Counted: ORM flushes (rows added, changed or deleted) and ORM-enabled `update()`/`delete()`/
`insert()` statements run through a Session. Not counted: raw SQL text and Core statements on
a bare Connection (nothing in this project writes that way).
"""

from __future__ import annotations

import threading
from typing import Any

from sqlalchemy import event
from sqlalchemy.orm import ORMExecuteState, Session, UOWTransaction

_WRITTEN = "lco_written_tables"  # Session.info key: tables written in the open transaction
_lock = threading.Lock()
_counters: dict[str, int] = {}


def version(*tables: str) -> int:
    """A number that grows whenever a commit in this process writes one of `tables`."""
    return sum(_counters.get(t, 0) for t in tables)


def track_writes() -> None:
    """Count commits per table for every Session in this process (idempotent)."""
    for name, fn in (
        ("after_flush", _after_flush),
        ("do_orm_execute", _on_execute),
        ("after_commit", _after_commit),
        ("after_rollback", _after_rollback),
    ):
        if not event.contains(Session, name, fn):
            event.listen(Session, name, fn)


def _written(session: Session) -> set[str]:
    tables: set[str] = session.info.setdefault(_WRITTEN, set())
    return tables


def _after_flush(session: Session, _flush: UOWTransaction) -> None:
    tables = _written(session)
    for obj in (*session.new, *session.dirty, *session.deleted):
        table = getattr(obj, "__tablename__", None)
        if table:
            tables.add(table)


def _on_execute(state: ORMExecuteState) -> None:
    if state.is_update or state.is_delete or state.is_insert:
        table: Any = getattr(state.statement, "table", None)
        name = getattr(table, "name", None)
        if name:
            _written(state.session).add(name)


def _after_commit(session: Session) -> None:
    tables = session.info.pop(_WRITTEN, None)
    if tables:
        with _lock:
            for table in tables:
                _counters[table] = _counters.get(table, 0) + 1


def _after_rollback(session: Session) -> None:
    session.info.pop(_WRITTEN, None)
