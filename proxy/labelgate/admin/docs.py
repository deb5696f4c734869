"""API docs (Swagger UI and ReDoc) that cannot reach the inbox: ``/api-docs/``, off by default.

The risk: a docs page that loads third-party scripts (a CDN) runs them in the inbox's origin,
where they can read the inbox's pages (its CSRF token) and vote. So:

- **Local, pinned assets.** Swagger UI and ReDoc come from the ``fastapi-offline`` package
  (pinned), and each file must match the SHA-384 digest pinned below, or the docs are not
  served at all (503). The pages carry the same digests as Subresource Integrity, so the
  browser refuses a changed file too. No inline script: the start-up code is served as a
  file with its own digest.
- **A strict CSP, sandboxed.** ``script-src 'self'``, no ``connect-src`` beyond this server,
  no frames, no forms, ``frame-ancestors 'none'``, and ``sandbox allow-scripts``: the page
  runs in an opaque origin, so even a script that got onto it cannot read the inbox's cookies
  (``document.cookie`` throws), cannot read an inbox page (a fetch is cross-origin, with no
  CORS and no SameSite=Strict cookie) and cannot open a window. Only the docs' own files and
  the schema (public) are served with ``Access-Control-Allow-Origin: *`` for it.
- **A path of its own.** ``/api-docs/``, outside the inbox cookie's ``Path=/inbox`` (plain
  HTTP); with HTTPS the ``__Host-`` cookie has ``Path=/``, and the sandbox above is what
  keeps it out of reach.
- **Off unless asked for**: ``admin.api_docs: true``. The schema itself stays at
  ``/api/v1/openapi.json``.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.util
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response

from labelgate.logs import get_logger

log = get_logger(__name__)
PREFIX = "/api-docs"
ASSETS_PACKAGE = "fastapi_offline"
# name -> (media type, pinned SHA-384 digest as SRI); fastapi-offline 1.7.7 (Swagger UI 5.32, ReDoc 2).
PINNED: dict[str, tuple[str, str]] = {
    "swagger-ui-bundle.js": (
        "text/javascript",
        "sha384-EYdOaiRwn44zNjrw+Tfs06qYz9BGQVo2f4/pLY5i7VorbjnZNhdplAbTBk8FXHUJ",
    ),
    "swagger-ui.css": ("text/css", "sha384-9Q2fpS+xeS4ffJy6CagnwoUl+4ldAYhOs9pgZuEKxypVModhmZFzeMlvVsAjf7uT"),
    "redoc.standalone.js": (
        "text/javascript",
        "sha384-xiEssMQFSpSfLbzRZCGfxxIM5QDb2DTrU6vyoZdp2sV1L6pmOMy6MpTtUoLbpC96",
    ),
    "favicon.png": ("image/png", "sha384-34E7XQJINNHgPI+ITGp0RPZ8ouSp8VBQU/4rEb2Rkm05lBNlHfsF4+emuCo/w2/Q"),
}
SWAGGER_INIT = f""""use strict";
window.ui = SwaggerUIBundle({{
  url: "{PREFIX}/openapi.json",
  dom_id: "#swagger-ui",
  deepLinking: false,
  supportedSubmitMethods: [],
  validatorUrl: null,
  presets: [SwaggerUIBundle.presets.apis],
  layout: "BaseLayout"
}});
""".encode()
REDOC_INIT = f""""use strict";
Redoc.init("{PREFIX}/openapi.json", {{disableSearch: true}}, document.getElementById("redoc"));
""".encode()
DOCS_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; font-src 'self' data:; connect-src 'self'; "
    "frame-src 'none'; worker-src 'none'; object-src 'none'; frame-ancestors 'none'; "
    "base-uri 'none'; form-action 'none'; sandbox allow-scripts"
)
PAGE_HEADERS = {
    "Content-Security-Policy": DOCS_CSP,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "Cross-Origin-Opener-Policy": "same-origin-allow-popups",
}
ASSET_HEADERS = {
    # The page is sandboxed (an opaque origin): its scripts, with SRI, are CORS requests.
    "Access-Control-Allow-Origin": "*",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'; sandbox",
    "Cache-Control": "public, max-age=3600",
}


def sri(data: bytes) -> str:
    return "sha384-" + base64.b64encode(hashlib.sha384(data).digest()).decode("ascii")


def _assets_dir() -> Path | None:
    spec = importlib.util.find_spec(ASSETS_PACKAGE)
    if spec is None or spec.origin is None:
        return None
    return Path(spec.origin).parent / "static"


def load_assets(directory: Path | None = None) -> tuple[dict[str, tuple[str, bytes]], list[str]]:
    """The pinned assets (name -> (media type, bytes)) and the problems found; any problem and
    the docs stay off."""
    folder = directory or _assets_dir()
    if folder is None:
        return {}, [f"the {ASSETS_PACKAGE} package (the docs' pinned assets) is not installed"]
    assets: dict[str, tuple[str, bytes]] = {}
    problems = []
    for name, (media_type, digest) in PINNED.items():
        try:
            data = (folder / name).read_bytes()
        except OSError as error:
            problems.append(f"{name}: {error.strerror}")
            continue
        if sri(data) != digest:
            problems.append(f"{name} does not match its pinned digest")
            continue
        assets[name] = (media_type, data)
    assets["swagger-init.js"] = ("text/javascript", SWAGGER_INIT)
    assets["redoc-init.js"] = ("text/javascript", REDOC_INIT)
    return assets, problems


def _script(name: str, data: bytes) -> str:
    return f'<script src="{PREFIX}/assets/{name}" integrity="{sri(data)}" crossorigin="anonymous"></script>'


def _page(title: str, head: str, body: str) -> str:
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta name="referrer" content="no-referrer"><title>{title}</title>{head}</head>'
        f"<body>{body}</body></html>\n"
    )


def mount_docs(app: FastAPI, title: str, directory: Path | None = None) -> list[str]:
    """Serve the docs under ``PREFIX``; returns the problems (docs answer 503 when any)."""
    assets, problems = load_assets(directory)
    if problems:
        log.error("api docs are off: their pinned assets do not check out", problems=problems)

    def unavailable() -> Response:
        return JSONResponse(
            {"title": "api docs unavailable", "status": 503, "reason": "DOCS_ASSETS_UNPINNED"},
            status_code=503,
            headers=PAGE_HEADERS,
        )

    @app.get(PREFIX, include_in_schema=False)
    @app.get(f"{PREFIX}/", include_in_schema=False)
    async def swagger() -> Response:
        if problems:
            return unavailable()
        css = assets["swagger-ui.css"][1]
        head = (
            f'<link rel="stylesheet" href="{PREFIX}/assets/swagger-ui.css" integrity="{sri(css)}" '
            'crossorigin="anonymous">'
        )
        body = (
            '<div id="swagger-ui"></div>'
            + _script("swagger-ui-bundle.js", assets["swagger-ui-bundle.js"][1])
            + _script("swagger-init.js", SWAGGER_INIT)
        )
        return HTMLResponse(_page(f"{title}: API", head, body), headers=PAGE_HEADERS)

    @app.get(f"{PREFIX}/redoc", include_in_schema=False)
    async def redoc() -> Response:
        if problems:
            return unavailable()
        body = (
            '<div id="redoc"></div>'
            + _script("redoc.standalone.js", assets["redoc.standalone.js"][1])
            + _script("redoc-init.js", REDOC_INIT)
        )
        return HTMLResponse(_page(f"{title}: API", "", body), headers=PAGE_HEADERS)

    @app.get(f"{PREFIX}/openapi.json", include_in_schema=False)
    async def schema(request: Request) -> Response:
        return JSONResponse(request.app.openapi(), headers=ASSET_HEADERS)

    @app.get(f"{PREFIX}/assets/{{name}}", include_in_schema=False)
    async def asset(name: str) -> Response:
        found: tuple[str, Any] | None = assets.get(name)
        if found is None:
            return JSONResponse({"title": "not found", "status": 404}, status_code=404)
        media_type, data = found
        return Response(data, media_type=media_type, headers=ASSET_HEADERS)

    return problems
