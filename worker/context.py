"""Per-process worker state, built lazily in the process that uses it (after Celery forks):
settings, DB sessions, storage, dispatcher, this worker's lease-owner name, and a
scheduler pass to run when a job frees its GPUs."""

from __future__ import annotations

import logging
import os
import socket
import sys
import threading
from functools import cached_property

from sqlalchemy.orm import Session, sessionmaker

from jobs.db import make_engine, make_session_factory
from jobs.dispatch import Dispatcher, make_producer
from jobs.queue import run_scheduler
from jobs.settings import Settings
from jobs.storage import Storage

log = logging.getLogger(__name__)


class WorkerContext:
    def __init__(self, settings: Settings, child_command: list[str] | None = None):
        self.settings = settings
        # The training process' command line (tests substitute a scripted trainer).
        self.child_command = child_command or [sys.executable, "-m", "worker.child"]
        # Set on the worker's warm shutdown (SIGTERM): running jobs checkpoint and requeue.
        self.shutting_down = threading.Event()
        self._pid = os.getpid()

    def _check_pid(self) -> None:
        # Engines and broker connections must not cross a fork.
        if os.getpid() != self._pid:
            self.__dict__.pop("_sessions", None)
            self.__dict__.pop("_dispatcher", None)
            self._pid = os.getpid()

    @cached_property
    def _sessions(self) -> sessionmaker[Session]:
        # This process holds leases: if it freezes inside a transaction, the server frees
        # the job row well before the lease runs out, so the reaper can take the job.
        ttl = self.settings.lease_ttl_s
        return make_session_factory(make_engine(self.settings, idle_in_transaction_s=ttl / 2))

    @property
    def sessions(self) -> sessionmaker[Session]:
        self._check_pid()
        return self._sessions

    @cached_property
    def _dispatcher(self) -> Dispatcher:
        return Dispatcher(make_producer(self.settings))

    @property
    def dispatcher(self) -> Dispatcher:
        self._check_pid()
        return self._dispatcher

    @property
    def storage(self) -> Storage:
        return Storage(self.settings)

    @property
    def owner(self) -> str:
        return f"{socket.gethostname()}:{os.getpid()}"

    def schedule_now(self) -> None:
        """A scheduler pass (after a finish); on failure the scheduler loop catches up."""
        try:
            run_scheduler(self.sessions, self.dispatcher, self.settings)
        except Exception:
            log.warning("jobs.schedule_failed", exc_info=True)
