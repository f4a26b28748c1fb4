"""The web dashboard: ``/`` answers its page, ``/static/`` its scripts and styles.

The files ship in the package (``static/``), so the dashboard works without internet. They
are public: what they show comes from the API, which asks each call for its identity. The
page's Content-Security-Policy lets it load and call nothing but this server.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

STATIC = Path(__file__).with_name("static")

#: Only this origin's scripts, styles and API; no framing (clickjacking), no plugins.
_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; "
    "form-action 'self'"
)
_HEADERS = {
    "Content-Security-Policy": _POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def install(api: FastAPI) -> None:
    """Serve the dashboard at ``/`` of ``api`` (left out of the OpenAPI schema)."""

    @api.get("/", include_in_schema=False)
    async def dashboard() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html", headers=_HEADERS)

    api.mount("/static", StaticFiles(directory=STATIC), name="static")
