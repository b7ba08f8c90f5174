"""`/dashboard`: the web dashboard, a static single-page app shipped in this package
(`api/dashboard/static/`, no CDN) that signs in with an API key and reads the /v1 API.

The page and its assets are public (they hold no data); every call they make carries the
key as a Bearer header. A strict Content-Security-Policy allows nothing but this origin.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

STATIC = Path(__file__).resolve().parent.parent / "dashboard" / "static"

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}

router = APIRouter(include_in_schema=False)


@router.get("/dashboard")
def dashboard() -> FileResponse:
    return FileResponse(STATIC / "index.html", headers=SECURITY_HEADERS)


def install_dashboard(app: FastAPI) -> None:
    """The page at /dashboard and its assets under /dashboard/static/."""
    app.include_router(router)
    app.mount("/dashboard/static", StaticFiles(directory=STATIC), name="dashboard-static")
