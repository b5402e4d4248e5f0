"""Errors as problem JSON (RFC 9457) with a machine-readable ``code``; never a 500 for a client's mistake."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger("dvc766.http")
PROBLEM = "application/problem+json"

_TITLES = {
    400: "Bad request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    413: "Content too large",
    415: "Unsupported media type",
    422: "Unprocessable content",
    429: "Too many requests",
    503: "Service unavailable",
}


class Problem(Exception):
    def __init__(self, status: int, code: str, detail: str, **extra) -> None:
        super().__init__(detail)
        self.status, self.code, self.detail, self.extra = status, code, detail, extra


def problem_response(status: int, code: str, detail: str, **extra) -> JSONResponse:
    body = {"type": f"https://dvc766.dev/problems/{code}", "title": _TITLES.get(status, "Error"),
            "status": status, "code": code, "detail": detail, **extra}
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse(body, status_code=status, media_type=PROBLEM, headers=headers)


def _is_store_unavailable(exc: BaseException) -> bool:
    import asyncpg

    if isinstance(exc, (OperationalError, ConnectionError, OSError, asyncpg.CannotConnectNowError,
                        asyncpg.ConnectionDoesNotExistError, asyncpg.InterfaceError)):
        return True
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    return False


def install_problem_handlers(app: FastAPI) -> None:
    @app.exception_handler(Problem)
    async def _problem(_: Request, exc: Problem):
        return problem_response(exc.status, exc.code, exc.detail, **exc.extra)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException):
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return problem_response(exc.status_code, code, str(exc.detail))

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError):
        errors = [{"loc": list(e.get("loc", ())), "msg": e.get("msg")} for e in exc.errors()]
        return problem_response(422, "bad_parameter", "request parameters are invalid", errors=errors)

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception):
        if _is_store_unavailable(exc):
            log.warning("store unavailable", extra={"error": repr(exc)})
            return problem_response(503, "store_unavailable", "the database is not reachable; retry later")
        log.exception("unhandled error")
        return problem_response(500, "internal_error", "internal error")
