"""The dashboard at /ui and Swagger UI at /docs, both from files in this package: nothing is
fetched from the internet, so both render on a machine without one.

Only static files are served here, without a key: every piece of data the dashboard shows comes
from /v1, which the page calls with the operator's bearer key (README "Dashboard").
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles

UI_DIR = Path(__file__).parent / "ui"
# swagger-ui-dist from the npm registry; version and licence in its VENDORED.md.
SWAGGER_DIR = Path(__file__).parent / "static" / "swagger-ui"

UI_PATH = "/ui"
UI_ASSETS = "/ui/assets"
DOCS_PATH = "/docs"
DOCS_ASSETS = "/docs/assets"

# What a deny-by-default auth must let through without a key: static files only, no data. (/docs
# also reads the OpenAPI document, /openapi.json.)
PUBLIC_PATHS = frozenset({UI_PATH, UI_PATH + "/", DOCS_PATH})
PUBLIC_PREFIXES = (UI_ASSETS + "/", DOCS_ASSETS + "/")


def is_public(path: str) -> bool:
    return path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES)


# The page runs only its own script and talks only to its own origin: data it shows (a user's
# text, a model's reply) can never run as script or send the key elsewhere.
_UI_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}

router = APIRouter(include_in_schema=False)


@router.get(UI_PATH)
async def dashboard() -> FileResponse:
    return FileResponse(UI_DIR / "index.html", media_type="text/html", headers=_UI_HEADERS)


@router.get(UI_PATH + "/")
async def dashboard_slash() -> RedirectResponse:
    # The page names its assets by absolute path; one URL keeps bookmarks and history tidy.
    return RedirectResponse(UI_PATH, status_code=308)


@router.get(DOCS_PATH)
async def swagger_ui(request: Request) -> HTMLResponse:
    app: FastAPI = request.app
    return get_swagger_ui_html(
        openapi_url=app.openapi_url or "/openapi.json",
        title=f"{app.title} - Swagger UI",
        swagger_js_url=f"{DOCS_ASSETS}/swagger-ui-bundle.js",
        swagger_css_url=f"{DOCS_ASSETS}/swagger-ui.css",
        swagger_favicon_url=f"{DOCS_ASSETS}/favicon-32x32.png",
        # Swagger UI would otherwise send the spec to validator.swagger.io for its badge.
        swagger_ui_parameters={"validatorUrl": None},
    )


def install_ui(app: FastAPI) -> None:
    """Serve /ui and /docs (create the app with ``docs_url=None, redoc_url=None``)."""
    app.mount(UI_ASSETS, StaticFiles(directory=UI_DIR / "assets"), name="ui-assets")
    app.mount(DOCS_ASSETS, StaticFiles(directory=SWAGGER_DIR), name="docs-assets")
    app.include_router(router)
