"""The owner's web page: one HTML document, one script, one stylesheet (no build step) and the
vendored chart library (uPlot), served from the package. The page holds no data: it signs in with a
token kept in the tab's sessionStorage and reads everything from the API and the live event stream."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from starlette.responses import Response

from tq_services.admin.errors import ApiError

STATIC = Path(__file__).resolve().parent / "static"
_FILES = {
    "admin.js": "text/javascript; charset=utf-8",
    "admin.css": "text/css; charset=utf-8",
    # uPlot 1.6.32 (MIT), vendored so the page charts offline under its CSP: see static/VENDOR.md
    "uplot.min.js": "text/javascript; charset=utf-8",
    "uplot.min.css": "text/css; charset=utf-8",
    "uplot.LICENSE": "text/plain; charset=utf-8",
}
# the page's own script and style only; data goes over fetch to this origin
PAGE_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)

router = APIRouter(include_in_schema=False)


@router.get("/")
async def index() -> Response:
    body = (STATIC / "index.html").read_bytes()
    return Response(
        body, media_type="text/html; charset=utf-8", headers={"Content-Security-Policy": PAGE_CSP}
    )


@router.get("/static/{name}")
async def static(name: str) -> Response:
    media_type = _FILES.get(name)
    if media_type is None:
        raise ApiError(404, f"no static file {name!r}")
    return Response(
        (STATIC / name).read_bytes(),
        media_type=media_type,
        headers={"Content-Security-Policy": PAGE_CSP, "Cache-Control": "no-cache"},
    )


@router.get("/favicon.ico")
async def favicon() -> Response:
    return Response(status_code=204)  # no icon; an answer keeps browsers from logging a 404
