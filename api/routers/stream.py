"""`GET /v1/fine_tuning/jobs/{id}/stream`: a job's live feed as Server-Sent Events.

    curl -N -H "Authorization: Bearer $KEY" http://HOST:PORT/v1/fine_tuning/jobs/$ID/stream
    curl -N -H "Authorization: Bearer $KEY" -H "Last-Event-ID: 12.40.3" .../stream   # resume

Authenticated like every other route, by the Bearer header: browsers read it with `fetch`
and a stream reader, not `EventSource`, which cannot send headers (and an API key in a URL
would end up in access logs and browser history). The stream first sends the job's
history, then every `POLL_S` what was written since, oldest first:

    event: job         the job object (with its queue place while queued), whenever it changed
    event: metrics     {"step", "created_at", "metrics"}: one point per step
    event: event       a job event, in OpenAI's shape (samples excluded)
    event: samples     a step's rollout samples, as `.../samples` lists them
    event: checkpoint  a checkpoint object
    event: end         {"status"}: the job is terminal and everything was sent; then it closes

Every message carries an `id`: the stream's position after it, `M.E.C` (the last metric,
event and checkpoint row sent; 0 for none). A client that reconnects with `Last-Event-ID`
(EventSource does so by itself) gets only the rows written after that position, plus the
job object as it is now (a snapshot, not history); a malformed id replays everything. The
position is three row keys rather than one counter because the three tables grow
independently; row keys only go up, so "after" is well defined.

After a resume the metric steps restart below the last one sent (the store dropped the
later points): a client replaces its points from that step on. A comment line goes out
every `KEEPALIVE_S` (proxies close idle connections). A stream lasts at most `MAX_S`;
clients reconnect with the last id. Framing, keep-alives and disconnect detection are
sse-starlette's; lines end in a bare LF, which every SSE parser accepts.

Open streams are capped per API key and in total, counted per API process (see
`api.stream_slots`): one more answers 429 `too_many_streams`. A stream's slot is freed when
it ends for any reason: the job finished, the client went away, an error.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import APIRouter, Header, Request
from sqlalchemy.exc import SQLAlchemyError
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.concurrency import run_in_threadpool
from starlette.types import Receive, Scope, Send

from api.deps import CurrentKey, ScopeDep, Services, ServicesDep
from api.public_jobs import public_jobs
from api.schemas.jobs import CheckpointPublic, JobEventPublic, MetricPointPublic
from api.schemas.live import StepSamplesPublic
from api.stream_slots import StreamSlot, StreamSlots
from jobs.errors import NotFound
from jobs.events import SAMPLES_EVENT
from jobs.scope import TeamScope
from jobs.states import is_terminal

log = logging.getLogger(__name__)

router = APIRouter(prefix="/v1/fine_tuning/jobs", tags=["fine-tuning"])

POLL_S = 1.0
KEEPALIVE_S = 15.0
MAX_S = 30 * 60.0
BATCH = 500  # rows of each kind per poll; the next poll follows at once when more wait
# sse-starlette's default CRLF is valid SSE, but LF keeps the bytes what the dashboard's and
# the tests' readers have always split on. A ServerSentEvent encodes with its own `sep`.
SEP = "\n"


@dataclass
class _Cursor:
    """What this stream has sent so far (insertion-ordered pks, and the last job object)."""

    job: str | None = None
    metric_pk: int | None = None
    event_pk: int | None = None
    checkpoint_pk: int | None = None

    @property
    def id(self) -> str:
        """The SSE id of a message sent at this position."""
        return f"{self.metric_pk or 0}.{self.event_pk or 0}.{self.checkpoint_pk or 0}"

    @classmethod
    def resume(cls, last_event_id: str | None) -> _Cursor:
        """The position a `Last-Event-ID` names; the start when there is none or it is not
        one of ours (a replay is always correct, only longer)."""
        match = _ID.fullmatch(last_event_id or "")
        if match is None:
            return cls()
        metric, event, checkpoint = (int(g) or None for g in match.groups())
        return cls(metric_pk=metric, event_pk=event, checkpoint_pk=checkpoint)


_ID = re.compile(r"(\d{1,18})\.(\d{1,18})\.(\d{1,18})")


def _sse(event: str, data: str, cur: _Cursor) -> ServerSentEvent:
    """One message, identified by the position after it; `data` is a single line of JSON."""
    return ServerSentEvent(data=data, event=event, id=cur.id, sep=SEP)


def _poll(
    services: Services, team_id: str, job_id: str, cur: _Cursor
) -> tuple[list[ServerSentEvent], bool, bool]:
    """Messages for the rows written since `cur` (which advances), whether more rows wait,
    and whether the stream is done (the job was terminal and nothing is left to send)."""
    with services.read_sessions() as session:
        scope = TeamScope(session, team_id)
        # The job first: rows a terminal job wrote were committed with or before its final
        # status, so the reads below see all of them.
        job = scope.job(job_id)
        out: list[ServerSentEvent] = []
        public = public_jobs(session, services.queue_slots, [job])[0].model_dump_json()
        if public != cur.job:
            cur.job = public
            out.append(_sse("job", public, cur))
        metrics = scope.metrics_since(job, cur.metric_pk, BATCH)
        for m in metrics.items:
            cur.metric_pk = m.pk
            out.append(_sse("metrics", MetricPointPublic.from_row(m).model_dump_json(), cur))
        events = scope.events_since(job, cur.event_pk, BATCH)
        for e in events.items:
            cur.event_pk = e.pk
            if e.type == SAMPLES_EVENT:
                out.append(_sse("samples", StepSamplesPublic.from_row(e).model_dump_json(), cur))
            else:
                out.append(_sse("event", JobEventPublic.from_row(e).model_dump_json(), cur))
        checkpoints = scope.checkpoints_since(job, cur.checkpoint_pk, BATCH)
        for c in checkpoints.items:
            cur.checkpoint_pk = c.pk
            out.append(_sse("checkpoint", CheckpointPublic.from_row(c, job).model_dump_json(), cur))
        more = metrics.has_more or events.has_more or checkpoints.has_more
        done = is_terminal(job.status) and not more
        if done:
            out.append(_sse("end", json.dumps({"status": job.status}), cur))
        return out, more, done


async def _feed(
    services: Services, team_id: str, job_id: str, cur: _Cursor
) -> AsyncIterator[ServerSentEvent]:
    """The stream's messages from `cur` on. A client that leaves cancels this generator
    (sse-starlette watches for the disconnect), so no loop here polls for it."""
    started = time.monotonic()
    while True:
        try:
            messages, more, done = await run_in_threadpool(_poll, services, team_id, job_id, cur)
        except NotFound:
            return  # deleted meanwhile
        except SQLAlchemyError:
            # The database is away: end the stream; the client reconnects later.
            log.warning("stream.db_error", extra={"job_id": job_id}, exc_info=True)
            return
        for message in messages:
            yield message
        if done or time.monotonic() - started >= MAX_S:
            return
        if not more:
            await asyncio.sleep(POLL_S)


async def _held(
    feed: AsyncIterator[ServerSentEvent], slot: StreamSlot
) -> AsyncIterator[ServerSentEvent]:
    """`feed`, holding `slot` until it ends: done, disconnected, failed or cancelled."""
    try:
        async for message in feed:
            yield message
    finally:
        slot.release()


def _keepalive() -> ServerSentEvent:
    return ServerSentEvent(comment="keepalive", sep=SEP)


class _SlotResponse(EventSourceResponse):
    """Frees the slot even when the body never started (the client left before its first
    byte): a generator that never ran has no `finally` to run."""

    def __init__(self, feed: AsyncIterator[ServerSentEvent], slot: StreamSlot):
        super().__init__(
            _held(feed, slot),
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
            ping=KEEPALIVE_S,
            ping_message_factory=_keepalive,
            sep=SEP,
        )
        self.slot = slot

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.slot.release()


@router.get(
    "/{job_id}/stream",
    response_class=EventSourceResponse,
    responses={200: {"content": {"text/event-stream": {}}}},
)
def stream_job(
    request: Request,
    key: CurrentKey,
    scope: ScopeDep,
    services: ServicesDep,
    job_id: str,
    last_event_id: Annotated[str | None, Header()] = None,
) -> EventSourceResponse:
    scope.job(job_id)  # 404 (another team's job too) before the stream starts
    scope.session.rollback()  # each poll reads in its own short session
    slots: StreamSlots = request.app.state.stream_slots
    slot = slots.acquire(key.id)  # 429 too_many_streams when a cap is reached
    cur = _Cursor.resume(last_event_id)
    return _SlotResponse(_feed(services, scope.team_id, job_id, cur), slot)
