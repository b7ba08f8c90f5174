"""`GET /metrics`: Prometheus text exposition, unauthenticated like the probes (scrape it
on the internal network; see docs/operating.md for the metrics and api.metrics for how they
are read)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.concurrency import run_in_threadpool

from api.metrics import MetricsRegistry

router = APIRouter(tags=["health"])


@router.get("/metrics", response_class=Response)
async def metrics(request: Request) -> Response:
    registry: MetricsRegistry = request.app.state.metrics
    # The service metrics query the database: off the event loop.
    body = await run_in_threadpool(registry.exposition)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
