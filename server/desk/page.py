"""``GET /desk``: the agent desk, a page of our own HTML, CSS and JavaScript (no CDN, no build step).

The page signs an agent in (``POST /api/v1/agents/sign-in``), keeps the token in
the tab's ``sessionStorage``, calls the desk's JSON API with it and follows the
tenant's events on ``WS /api/v1/desk/ws`` (the token in the first frame).
"""

from __future__ import annotations

from importlib import resources

from litestar import Response, get
from litestar.exceptions import NotFoundException
from litestar.params import FromPath

STATIC = resources.files("botloom.server.desk") / "static"
ASSETS = {"desk.js": "text/javascript; charset=utf-8", "desk.css": "text/css; charset=utf-8"}
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self' ws: wss:; img-src 'self'; "
        "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}


@get("/desk", include_in_schema=False, sync_to_thread=False)
def desk_page() -> Response[bytes]:
    """The agent desk page."""
    body = (STATIC / "desk.html").read_bytes()
    headers = {**SECURITY_HEADERS, "Cache-Control": "no-store"}
    return Response(body, media_type="text/html; charset=utf-8", headers=headers)


@get("/desk/assets/{name:str}", include_in_schema=False, sync_to_thread=False)
def desk_asset(name: FromPath[str]) -> Response[bytes]:
    """The page's script and style sheet (only those two names)."""
    media_type = ASSETS.get(name)
    if media_type is None:
        raise NotFoundException("no such asset")
    body = (STATIC / name).read_bytes()
    return Response(body, media_type=media_type, headers={**SECURITY_HEADERS, "Cache-Control": "no-cache"})


PAGE_HANDLERS = [desk_page, desk_asset]

__all__ = ["PAGE_HANDLERS", "desk_asset", "desk_page"]
