"""Operational endpoints every service serves: /healthz, /readyz, /metrics, and HTTP metrics."""

from __future__ import annotations

import asyncio
import time

from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.responses import JSONResponse
from sqlalchemy import text

from shared.metrics import HTTP_REQUESTS, HTTP_SECONDS, render

router = APIRouter(tags=["ops"])


@router.get("/healthz", summary="The process is alive")
async def healthz():
    return {"status": "ok"}


@router.get("/readyz", summary="The store (and Kafka, if configured) are reachable, and the appliers of this "
            "process are keeping up (not stalled, no partition stopped by an offset reset)")
async def readyz(request: Request):
    runtime = request.app.state.runtime
    checks = {}
    try:
        async with asyncio.timeout(5.0):  # a pool exhausted or a server gone quiet is "not ready", promptly
            async with runtime.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as exc:  # noqa: BLE001 - any failure means not ready
        checks["database"] = f"unavailable: {type(exc).__name__}"
    for name, check in getattr(request.app.state, "ready_checks", {}).items():
        checks[name] = await check()
    ready = all(v == "ok" for v in checks.values())
    return JSONResponse({"status": "ready" if ready else "not_ready", "checks": checks},
                        status_code=200 if ready else 503)


@router.get("/metrics", summary="Prometheus metrics", include_in_schema=False)
async def metrics():
    body, content_type = render()
    return Response(body, media_type=content_type)


class HttpMetrics:
    """Pure ASGI middleware (cheaper than BaseHTTPMiddleware on the hot read path): request metrics
    labelled by route template, and cached scores invalidated after a successful write."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.perf_counter()
        status = 500

        async def send_and_record(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_record)
        finally:
            method = scope["method"]
            route = scope.get("route")
            template = getattr(route, "path", "unmatched")  # the route template keeps label cardinality bounded
            HTTP_SECONDS.labels(method, template).observe(time.perf_counter() - started)
            HTTP_REQUESTS.labels(method, template, str(status)).inc()
            if method not in ("GET", "HEAD", "OPTIONS") and status < 300:
                runtime = getattr(scope["app"].state, "runtime", None)
                if runtime is not None:  # a feed or unit change: scores cached in this process are stale
                    runtime.data_changed()


def install_http_metrics(app: FastAPI) -> None:
    app.add_middleware(HttpMetrics)
