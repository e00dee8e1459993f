"""Serving the web pages: each page is one HTML file and its assets, all from this package (no
CDN, nothing fetched at run time). The pages call the public API like any client."""

from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.responses import FileResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles

HERE = Path(__file__).parent
router = APIRouter(include_in_schema=False)

# The pages load only their own files and talk only to this origin.
_PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; "
    "style-src 'self' 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'; "
    "form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


@router.get("/console")
def console_redirect() -> RedirectResponse:
    return RedirectResponse("/console/", status_code=308)


@router.get("/console/")
def console() -> FileResponse:
    return FileResponse(HERE / "console" / "index.html", headers=_PAGE_HEADERS)


@router.get("/register")
def register() -> FileResponse:
    return FileResponse(HERE / "register" / "index.html", headers=_PAGE_HEADERS)


def mount_assets(app: FastAPI) -> None:
    """/console/assets and /register/assets: the pages' scripts, styles and vendored libraries."""
    for page in ("console", "register"):
        assets = HERE / page / "assets"
        app.mount(f"/{page}/assets", StaticFiles(directory=assets), name=f"{page}-assets")
