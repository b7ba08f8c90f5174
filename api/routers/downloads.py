"""Signed checkpoint download links (see `jobs.links`), for browsers: a plain link cannot
carry the Bearer header, and the key must not go into a URL.

    POST /v1/fine_tuning/jobs/{id}/checkpoints/{ckpt}/download_link   (Bearer key)
      -> {"url": "/v1/downloads/<token>", "expires_at": ...}
    GET  /v1/downloads/<token>   (no key: the token is the credential, for a few minutes)
      -> the checkpoint's tar, streamed
"""

from __future__ import annotations

import time

from fastapi import APIRouter
from fastapi.responses import StreamingResponse

from api.deps import CurrentKey, ScopeDep, ServicesDep, SessionDep
from api.routers.checkpoints import checkpoint_tar
from api.schemas.live import DownloadLinkPublic
from jobs.errors import NotFound
from jobs.links import sign_download, verify_download
from jobs.scope import TeamScope

router = APIRouter(tags=["fine-tuning"])


@router.post(
    "/v1/fine_tuning/jobs/{job_id}/checkpoints/{checkpoint_id}/download_link",
    response_model=DownloadLinkPublic,
)
def create_download_link(
    scope: ScopeDep, services: ServicesDep, key: CurrentKey, job_id: str, checkpoint_id: str
) -> DownloadLinkPublic:
    ckpt = scope.checkpoint(scope.job(job_id), checkpoint_id)
    token, expires_at = sign_download(services.link_secret, key, ckpt.id, now=time.time())
    return DownloadLinkPublic(url=f"/v1/downloads/{token}", expires_at=expires_at)


@router.get("/v1/downloads/{token}")
def download(session: SessionDep, services: ServicesDep, token: str) -> StreamingResponse:
    found = verify_download(services.link_secret, session, token, now=time.time())
    ckpt = None
    if found is not None:
        key, checkpoint_id = found
        scope = TeamScope(session, key.team_id)
        ckpt = scope.checkpoint_by_id(checkpoint_id)
    if found is None or ckpt is None:
        raise NotFound("This download link is invalid or has expired.", code="invalid_link")
    return checkpoint_tar(scope, services, scope.job(ckpt.job_id), ckpt)
