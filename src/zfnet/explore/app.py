"""The explorer as a web app (FastAPI): the pages of :mod:`zfnet.explore.pages`, their pictures, uploads.

Routes: ``/``, ``/layer/<layer>``, ``/layer/<layer>/<channel>``, ``/tile/<kind>/<layer>/<channel>/<k>.png``,
``/figures/<name>`` (the run's figure PNGs), ``/static/<name>``, ``POST /api/analyze`` (multipart field
``image``; optional ``layer``, ``channel``), ``/api/analysis/<id>/<name>.png``, ``/api/progress``.

Safe by default:

- only what the routes name is served: tiles by layer and number, figures by a name listed in the
  figures folder, the package's own static files; any other path, ``..`` included, is a 404;
- an upload over ``max_bytes`` is refused with 413 before it is read whole (its declared length, or
  the bytes as they arrive); its pixels are capped by ``max_pixels`` while decoding (decompression
  bombs refused); a file that is not an image is a 400 with a one-line reason;
- an unknown layer or channel is a 404 page naming the valid ones;
- an exception in a request is answered with a 500 naming it in one line (uvicorn logs its
  traceback); the server keeps serving.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections import OrderedDict

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.exceptions import HTTPException

from zfnet.explore.analyze import UPLOAD_MAX_BYTES, UPLOAD_MAX_PIXELS
from zfnet.explore.pages import STATIC, Links, building_page, channel_page, error_page, layer_page, overview_page, tile_png
from zfnet.explore.source import Explorer, NotFound

log = logging.getLogger(__name__)
ANALYSES_KEPT = 32  # the pictures of the most recent analyses are kept in memory for their URLs
LIVE = Links()


class TooLarge(Exception):
    """An upload's body is over the byte limit."""


class BodyLimit:
    """ASGI middleware: a request body over ``limit`` bytes raises :class:`TooLarge` while it is read
    (so no more of it is read), and a declared ``Content-Length`` over it is answered 413 at once."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "POST":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.limit:
            return await JSONResponse({"error": _too_large(self.limit)}, 413)(scope, receive, send)
        seen = 0

        async def limited():
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise TooLarge()
            return message

        await self.app(scope, limited, send)


def _too_large(limit: int) -> str:
    return f"upload too large: over {limit / 2**20:.0f} MiB (zfnet explore --max-upload-mb raises the limit)"


def _form_int(value, name: str) -> int | None:
    text = str(value or "").strip()
    if not text:
        return None
    if not text.isdigit():
        raise ValueError(f"{name} must be a whole number >= 0, got {text!r}")
    return int(text)


def _picture(data: bytes) -> Response:
    return Response(data, media_type="image/png", headers={"Cache-Control": "max-age=3600"})


def create_app(explorer: Explorer, max_bytes: int = UPLOAD_MAX_BYTES, max_pixels: int = UPLOAD_MAX_PIXELS,
               patch: int = 16, stride: int = 8):
    """The app serving ``explorer`` (module docstring), as an ASGI app; ``patch``, ``stride``: the occluder of uploads."""
    app = FastAPI(title="zfnet explore", docs_url=None, redoc_url=None, openapi_url=None)
    _errors(app, explorer, max_bytes)
    _pages(app, explorer)
    _api(app, explorer, max_pixels, patch, stride)
    return BodyLimit(app, max_bytes)


def _errors(app: FastAPI, explorer: Explorer, max_bytes: int) -> None:
    """What a failed request is answered with: 404 naming what exists, 413, or a one-line 500."""

    @app.exception_handler(NotFound)
    async def not_found(request: Request, exc: NotFound):
        if request.url.path.startswith("/api/"):
            return JSONResponse({"error": exc.message, "valid": exc.valid}, 404)
        return HTMLResponse(error_page(404, exc.message, exc.valid, LIVE, explorer if explorer.ready else None), 404)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException):
        if exc.status_code == 404:
            return await not_found(request, NotFound(f"no page {request.url.path!r}", ["/", "/layer/<layer>",
                                                                                        "/layer/<layer>/<channel>"]))
        return JSONResponse({"error": str(exc.detail)}, exc.status_code)

    @app.exception_handler(TooLarge)
    async def too_large(request: Request, exc: TooLarge):
        return JSONResponse({"error": _too_large(max_bytes)}, 413)

    @app.exception_handler(Exception)
    async def crashed(request: Request, exc: Exception):
        from zfnet.errors import first_line

        message = f"{type(exc).__name__}: {first_line(exc)}"
        log.error("explore: %s %s failed: %s (the server goes on)", request.method, request.url.path, message)
        if request.url.path.startswith("/api/"):
            return JSONResponse({"error": message}, 500)
        return HTMLResponse(error_page(500, message, [], LIVE), 500)


def _pages(app: FastAPI, explorer: Explorer) -> None:
    """The pages and the pictures on them."""

    def page(render, *args) -> HTMLResponse:
        if not explorer.ready:
            return HTMLResponse(building_page(explorer, LIVE), 503 if explorer.progress.error else 200)
        return HTMLResponse(render(explorer, *args, LIVE))

    @app.get("/", response_class=HTMLResponse)
    def overview():
        return page(lambda ex, links: overview_page(ex, links, upload=True))

    @app.get("/layer/{layer}", response_class=HTMLResponse)
    def layer(layer: str):
        return page(layer_page, layer)

    @app.get("/layer/{layer}/{channel}", response_class=HTMLResponse)
    def channel(layer: str, channel: str):
        return page(channel_page, layer, channel)

    @app.get("/tile/{kind}/{layer}/{channel}/{k}.png")
    def tile(kind: str, layer: str, channel: str, k: str):
        if not explorer.ready:
            raise NotFound("the index is still being computed")
        return _picture(tile_png(explorer, kind, layer, channel, k))

    @app.get("/figures/{name}")
    def figure(name: str):
        figures = explorer.overview.figures()
        if name not in figures:
            raise NotFound(f"no figure {name!r}", figures)
        return _picture((explorer.overview.figures_dir / name).read_bytes())

    @app.get("/static/{name}")
    def static(name: str):
        files = {p.name: p for p in STATIC.iterdir()}
        if name not in files:
            raise NotFound(f"no static file {name!r}", sorted(files))
        kind = {".css": "text/css", ".js": "text/javascript"}.get(files[name].suffix, "application/octet-stream")
        return Response(files[name].read_bytes(), media_type=kind)


def _api(app: FastAPI, explorer: Explorer, max_pixels: int, patch: int, stride: int) -> None:
    """The JSON routes: the index's progress, an upload's analysis and its pictures."""
    analyses: OrderedDict[str, dict[str, bytes]] = OrderedDict()

    @app.get("/api/progress")
    def progress():
        p = explorer.progress
        return {"done": p.done, "error": p.error, "steps": [{"seconds": round(s, 1), "step": m} for s, m in p.steps]}

    @app.get("/api/analysis/{key}/{name}.png")
    def analysis_picture(key: str, name: str):
        if key not in analyses or name not in analyses[key]:
            raise NotFound(f"no picture {name!r} of analysis {key!r} (only the last {ANALYSES_KEPT} are kept)")
        return _picture(analyses[key][name])

    @app.post("/api/analyze")
    async def analyze(request: Request):
        from starlette.concurrency import run_in_threadpool

        form = await request.form(max_files=1, max_fields=8)
        upload = form.get("image")
        if upload is None or isinstance(upload, str):
            return JSONResponse({"error": "no image: send the file in the multipart field 'image'"}, 400)
        data = await upload.read()
        result = await run_in_threadpool(_analyze, explorer, data, form.get("layer"), form.get("channel"),
                                         max_pixels, patch, stride)
        if "error" in result:
            status = result.pop("status")
            return JSONResponse(result, status)
        key = secrets.token_hex(8)
        analyses[key] = result.pop("pictures")
        while len(analyses) > ANALYSES_KEPT:
            analyses.popitem(last=False)
        result["urls"] = {name: f"/api/analysis/{key}/{name}.png" for name in analyses[key]}
        return result


def _analyze(explorer: Explorer, data: bytes, layer, channel, max_pixels: int, patch: int, stride: int) -> dict:
    """The upload's analysis as the JSON answer with its ``pictures``, or ``{"error", "status"}``."""
    from zfnet.data.images import BadImage
    from zfnet.explore.analyze import analyze

    if not explorer.ready:
        return {"error": "the index is still being computed: try again when the explorer has opened", "status": 503}
    layers = list(explorer.index.layers)
    layer = layer or layers[-1]
    if layer not in layers:
        return {"error": f"no layer {layer!r}; valid: {', '.join(layers)}", "status": 400}
    try:
        chosen = _form_int(channel, "channel")
        network = explorer.network
        start = time.perf_counter()  # decoding included
        pixels = network.inputs.decode(data, max_pixels)
        with explorer.model_lock:
            result = analyze(network, pixels, layer, chosen, layers[-1], patch, stride)
    except BadImage as exc:
        return {"error": f"not a usable image: {exc.reason}", "status": 400}
    except ValueError as exc:
        return {"error": str(exc), "status": 400}
    return {**result.numbers, "pictures": result.pictures, "seconds": round(time.perf_counter() - start, 3)}


LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


def serve(explorer: Explorer, host: str = "127.0.0.1", port: int = 8000, **limits) -> None:
    """Serve ``explorer`` with uvicorn until interrupted (``limits``: :func:`create_app`'s). Any host
    but this machine's loopback is warned about: the explorer has no login, and anyone who reaches
    the port can read the run's pictures and make the model analyse their uploads."""
    import uvicorn

    if host not in LOCAL_HOSTS:
        log.warning("zfnet explore: serving on %s:%d, reachable from other machines: the explorer has no "
                    "login (anyone who reaches the port sees the run and can upload images)", host, port)
    explorer.start()
    uvicorn.run(create_app(explorer, **limits), host=host, port=port, log_level="warning")
