"""The graph debugger's page, ``GET /debug`` (and ``/debug/...``), and the API docs' assets served locally.

The page is plain HTML, CSS and JavaScript written for botloom (``static/``), served
by botloom itself: no CDN, no build step. It signs in with an API key (kept in the
tab's ``sessionStorage``, sent as ``Authorization: Bearer``) and reads everything
through the ``/api/v1`` debugger routes (:mod:`botloom.server.api.debug`), so it sees
exactly what the key may see.

The API docs (``/schema``, ``/schema/swagger``) load Swagger UI 5 (which reads the
OpenAPI 3.1 schema Litestar writes) from the ``swagger-ui-py`` package, served at
``/schema-assets/swagger-ui/``; Litestar's
other renderers (Redoc, Scalar, Stoplight Elements, RapiDoc) load their scripts from
CDNs and no Python package ships them, so they are left out (:func:`render_plugins`).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path, PurePosixPath
from typing import Annotated

from litestar import Response, get
from litestar.exceptions import NotFoundException
from litestar.openapi.plugins import JsonRenderPlugin, OpenAPIRenderPlugin, SwaggerRenderPlugin, YamlRenderPlugin
from litestar.params import PathParameter
from litestar.types import ControllerRouterHandler

STATIC = Path(__file__).parent / "static"
ASSETS = {"debug.js": "text/javascript", "debug.css": "text/css"}
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
SWAGGER_ASSETS = "/schema-assets/swagger-ui"
SWAGGER_FILES = {
    "swagger-ui-bundle.js": "text/javascript",
    "swagger-ui-standalone-preset.js": "text/javascript",
    "swagger-ui.css": "text/css",
    "favicon-32x32.png": "image/png",
}


@get("/debug", include_in_schema=False, sync_to_thread=False)
def debug_page() -> Response[bytes]:
    """The debugger page."""
    return _page()


@get("/debug/{rest:path}", include_in_schema=False, sync_to_thread=False)
def debug_subpage(
    rest: Annotated[PurePosixPath, PathParameter(description="Anything under /debug")],
) -> Response[bytes]:
    """One of the page's assets (``/debug/assets/NAME``), or the page at a place (``/debug/BOT/CONVERSATION/TURN``)."""
    name = str(rest).strip("/")
    if name.startswith("assets/"):
        asset = name.removeprefix("assets/")
        if asset not in ASSETS:
            raise NotFoundException(f"no asset {asset!r}")
        return Response((STATIC / asset).read_bytes(), media_type=ASSETS[asset], headers=_cache())
    return _page()


def _page() -> Response[bytes]:
    return Response(
        (STATIC / "debug.html").read_bytes(),
        media_type="text/html",
        headers={"Content-Security-Policy": CSP, "Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"},
    )


def _cache() -> dict[str, str]:
    return {"Cache-Control": "public, max-age=300", "X-Content-Type-Options": "nosniff"}


def swagger_ui_folder() -> Path | None:
    """Where the ``swagger-ui-py`` package keeps Swagger UI's files (``None`` if it is not installed).

    Found without importing the package (its ``__init__`` loads web framework adapters botloom does not use).
    """
    spec = importlib.util.find_spec("swagger_ui")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "static"
    return folder if (folder / "swagger-ui-bundle.js").is_file() else None


@get(f"{SWAGGER_ASSETS}/{{name:str}}", include_in_schema=False, sync_to_thread=False)
def swagger_asset(name: Annotated[str, PathParameter(description="A file of Swagger UI")]) -> Response[bytes]:
    """One of Swagger UI's files, from the ``swagger-ui-py`` package."""
    folder = swagger_ui_folder()
    if folder is None or name not in SWAGGER_FILES:
        raise NotFoundException(f"no asset {name!r}")
    return Response((folder / name).read_bytes(), media_type=SWAGGER_FILES[name], headers=_cache())


def render_plugins() -> list[OpenAPIRenderPlugin]:
    """The API docs' renderers, every one with its assets served by botloom.

    ``/schema`` and ``/schema/swagger``: Swagger UI from the ``swagger-ui-py`` package;
    ``/schema/openapi.json`` and ``/schema/openapi.yaml``: the schema itself.
    """
    favicon = f"<link rel='icon' type='image/png' href='{SWAGGER_ASSETS}/favicon-32x32.png'>"
    return [
        SwaggerRenderPlugin(
            path=["/", "/swagger"],
            js_url=f"{SWAGGER_ASSETS}/swagger-ui-bundle.js",
            css_url=f"{SWAGGER_ASSETS}/swagger-ui.css",
            standalone_preset_js_url=f"{SWAGGER_ASSETS}/swagger-ui-standalone-preset.js",
            favicon=favicon,
        ),
        JsonRenderPlugin(favicon=favicon),
        YamlRenderPlugin(favicon=favicon),
    ]


DEBUGGER_HANDLERS: list[ControllerRouterHandler] = [debug_page, debug_subpage, swagger_asset]

__all__ = ["DEBUGGER_HANDLERS", "debug_page", "debug_subpage", "render_plugins", "swagger_asset"]
