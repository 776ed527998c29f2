"""`textclf serve`'s API explorer at /docs: FastAPI's Swagger UI page, its files served by the service itself.

FastAPI's own /docs loads Swagger UI from a CDN, so on a host without internet it stays blank. Here
the page names the copies that web-assets.lock pins (tasks.lib.reporting.web_assets.swagger_ui),
and where they are not installed /docs says so and how to install them, instead of a blank page.
"""

from __future__ import annotations

import logging
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, PlainTextResponse, Response
from fastapi.staticfiles import StaticFiles

from tasks.lib.reporting.web_assets import MissingWebAssets, swagger_ui

log = logging.getLogger("textclf.serve")

PAGE = "/docs"
FILES = f"{PAGE}/assets"


def add_api_page(app: FastAPI, root: Path | None = None) -> None:
    """Serve the API explorer at /docs from the installed Swagger UI files (`root`: where they are installed)."""
    try:
        folder = swagger_ui(root)
    except MissingWebAssets as exc:
        log.warning("serve: no API page at %s: %s", PAGE, exc)
        missing = f"{exc}. The API document itself is at {app.openapi_url}.\n"

        @app.get(PAGE, include_in_schema=False)
        async def page_missing() -> Response:
            return PlainTextResponse(missing, status_code=404)

        return
    app.mount(FILES, StaticFiles(directory=folder), name="api-page-files")

    @app.get(PAGE, include_in_schema=False)
    async def page(request: Request) -> HTMLResponse:
        prefix = request.scope.get("root_path", "").rstrip("/")  # behind a proxy that strips a path prefix
        return get_swagger_ui_html(
            openapi_url=f"{prefix}{app.openapi_url}",
            title=f"{app.title}: API",
            swagger_js_url=f"{prefix}{FILES}/swagger-ui-bundle.js",
            swagger_css_url=f"{prefix}{FILES}/swagger-ui.css",
            swagger_favicon_url=f"{prefix}{FILES}/favicon-32x32.png",
            # Swagger UI's default sends the document to validator.swagger.io and shows its badge.
            swagger_ui_parameters={"validatorUrl": None},
        )
