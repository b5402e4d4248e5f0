"""Errors as problem JSON (RFC 9457) with a machine-readable ``code``; never a 500 for a client's mistake."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as SQLAlchemyTimeoutError
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


def problem_response(status: int, code: str, detail: str, *, headers: dict[str, str] | None = None,
                     **extra) -> JSONResponse:
    body = {"type": f"https://dvc766.dev/problems/{code}", "title": _TITLES.get(status, "Error"),
            "status": status, "code": code, "detail": detail, **extra}
    if status == 401:
        headers = {"WWW-Authenticate": "Bearer", **(headers or {})}
    return JSONResponse(body, status_code=status, media_type=PROBLEM, headers=headers)


def _store_errors() -> tuple[type[BaseException], ...]:
    """Errors that mean the store cannot be reached or cannot serve now (not a mistake of the request):
    refused or cut connections, timeouts connecting or waiting for the pool, a server shutting down,
    starting up, out of connections, or cancelling statements (statement or lock timeout)."""
    import asyncpg

    return (OSError, SQLAlchemyTimeoutError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError,
            asyncpg.OperatorInterventionError, asyncpg.InsufficientResourcesError,
            asyncpg.LockNotAvailableError)


def is_store_unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` (or what it wraps: SQLAlchemy keeps the driver's error as its cause) is one of
    :func:`_store_errors`, or a connection SQLAlchemy found dead."""
    kinds = _store_errors()
    seen = 0
    current: BaseException | None = exc
    while current is not None and seen < 8:
        if isinstance(current, kinds):
            return True
        if isinstance(current, DBAPIError) and current.connection_invalidated:
            return True
        current = getattr(current, "orig", None) or current.__cause__ or current.__context__
        seen += 1
    return False


def store_unavailable_response(request: Request) -> JSONResponse:
    runtime = getattr(request.app.state, "runtime", None)
    retry_after = runtime.settings.store_retry_after_seconds if runtime is not None else 2
    response = problem_response(503, "store_unavailable", "the database is not reachable now; retry later")
    response.headers["Retry-After"] = str(retry_after)
    return response


def refused_value(exc: BaseException) -> BaseException | None:
    """The database's refusal of a value the request carried (a NUL in text, a number out of range),
    found in ``exc`` or what it wraps: the client's mistake, a 422, never a 500."""
    import asyncpg

    current: BaseException | None = exc
    for _ in range(8):
        if current is None:
            return None
        if isinstance(current, asyncpg.DataError):
            return current
        current = getattr(current, "orig", None) or current.__cause__ or current.__context__
    return None


def allowed_methods(request: Request) -> list[str]:
    """The methods some route answers at the request's path (asked of the router itself)."""
    from starlette.routing import Match

    allowed = []
    for method in ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"):
        scope = {**request.scope, "method": method}
        if any(route.matches(scope)[0] == Match.FULL for route in request.app.router.routes):
            allowed.append(method)
    return allowed


def install_problem_handlers(app: FastAPI) -> None:
    @app.exception_handler(Problem)
    async def _problem(_: Request, exc: Problem):
        return problem_response(exc.status, exc.code, exc.detail, **exc.extra)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        headers = exc.headers
        if exc.status_code == 405:  # every method of the path, not only those of the first route matched
            headers = {**(headers or {}), "Allow": ", ".join(allowed_methods(request))}
        return problem_response(exc.status_code, code, str(exc.detail), headers=headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError):
        errors = [{"loc": list(e.get("loc", ())), "msg": e.get("msg")} for e in exc.errors()]
        return problem_response(422, "bad_parameter", "request parameters are invalid", errors=errors)

    async def _store(request: Request, exc: Exception):
        # Answered here, by the exception middleware, rather than by the catch-all below: Starlette re-raises
        # what reaches the catch-all after answering, and the server then closes a kept-alive connection.
        if is_store_unavailable(exc):
            log.warning("store unavailable", extra={"error": repr(exc)})
            return store_unavailable_response(request)
        if (refused := refused_value(exc)) is not None:
            log.warning("a value of the request refused by the store", extra={"error": repr(refused)})
            return problem_response(422, "bad_value", f"a value of this request cannot be stored: {refused}")
        log.exception("unhandled error")
        return problem_response(500, "internal_error", "internal error")

    import asyncpg

    app.add_exception_handler(asyncpg.DataError, _store)
    for kind in (*_store_errors(), DBAPIError):
        app.add_exception_handler(kind, _store)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):
        if is_store_unavailable(exc):  # wrapped in something else (an exception group)
            log.warning("store unavailable", extra={"error": repr(exc)})
            return store_unavailable_response(request)
        log.exception("unhandled error")
        return problem_response(500, "internal_error", "internal error")
