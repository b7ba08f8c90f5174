"""The worker's registration: a thread that heartbeats this worker's row per pool, which is
what gives the pools their capacity (`jobs.workers`).

    beats = Heartbeats(ctx, pools=["default"], gpus=1)
    beats.start()        # at worker_ready: registers, then beats every heartbeat_s
    beats.withdraw()     # at the first SIGTERM: the thread removes the rows and ends
    beats.stop()         # at worker_shutdown: the rows are removed

Registering runs a scheduler pass, so jobs waiting for capacity start as soon as a worker
comes up rather than at the scheduler loop's next turn. A worker told to stop withdraws at
once: the job it preempts, and the jobs behind it, must be admitted onto other workers'
GPUs, not onto those of a worker that will claim nothing more.
"""

from __future__ import annotations

import logging
import threading

from jobs.db import transaction
from jobs.ids import utcnow
from jobs.workers import beat, leave
from worker.context import WorkerContext

log = logging.getLogger(__name__)


class Heartbeats:
    def __init__(self, ctx: WorkerContext, *, pools: list[str], gpus: int):
        self.ctx = ctx
        self.pools = pools
        self.gpus = gpus
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.owner = ctx.owner  # fixed now: the rows are this process' own

    def beat_once(self) -> bool:
        """One heartbeat for every pool; True if it registered this worker somewhere."""
        now = utcnow()
        with transaction(self.ctx.sessions) as session:
            first = [
                beat(session, worker_id=self.owner, pool=pool, gpus=self.gpus, now=now)
                for pool in self.pools
            ]
        return any(first)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                if self.beat_once():
                    log.info("worker.registered", extra={"pools": self.pools, "gpus": self.gpus})
                    self.ctx.schedule_now()
            except Exception:
                log.warning("worker.heartbeat_failed", exc_info=True)
            self._stop.wait(self.ctx.settings.heartbeat_s)
        self._leave()

    def _leave(self) -> None:
        try:
            with transaction(self.ctx.sessions) as session:
                leave(session, self.owner)
        except Exception:
            log.warning("worker.leave_failed", exc_info=True)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="lco-heartbeat", daemon=True)
        self._thread.start()

    def withdraw(self) -> None:
        """Stop offering this worker's GPUs. Safe in a signal handler: it only sets an event
        (the main thread may be inside a database call); the heartbeat thread, woken by it,
        removes the rows."""
        self._stop.set()

    def stop(self) -> None:
        self._stop.set()
        self._leave()
