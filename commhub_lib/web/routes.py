"""GET / (the dashboard page), GET /docs (the API page) and GET /assets/<file> (their CSS and JS), with a strict
Content-Security-Policy.

Everything the page needs is served from here (no CDN). The page talks to the REST API and reads the SSE
streams with fetch() and the user's token in the Authorization header: the token never goes into a URL.
Quart's app already owns /static/<path> (its default static route), so the files live under /assets/.
"""

from __future__ import annotations

from pathlib import Path

from quart import Blueprint, Response, send_from_directory

bp = Blueprint("web", __name__)
STATIC_DIR = Path(__file__).with_name("static")

# No inline script or style, nothing from another origin; the page may only call its own origin.
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "font-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    # Files change with every upgrade and are small: revalidate each time rather than serve a stale script.
    "Cache-Control": "no-cache",
}


def _secured(response: Response) -> Response:
    response.headers.pop("Expires", None)  # Cache-Control: no-cache rules
    for key, value in SECURITY_HEADERS.items():
        response.headers[key] = value
    return response


@bp.get("/")
async def index() -> Response:
    """The dashboard page."""
    return _secured(await send_from_directory(STATIC_DIR, "index.html"))


@bp.get("/docs")
async def docs() -> Response:
    """API documentation rendered from /openapi.json, with the dashboard's security headers.

    Its script and style are files under /assets/, so the CSP allows nothing inline."""
    return _secured(await send_from_directory(STATIC_DIR, "docs.html"))


@bp.get("/assets/<path:name>")
async def asset(name: str) -> Response:
    """A file of the dashboard (CSS, JS, icon); 404 for anything else."""
    return _secured(await send_from_directory(STATIC_DIR, name))
