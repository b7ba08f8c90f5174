"""A succeeded job's results file (OpenAI's `result_files`) through the Files API: its file
object and its CSV content, both made on request from the job's step metrics
(`jobs.results`), so `client.files.retrieve(id)` and `client.files.content(id)` work on the
id the job object lists.

The metrics are read a page at a time, each page in its own short read session: a long
job's file streams in bounded memory and holds no transaction open while it is sent.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from fastapi.responses import StreamingResponse

from api.deps import Services
from api.schemas.files import FilePublic
from jobs.ids import epoch
from jobs.models import Job
from jobs.results import (
    RESULTS_FILENAME,
    RESULTS_PURPOSE,
    results_columns,
    results_csv,
    results_file_id,
)
from jobs.scope import TeamScope

_PAGE = 1000  # metric rows per read


def _steps(services: Services, team_id: str, job_id: str) -> Iterator[tuple[int, dict[str, Any]]]:
    """(step, our metrics) of every stored step, in step order."""
    after: int | None = None
    while True:
        with services.read_sessions() as session:
            scope = TeamScope(session, team_id)
            from_step = None if after is None else after + 1
            page = scope.metrics(scope.job(job_id), from_step=from_step, to_step=None, limit=_PAGE)
            rows = [(m.step, dict(m.metrics or {})) for m in page.items]
        yield from rows
        if not page.has_more or not rows:
            return
        after = rows[-1][0]


def _csv(services: Services, team_id: str, job_id: str, validated: bool) -> Iterator[bytes]:
    # Two passes: the columns (every metric name any step has), then the rows.
    columns = results_columns(m for _, m in _steps(services, team_id, job_id))
    yield from results_csv(_steps(services, team_id, job_id), columns, validated=validated)


def result_file(services: Services, scope: TeamScope, job: Job) -> FilePublic:
    """The file object of `job`'s results file (`bytes` counted by making it)."""
    validated = job.validation_file is not None
    size = sum(len(chunk) for chunk in _csv(services, scope.team_id, job.id, validated))
    return FilePublic(
        id=results_file_id(job.id),
        bytes=size,
        created_at=epoch(job.finished_at) or 0,
        filename=RESULTS_FILENAME,
        purpose=RESULTS_PURPOSE,
        status="processed",
    )


def result_file_content(services: Services, scope: TeamScope, job: Job) -> StreamingResponse:
    """The CSV, streamed."""
    job_id, validated = job.id, job.validation_file is not None
    scope.session.rollback()  # end the request's read transaction before the stream
    return StreamingResponse(
        _csv(services, scope.team_id, job_id, validated),
        media_type="text/csv",
        headers={"Content-Disposition": f'attachment; filename="{RESULTS_FILENAME}"'},
    )
