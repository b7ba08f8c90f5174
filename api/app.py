"""The FastAPI app factory: `create_app(settings)` builds engine, sessions and dispatcher.

    uvicorn --factory api.app:create_app_from_env      # settings from LCO_* variables

Nothing is built at import time, and nothing here imports torch. `create_app_from_env`, the
entry point of a deployed API process, also configures JSON logs (jobs.logs); `create_app`
leaves logging to its caller (tests build many apps in one process).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from api.deps import Services
from api.errors import ERROR_RESPONSES, install_error_handlers
from api.guards import JsonTextGuard, RequestGuard
from api.idempotency import Idempotency
from api.limits import BodyLimitByRoute
from api.metrics import HttpMetricsMiddleware, build_registry
from api.openapi import install_openapi, operation_id
from api.ratelimit import Buckets, RateLimit
from api.request_log import RequestLog
from api.routers import (
    admin,
    checkpoints,
    downloads,
    events,
    files,
    graders,
    health,
    jobs,
    metrics,
    models,
    pools,
    samples,
    stream,
    tensorboard,
)
from api.routers.dashboard import install_dashboard
from api.stream_slots import StreamSlots
from jobs.auth import AuthCache
from jobs.db import make_engine, make_session_factory
from jobs.dispatch import Dispatcher, make_producer
from jobs.links import load_link_secret
from jobs.logs import configure_logging
from jobs.queue import QueueSlots
from jobs.settings import Settings
from jobs.storage import Storage


def create_app(settings: Settings) -> FastAPI:
    engine = make_engine(settings)
    read_sessions = make_session_factory(engine, read_only=True)
    services = Services(
        settings=settings,
        sessions=make_session_factory(engine),
        read_sessions=read_sessions,
        storage=Storage(settings),
        dispatcher=Dispatcher(make_producer(settings)),
        auth=AuthCache(read_sessions, settings.auth_cache_s),
        queue_slots=QueueSlots(settings),
        link_secret=load_link_secret(settings),
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        engine.dispose()

    # Swagger UI and ReDoc pages load their scripts from a CDN, which would run with this
    # origin's authority (the dashboard keeps API keys here): off unless `api_docs` is set.
    # Vendoring the assets is not worth it for a convenience page; /openapi.json stays.
    docs = "/docs" if settings.api_docs else None
    redoc = "/redoc" if settings.api_docs else None
    app = FastAPI(
        title="LCO fine-tuning API",
        version="0.1.0",
        lifespan=lifespan,
        docs_url=docs,
        redoc_url=redoc,
        # Stable ids, OpenAI's where it has the operation: generated clients' method names.
        generate_unique_id_function=operation_id,
    )
    app.state.services = services
    app.state.metrics = build_registry(settings, read_sessions)
    install_error_handlers(app)
    for module in (
        files,
        jobs,
        events,
        samples,
        stream,
        checkpoints,
        tensorboard,
        downloads,
        models,
        pools,
        graders,
        admin,
        health,
        metrics,
    ):
        app.include_router(module.router, responses=ERROR_RESPONSES)
    install_dashboard(app)
    install_openapi(app)
    # Outermost last: body limit, then the rate limit, then Idempotency-Key replay.
    app.add_middleware(Idempotency)
    # The rate limit's buckets, also read by `api.deps` to charge a key found in the database.
    app.state.rate_buckets = Buckets(
        per_minute=settings.rate_limit_per_minute, burst=settings.rate_limit_burst
    )
    app.add_middleware(RateLimit, buckets=app.state.rate_buckets, auth=services.auth)
    # Open SSE streams per key and in total, in this process (read by api.routers.stream).
    app.state.stream_slots = StreamSlots(
        per_key=settings.max_streams_per_key, total=settings.max_streams_total
    )
    app.add_middleware(JsonTextGuard)  # inside the body limit: it reads the JSON body
    app.add_middleware(
        BodyLimitByRoute,
        upload_path="/v1/files",
        max_upload=settings.max_upload_bytes,
        max_json=settings.max_json_bytes,
    )
    # Headers too large, NUL in the path, query or headers, before any work.
    app.add_middleware(RequestGuard, max_header_bytes=settings.max_header_bytes)
    # Outermost: every answer, the guards' refusals included, is counted and timed, and
    # carries a request id that its log lines share.
    app.add_middleware(HttpMetricsMiddleware, metrics=app.state.metrics.http)
    app.add_middleware(RequestLog)
    return app


def create_app_from_env() -> FastAPI:
    """For `uvicorn --factory`: settings from the environment, JSON logs on stderr."""
    configure_logging()
    return create_app(Settings())
