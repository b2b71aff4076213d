"""The first-party web app, served at `GET /`: static ES modules, no build step.

The page is `static/index.html`; its modules, styles and vendored libraries are under
`/app/`. Everything is same-origin, so the app's Content-Security-Policy allows only `'self'`
(plus this host's WebSocket, which older browsers do not count as `'self'`).
Source and the vendoring script: `web/` (see its README section).
"""

from __future__ import annotations

import mimetypes
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, JSONResponse, Response

from chatee.errors import NotFound

router = APIRouter(include_in_schema=False)

STATIC = (Path(__file__).parent / "static").resolve()
TYPES = {".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml"}


def csp(request: Request) -> str:
    host = request.headers.get("host", "")
    sockets = f" ws://{host} wss://{host}" if host.isascii() and " " not in host else ""
    return (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        f"connect-src 'self'{sockets}; base-uri 'none'; form-action 'self'; "
        "frame-ancestors 'none'"
    )


def _file(request: Request, path: Path, cache: str) -> Response:
    media = TYPES.get(path.suffix) or mimetypes.guess_type(path.name)[0] or "text/plain"
    headers = {"Content-Security-Policy": csp(request), "Cache-Control": cache}
    return FileResponse(path, media_type=media, headers=headers)


@router.get("/")
async def index(request: Request) -> Response:
    # no-cache: a new release's index (and so its module URLs) is picked up at once
    return _file(request, STATIC / "index.html", "no-cache")


@router.get("/app/config.json")
async def config(request: Request) -> Response:
    """What the app cannot know by itself: where the Temporal UI is, for the workflow links."""
    settings = request.app.state.services.settings
    host = request.url.hostname or "127.0.0.1"
    ui = settings.temporal_ui_url or f"http://{host}:{settings.dev.temporal_ui_port}"
    body = {"temporal_ui": ui.rstrip("/"), "temporal_namespace": settings.temporal_namespace}
    return JSONResponse(body, headers={"Content-Security-Policy": csp(request)})


@router.get("/app/{name:path}")
async def asset(name: str, request: Request) -> Response:
    path = (STATIC / name).resolve()
    if not path.is_relative_to(STATIC) or not path.is_file() or path.name == "index.html":
        raise NotFound("no such file")
    return _file(request, path, "no-cache")
