"""`GET /v1/fine_tuning/jobs/{id}/stream`: a job's live feed as Server-Sent Events.

    curl -N -H "Authorization: Bearer $KEY" http://HOST:PORT/v1/fine_tuning/jobs/$ID/stream

Authenticated like every other route, by the Bearer header: browsers read it with `fetch`
and a stream reader, not `EventSource`, which cannot send headers (and an API key in a URL
would end up in access logs and browser history). The stream first replays the job's
history, then every `POLL_S` sends what was written since, oldest first:

    event: job         the job object (with its queue place while queued), whenever it changed
    event: metrics     {"step", "created_at", "metrics"}: one point per step
    event: event       a job event, in OpenAI's shape (samples excluded)
    event: samples     a step's rollout samples, as `.../samples` lists them
    event: checkpoint  a checkpoint object
    event: end         {"status"}: the job is terminal and everything was sent; then it closes

After a resume the metric steps restart below the last one sent (the store dropped the
later points): a client replaces its points from that step on. A comment line goes out
when nothing did for `KEEPALIVE_S` (proxies close idle connections). A stream lasts at
most `MAX_S`; clients reconnect and get the whole history again.

Open streams are capped per API key and in total, counted per API process (see
`api.stream_slots`): one more answers 429 `too_many_streams`. A stream's slot is freed when
it ends for any reason: the job finished, the client went away, an error.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse
from sqlalchemy.exc import SQLAlchemyError
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


def sse(event: str, data: str) -> str:
    """One SSE message; `data` is a single line of JSON."""
    return f"event: {event}\ndata: {data}\n\n"


@dataclass
class _Cursor:
    """What this stream has sent so far (insertion-ordered pks, and the last job object)."""

    job: str | None = None
    metric_pk: int | None = None
    event_pk: int | None = None
    checkpoint_pk: int | None = None


def _poll(
    services: Services, team_id: str, job_id: str, cur: _Cursor
) -> tuple[list[str], bool, bool]:
    """Messages for the rows written since `cur` (which advances), whether more rows wait,
    and whether the stream is done (the job was terminal and nothing is left to send)."""
    with services.read_sessions() as session:
        scope = TeamScope(session, team_id)
        # The job first: rows a terminal job wrote were committed with or before its final
        # status, so the reads below see all of them.
        job = scope.job(job_id)
        out: list[str] = []
        public = public_jobs(session, services.queue_slots, [job])[0].model_dump_json()
        if public != cur.job:
            out.append(sse("job", public))
            cur.job = public
        metrics = scope.metrics_since(job, cur.metric_pk, BATCH)
        for m in metrics.items:
            out.append(sse("metrics", MetricPointPublic.from_row(m).model_dump_json()))
            cur.metric_pk = m.pk
        events = scope.events_since(job, cur.event_pk, BATCH)
        for e in events.items:
            if e.type == SAMPLES_EVENT:
                out.append(sse("samples", StepSamplesPublic.from_row(e).model_dump_json()))
            else:
                out.append(sse("event", JobEventPublic.from_row(e).model_dump_json()))
            cur.event_pk = e.pk
        checkpoints = scope.checkpoints_since(job, cur.checkpoint_pk, BATCH)
        for c in checkpoints.items:
            out.append(sse("checkpoint", CheckpointPublic.from_row(c).model_dump_json()))
            cur.checkpoint_pk = c.pk
        more = metrics.has_more or events.has_more or checkpoints.has_more
        done = is_terminal(job.status) and not more
        if done:
            out.append(sse("end", json.dumps({"status": job.status})))
        return out, more, done


async def _feed(
    request: Request, services: Services, team_id: str, job_id: str
) -> AsyncIterator[str]:
    cur = _Cursor()
    started = last_sent = time.monotonic()
    while not await request.is_disconnected():
        try:
            messages, more, done = await run_in_threadpool(_poll, services, team_id, job_id, cur)
        except NotFound:
            return  # deleted meanwhile
        except SQLAlchemyError:
            # The database is away: end the stream; the client reconnects later.
            log.warning("stream.db_error", extra={"job_id": job_id}, exc_info=True)
            return
        now = time.monotonic()
        if messages:
            last_sent = now
            yield "".join(messages)
        elif now - last_sent >= KEEPALIVE_S:
            last_sent = now
            yield ": keepalive\n\n"
        if done or now - started >= MAX_S:
            return
        if not more:
            await asyncio.sleep(POLL_S)


async def _held(feed: AsyncIterator[str], slot: StreamSlot) -> AsyncIterator[str]:
    """`feed`, holding `slot` until it ends: done, disconnected, failed or cancelled."""
    try:
        async for chunk in feed:
            yield chunk
    finally:
        slot.release()


class _SlotResponse(StreamingResponse):
    """Frees the slot even when the body never started (the client left before its first
    byte): a generator that never ran has no `finally` to run."""

    def __init__(self, feed: AsyncIterator[str], slot: StreamSlot):
        super().__init__(
            _held(feed, slot),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
        self.slot = slot

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.slot.release()


@router.get(
    "/{job_id}/stream",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}}},
)
def stream_job(
    request: Request, key: CurrentKey, scope: ScopeDep, services: ServicesDep, job_id: str
) -> StreamingResponse:
    scope.job(job_id)  # 404 (another team's job too) before the stream starts
    scope.session.rollback()  # each poll reads in its own short session
    slots: StreamSlots = request.app.state.stream_slots
    slot = slots.acquire(key.id)  # 429 too_many_streams when a cap is reached
    return _SlotResponse(_feed(request, services, scope.team_id, job_id), slot)
