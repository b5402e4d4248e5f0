"""Operational endpoints every service serves: /healthz, /readyz, /metrics, and HTTP metrics."""

from __future__ import annotations

import asyncio
import itertools
import logging
import re
import secrets
import time

from typing import Literal

from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from sqlalchemy import text

from shared.logs import REQUEST_ID
from shared.metrics import HTTP_REQUESTS, HTTP_SECONDS, READY, record_process_metrics, refresh_pool_metrics, render

access_log = logging.getLogger("dvc766.access")
# A caller's X-Request-ID is kept when it is a plain token; anything else gets a fresh id.
_REQUEST_ID_FORM = re.compile(r"[A-Za-z0-9._:@/+=-]{1,128}")

router = APIRouter(tags=["ops"])


class Health(BaseModel):
    status: Literal["ok"]


class Readiness(BaseModel):
    status: Literal["ready", "not_ready"]
    checks: dict[str, str] = Field(description="each check: ok, or what is wrong")


@router.get("/healthz", response_model=Health, summary="The process is alive")
async def healthz():
    return {"status": "ok"}


@router.get("/readyz", response_model=Readiness, summary="The store (and Kafka, if configured) are reachable, and the appliers of this "
            "process are keeping up (not stalled, no partition stopped by an offset reset)")
async def readyz(request: Request):
    checks = await readiness(request.app)
    ready = all(v == "ok" for v in checks.values())
    return JSONResponse({"status": "ready" if ready else "not_ready", "checks": checks},
                        status_code=200 if ready else 503)


async def readiness(app: FastAPI) -> dict[str, str]:
    """Each check of /readyz: "ok" or what is wrong. All run at once, each bounded by
    ``readiness_timeout_seconds``: a store or broker gone quiet (or a pool exhausted) is "not ready", promptly."""
    runtime = app.state.runtime

    async def database() -> str:
        async with runtime.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
        return "ok"

    named = {"database": database, **getattr(app.state, "ready_checks", {})}
    answers = await asyncio.gather(*(_bounded(check, runtime.settings.readiness_timeout_seconds)
                                     for check in named.values()))
    return dict(zip(named, answers))


async def publish_readiness(app: FastAPI, every: float) -> None:
    """Keep ``dvc766_ready{check}`` current (Prometheus does not read /readyz), with this process's
    figures for the multiprocess /metrics."""
    while True:
        try:
            for name, state in (await readiness(app)).items():
                READY.labels(name).set(1 if state == "ok" else 0)
            record_process_metrics()
            refresh_pool_metrics()
        except Exception:  # noqa: BLE001 - the next round tries again
            logging.getLogger("dvc766.ops").warning("readiness round failed", exc_info=True)
        await asyncio.sleep(every)


async def _bounded(check, seconds: float) -> str:
    """The check's answer, or "unavailable" once ``seconds`` have passed. A late check runs on to its end
    rather than being cancelled: cancelled in the middle of a statement, it could leave its pooled
    connection inside a transaction, for the next user of that connection to write into and never commit."""
    task = asyncio.ensure_future(check())
    try:
        return await asyncio.wait_for(asyncio.shield(task), seconds)
    except TimeoutError:
        task.add_done_callback(_ignore_outcome)
        return f"unavailable: no answer in {seconds:g} s"
    except Exception as exc:  # noqa: BLE001 - any failure means not ready
        return f"unavailable: {type(exc).__name__}"


def _ignore_outcome(task: asyncio.Task) -> None:
    if not task.cancelled():
        task.exception()  # retrieved: a late failure is what the answer already said


@router.get("/metrics", summary="Prometheus metrics", include_in_schema=False)
async def metrics():
    body, content_type = render()
    return Response(body, media_type=content_type)


# A new request id: this process's random prefix and a counter (unique across processes and restarts
# without a system call per request, as uuid4 makes).
_ID_PREFIX = secrets.token_hex(8)
_ID_COUNTER = itertools.count(1)


def request_id_of(scope) -> str:
    for name, value in scope.get("headers") or ():
        if name == b"x-request-id":
            candidate = value.decode("latin-1")
            if _REQUEST_ID_FORM.fullmatch(candidate):
                return candidate
            break
    return f"{_ID_PREFIX}{next(_ID_COUNTER):016x}"


class HttpMetrics:
    """Pure ASGI middleware (cheaper than BaseHTTPMiddleware): a request id (the caller's
    ``X-Request-ID`` or a new one) answered in ``X-Request-ID`` and on every log line of the request,
    one access-log line per request, and request metrics labelled by route template."""

    def __init__(self, app, *, access_log_enabled: bool = True) -> None:
        self.app = app
        self.access_log_enabled = access_log_enabled

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.perf_counter()
        status = 500
        request_id = request_id_of(scope)
        token = REQUEST_ID.set(request_id)

        async def send_and_record(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), (b"x-request-id", request_id.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_and_record)
        finally:
            elapsed = time.perf_counter() - started
            method = scope["method"]
            route = scope.get("route")
            template = getattr(route, "path", "unmatched")  # the route template keeps label cardinality bounded
            HTTP_SECONDS.labels(method, template).observe(elapsed)
            HTTP_REQUESTS.labels(method, template, str(status)).inc()
            if self.access_log_enabled:
                client = scope.get("client")
                access_log.info("%s %s %d", method, scope["path"], status, extra={
                    "request_id": request_id, "method": method, "path": scope["path"], "route": template,
                    "status": status,
                    "duration_ms": round(elapsed * 1000, 2), "client": client[0] if client else None})
            REQUEST_ID.reset(token)


def install_http_metrics(app: FastAPI, *, access_log_enabled: bool = True) -> None:
    app.add_middleware(HttpMetrics, access_log_enabled=access_log_enabled)
