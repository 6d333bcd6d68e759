"""/docs (Swagger UI), /redoc and /asyncapi served with their scripts and styles from the
service itself: the defaults load them from public CDNs, which a government network
cannot reach, and the pages stay blank.

Swagger UI and ReDoc come from the ``fastapi-offline`` package; the AsyncAPI viewer is
vendored (shared/docs_assets/asyncapi/README.md names its source and version).
FastStream's own /asyncapi routes are not used: besides the CDN links they add
``POST /asyncapi/try``, which publishes any message a caller sends straight to the
real broker, bypassing every service's outbox and rules.
"""

from __future__ import annotations

import functools
import gzip
import json
import re
from pathlib import Path
from typing import Any

import fastapi_offline
from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse, Response
from fastapi.staticfiles import StaticFiles
from faststream.kafka.fastapi import KafkaRouter
from faststream.specification.asyncapi.site import get_asyncapi_html

ASSETS_URL = "/docs-assets"
ASYNCAPI_ASSETS = Path(__file__).parent / "docs_assets" / "asyncapi"
OFFLINE_ASSETS = Path(fastapi_offline.__file__).parent / "static"
ASYNCAPI_COMPONENT_VERSION = "3.1.5"

# FastStream's page links icons on asyncapi.com; the service's own icon replaces them.
_REMOTE_ICON = re.compile(r'\s*<link rel="icon"[^>]*href="https?://[^"]*"[^>]*>')


@functools.cache
def _asyncapi_script() -> bytes:
    return (ASYNCAPI_ASSETS / "index.js.gz").read_bytes()


def install_docs_pages(app: FastAPI, kafka: KafkaRouter) -> None:
    """Mount the assets and add the pages to an app built with docs_url=None,
    redoc_url=None and a KafkaRouter with schema_url=None."""
    app.mount(f"{ASSETS_URL}/offline", StaticFiles(directory=OFFLINE_ASSETS), name="docs-offline")

    # The viewer's 3 MB script is kept gzipped in the repository (0.6 MB) and sent as it
    # is to every client that accepts gzip (every browser); registered before the mount
    # below so that this route, not the static files, answers for it.
    @app.get(f"{ASSETS_URL}/asyncapi/index.js", include_in_schema=False)
    async def asyncapi_script(request: Request) -> Response:
        packed = _asyncapi_script()
        if "gzip" in request.headers.get("accept-encoding", ""):
            headers = {"Content-Encoding": "gzip", "Vary": "Accept-Encoding"}
            return Response(packed, media_type="text/javascript", headers=headers)
        return Response(gzip.decompress(packed), media_type="text/javascript")

    app.mount(
        f"{ASSETS_URL}/asyncapi", StaticFiles(directory=ASYNCAPI_ASSETS), name="docs-asyncapi"
    )
    favicon = f"{ASSETS_URL}/offline/favicon.png"

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_swagger_ui_html(
            openapi_url=f"{root}{app.openapi_url}",
            title=f"{app.title} - Swagger UI",
            swagger_js_url=f"{root}{ASSETS_URL}/offline/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{ASSETS_URL}/offline/swagger-ui.css",
            swagger_favicon_url=f"{root}{favicon}",
            swagger_ui_parameters=app.swagger_ui_parameters,
        )

    @app.get("/redoc", include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_redoc_html(
            openapi_url=f"{root}{app.openapi_url}",
            title=f"{app.title} - ReDoc",
            redoc_js_url=f"{root}{ASSETS_URL}/offline/redoc.standalone.js",
            redoc_favicon_url=f"{root}{favicon}",
            with_google_fonts=False,
        )

    @app.get("/asyncapi", include_in_schema=False)
    async def asyncapi(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        html = get_asyncapi_html(
            kafka.schema.to_specification(),
            asyncapi_js_url=f"{root}{ASSETS_URL}/asyncapi/index.js",
            asyncapi_css_url=f"{root}{ASSETS_URL}/asyncapi/default.min.css",
            try_it_out_path=None,
        )
        html = _REMOTE_ICON.sub("", html).replace(
            "</head>", f'    <link rel="icon" type="image/png" href="{root}{favicon}">\n</head>', 1
        )
        return HTMLResponse(html)

    @app.get("/asyncapi.json", include_in_schema=False)
    async def asyncapi_json() -> Response:
        document: dict[str, Any] = kafka.schema.to_specification().to_jsonable()
        return Response(json.dumps(document, indent=2), media_type="application/json")

    @app.get("/asyncapi.yaml", include_in_schema=False)
    async def asyncapi_yaml() -> Response:
        return Response(kafka.schema.to_specification().to_yaml(), media_type="application/yaml")
