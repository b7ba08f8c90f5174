"""The job supervisor: runs one attempt of a claimed job in a child process and is the only
writer of that job's row while it holds the lease.

It relays the child's metrics, events and checkpoints to the DB (each write fenced by the
lease token), heartbeats the lease, passes the user's cancel/pause to the child (which
stops between steps), kills the child if it does not stop within `stop_grace_s`, and
writes the one final state. If the lease is lost, it kills the child and writes nothing
(the refused write is recorded on the job, I7). A run stopped by a pause or a preemption
gives its attempt back: only crashes and failures count against `max_attempts`.

Some failures are the job's own and fail it at once, without the retries a crash gets: a
user error (bad data or config), a run that makes no progress for `step_timeout_s` or has
run `max_job_runtime_s` in all (the supervisor kills it), and a run out of memory (its
`train_memory_limit_mb`, or the OOM killer: `worker.memory`).

A database blip is ridden out: unwritten messages are kept and retried, and the child keeps
training while the lease can still be ours. Once the lease has gone a whole TTL without a
renewal (the database stayed away, or this worker was frozen) it may belong to another
worker, so the child is killed at once, before it can touch the job's files again.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from jobs.db import db_unreachable
from jobs.events import SAMPLES_EVENT, add_event
from jobs.leases import (
    Lease,
    LeaseLost,
    fenced,
    heartbeat,
    leased_job,
    record_checkpoint,
    record_metrics,
    record_phase,
    record_refused_write,
    requested_action,
)
from jobs.models import Checkpoint, Job
from jobs.states import is_terminal
from worker.context import WorkerContext
from worker.job_info import JobInfo
from worker.memory import oom_kills
from worker.outcome import RunEnd, write_outcome
from worker.protocol import decode
from worker.ranks import rank_env, training_ranks

log = logging.getLogger(__name__)

_KILL_WAIT_S = 10.0
_BATCH = 200


class Supervisor:
    def __init__(self, ctx: WorkerContext, lease: Lease, info: JobInfo):
        self.ctx = ctx
        self.settings = ctx.settings
        self.lease = lease
        self.info = info
        self.inbox: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self.result: dict[str, Any] | None = None
        self.error: dict[str, Any] | None = None
        self.stop_sent: str | None = None
        # Child messages not yet written (kept across database errors, in order).
        self.pending: list[dict[str, Any]] = []
        # When the lease was last known renewed (the claim has just happened); a renewal
        # counts from before its request was sent, so this never runs ahead of the DB's.
        self.renewed_at = time.monotonic()
        self.unrenewed_at: float | None = None  # when the child was killed for it
        self.db_down = False
        # The run's limits (`_over_limit`): progress is a step done or a phase entered.
        self.started_at = self.progress_at = time.monotonic()
        # Why the supervisor killed the child and fails the job (error code, message).
        self.fatal: tuple[str, str] | None = None
        self.oom_kills_before = oom_kills()

    # -- child process -------------------------------------------------------------------
    def _start_child(self) -> subprocess.Popen[bytes]:
        out = self.info.output_dir
        (out / "logs").mkdir(parents=True, exist_ok=True)
        ranks = training_ranks(self.settings, self.info.gpus)
        config = {
            "spec": self.info.spec,
            "training_file": str(self.info.training_file),
            "validation_file": str(self.info.validation_file)
            if self.info.validation_file
            else None,
            "output_dir": str(out),
            "model_path": self.info.model_path,
            "device": self.settings.device,
            "memory_limit_mb": self.settings.train_memory_limit_mb,
            "ranks": ranks,
            # Bound to every log line the training process writes (jobs.logs).
            "log_context": {
                "job_id": self.lease.job_id,
                "team_id": self.info.team_id,
                "attempt": self.lease.attempt,
                "fencing_token": self.lease.token,
            },
        }
        config_path = out / f"run-attempt-{self.lease.attempt}.json"
        config_path.write_text(json.dumps(config, indent=2))
        ev_r, ev_w = os.pipe()
        ctl_r, ctl_w = os.pipe()
        log_file = (out / "logs" / f"attempt-{self.lease.attempt}.log").open("ab")
        try:
            child = subprocess.Popen(
                [
                    *self.ctx.child_command,
                    "--config",
                    str(config_path),
                    "--events-fd",
                    str(ev_w),
                    "--control-fd",
                    str(ctl_r),
                ],
                pass_fds=(ev_w, ctl_r),
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                cwd=str(Path(__file__).resolve().parent.parent),
                start_new_session=True,  # its own process group: killed as a whole
                env=rank_env(self.settings, ranks),
            )
        finally:
            os.close(ev_w)
            os.close(ctl_r)
            log_file.close()
        self.control = os.fdopen(ctl_w, "w", buffering=1)
        threading.Thread(target=self._read_events, args=(ev_r,), daemon=True).start()
        return child

    def _read_events(self, fd: int) -> None:
        with os.fdopen(fd, "r") as events:
            for line in events:
                message = decode(line)
                if message is not None:
                    self.inbox.put(message)
        self.inbox.put(None)

    def _send_stop(self, word: str) -> None:
        self.stop_sent = word
        log.info("job.stop_sent", extra={"job_id": self.lease.job_id, "reason": word})
        try:
            self.control.write(word + "\n")
            self.control.flush()
        except (BrokenPipeError, ValueError):
            pass

    @staticmethod
    def _kill(child: subprocess.Popen[bytes]) -> None:
        if child.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.pid, signal.SIGKILL)
        child.wait(timeout=_KILL_WAIT_S)

    # -- relaying --------------------------------------------------------------------------
    def _relay(self, batch: list[dict[str, Any]]) -> None:
        """Write a batch of child messages in one fenced transaction."""
        with fenced(self.ctx.sessions, self.lease) as session:
            for message in batch:
                kind = message.get("t")
                if kind == "metrics":
                    record_metrics(
                        session, self.lease, int(message["step"]), message.get("metrics") or {}
                    )
                elif kind == "event":
                    self._note_total_steps(session, message.get("data"))
                    add_event(
                        session,
                        self.lease.job_id,
                        str(message.get("message", ""))[:4000],
                        level=str(message.get("level", "info")),
                        data=message.get("data"),
                    )
                elif kind == "phase":
                    record_phase(
                        session,
                        self.lease,
                        str(message.get("phase", ""))[:32],
                        str(message.get("message", ""))[:500],
                    )
                elif kind == "samples":
                    step = int(message["step"])
                    add_event(
                        session,
                        self.lease.job_id,
                        f"Samples at step {step}",
                        type=SAMPLES_EVENT,
                        data={"step": step, "samples": message.get("samples") or []},
                    )
                elif kind == "checkpoint":
                    self._record_checkpoint(
                        session,
                        Path(message["path"]),
                        int(message["step"]),
                        message.get("metrics") or {},
                    )
                elif kind == "result":
                    self.result = message
                elif kind == "error":
                    self.error = message

    def _note_total_steps(self, session: Session, data: Any) -> None:
        """The run announces its resolved config (with `total_steps`) in an event; the job's
        progress uses it before the first metric arrives."""
        if not isinstance(data, dict):
            return
        config = data.get("config")
        total = (config if isinstance(config, dict) else data).get("total_steps")
        if isinstance(total, int) and total > 0:
            session.execute(
                update(Job).where(Job.id == self.lease.job_id).values(total_steps=total)
            )

    def _record_checkpoint(
        self, session: Session, path: Path, step: int, metrics: dict[str, Any]
    ) -> Checkpoint:
        rel = self.ctx.storage.relative_to_job(self.info.team_id, self.info.job_id, path)
        return record_checkpoint(
            session,
            self.lease,
            team_id=self.info.team_id,
            step=step,
            rel_path=rel,
            metrics=metrics,
            model_name=self.info.model_name,
        )

    # -- the loop --------------------------------------------------------------------------
    def run(self) -> None:
        child = self._start_child()
        log.info("job.child_started", extra={"job_id": self.lease.job_id, "pid": child.pid})
        next_beat = next_poll = 0.0
        stop_deadline: float | None = None
        done_reading = False
        try:
            while True:
                done_reading = self._collect() or done_reading
                now = time.monotonic()
                if child.poll() is None and now - self.renewed_at > self.lease.ttl_s:
                    log.warning("job.lease_unrenewed", extra={"job_id": self.lease.job_id})
                    self.unrenewed_at = now
                    self._kill(child)
                try:
                    while self.pending:
                        self._relay(self.pending[:_BATCH])
                        del self.pending[:_BATCH]
                    if now >= next_poll:
                        next_poll = now + self.settings.poll_s
                        if now >= next_beat:
                            sent = time.monotonic()
                            action = heartbeat(self.ctx.sessions, self.lease)
                            self.renewed_at = sent
                            next_beat = now + self.settings.heartbeat_s
                        else:
                            action = requested_action(self.ctx.sessions, self.lease.job_id)
                        if action is None and self.ctx.shutting_down.is_set():
                            action = "preempt"
                        if action and self.stop_sent is None:
                            self._send_stop(action)
                            stop_deadline = now + self.settings.stop_grace_s
                    self._db_back()
                except DBAPIError as exc:
                    if not db_unreachable(exc):
                        raise
                    self._db_gone(exc)
                    if self.unrenewed_at is not None and now - self.unrenewed_at > self.lease.ttl_s:
                        # Still no database: nothing more to learn or write; the reaper
                        # requeues the job once it can.
                        log.warning("job.abandoned", extra={"job_id": self.lease.job_id})
                        return
                if self.stop_sent is None and self.fatal is None and child.poll() is None:
                    self.fatal = self._over_limit(now)
                    if self.fatal is not None:
                        log.warning(
                            "job.limit_exceeded",
                            extra={"job_id": self.lease.job_id, "code": self.fatal[0]},
                        )
                        self._kill(child)
                if stop_deadline is not None and now > stop_deadline and child.poll() is None:
                    log.warning("job.child_killed", extra={"job_id": self.lease.job_id})
                    self._kill(child)
                if done_reading and self.inbox.empty() and not self.pending:
                    break
            child.wait(timeout=_KILL_WAIT_S)
        except LeaseLost:
            log.warning("job.lease_lost", extra={"job_id": self.lease.job_id})
            self._kill(child)
            self._count_refused_write()
            return
        except BaseException:
            self._kill(child)
            raise
        finally:
            self.control.close()
            if child.poll() is None:
                self._kill(child)
        self._finish(child.returncode)

    def _over_limit(self, now: float) -> tuple[str, str] | None:
        """(code, message) once the run broke a limit that makes it the job's fault: no
        progress for `step_timeout_s`, or `max_job_runtime_s` used up (earlier attempts
        included)."""
        step_timeout = self.settings.step_timeout_s
        if now - self.progress_at > step_timeout:
            return "step_timeout", (
                f"no training step completed for {step_timeout:g}s (step_timeout_s), so the "
                "training process was stopped"
            )
        limit = self.settings.max_job_runtime_s
        if self.info.earlier_run_s + (now - self.started_at) > limit:
            return "max_runtime_exceeded", (
                f"the job ran for more than {limit:g}s in all (max_job_runtime_s), so the "
                "training process was stopped"
            )
        return None

    def _collect(self) -> bool:
        """Move what the child sent into `pending` (waiting up to `poll_s` for the first
        message, unless a retry is due); True once the child closed its end."""
        wait = self.settings.poll_s if self.db_down or not self.pending else 0.0
        try:
            item = self.inbox.get(timeout=wait) if wait else self.inbox.get_nowait()
            while True:
                if item is None:
                    return True
                if item.get("t") in ("metrics", "phase"):
                    self.progress_at = time.monotonic()
                self.pending.append(item)
                item = self.inbox.get_nowait()
        except queue.Empty:
            return False

    def _db_gone(self, exc: DBAPIError) -> None:
        if not self.db_down:
            log.warning(
                "job.db_unreachable", extra={"job_id": self.lease.job_id, "error": str(exc)[:200]}
            )
        self.db_down = True

    def _db_back(self) -> None:
        if self.db_down:
            log.info("job.db_reachable", extra={"job_id": self.lease.job_id})
        self.db_down = False

    def _count_refused_write(self) -> None:
        with contextlib.suppress(DBAPIError):
            record_refused_write(self.ctx.sessions, self.lease)

    # -- the one final write ---------------------------------------------------------------
    def _finish(self, returncode: int | None) -> None:
        """Write the final state, retrying through a database blip for as long as the lease
        can still be ours; past that the reaper requeues the job."""
        while True:
            try:
                with fenced(self.ctx.sessions, self.lease) as session:
                    self._finish_in(session, returncode)
                    status = session.scalar(select(Job.status).where(Job.id == self.lease.job_id))
                break
            except LeaseLost:
                log.warning("job.lease_lost_at_finish", extra={"job_id": self.lease.job_id})
                self._count_refused_write()
                return
            except DBAPIError as exc:
                if not db_unreachable(exc):
                    raise
                self._db_gone(exc)
                if time.monotonic() - self.renewed_at > self.lease.ttl_s:
                    log.warning("job.abandoned", extra={"job_id": self.lease.job_id})
                    return
                time.sleep(self.settings.poll_s)
        if status is not None and is_terminal(status):
            # Nobody can own the job any more: drop what an interrupted save left (I6).
            from lco_core.checkpoint import prune_temp_dirs

            prune_temp_dirs(self.info.output_dir / "checkpoints")
        # Its GPUs are free (and a requeued job waits again): admit the next jobs now.
        self.ctx.schedule_now()

    def _finish_in(self, session: Session, returncode: int | None) -> None:
        """The one final move (`worker.outcome.write_outcome`), from how the run ended."""
        oom_killed = (
            returncode == -signal.SIGKILL
            and self.unrenewed_at is None
            and oom_kills() > self.oom_kills_before
        )
        end = RunEnd(
            returncode=returncode,
            result=self.result,
            error=self.error,
            stop_sent=self.stop_sent,
            fatal=self.fatal,
            lease_unrenewed=self.unrenewed_at is not None,
            oom_killed=oom_killed,
        )
        write_outcome(
            session,
            leased_job(session, self.lease),
            end,
            lease=self.lease,
            settings=self.settings,
            model_name=self.info.model_name,
            record_checkpoint=self._record_checkpoint,
        )
