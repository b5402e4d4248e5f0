"""Cached score reads answered before routing: the encoded bytes, an ETag, and little else per request.

A GET of ``/v1/scores…`` whose answer is in the ``ResponseCache`` (same path and query string, same
data version, younger than the score cache's ttl) and whose API key may read is answered here with the
bytes the route stored: no routing, no dependency solving, no validation, no encoding. A matching
``If-None-Match`` gets a 304. Everything else — a miss, an unknown or missing key, a role that may not
read — goes through the application as before (which computes, stores, or answers the problem).
HTTP metrics are recorded here for the requests answered here, with the same labels.
"""

from __future__ import annotations

import time

from services.api.cache import ResponseCache, etag_matches
from shared.metrics import HTTP_REQUESTS, HTTP_SECONDS

PREFIX = "/v1/scores"
_JSON = b"application/json"


def response_key(path: str, query_string: bytes, units: tuple[str, ...]) -> tuple:
    """What an answer is cached under: the path, the raw query string and the reader's unit scope
    (the answer does not depend on anything else of the request)."""
    return (path, query_string, units)


class CachedReads:
    """Pure ASGI wrapper around the FastAPI application (``services.app.served``): serves cache hits
    of the score routes, hands everything else (lifespan included) to the application."""

    def __init__(self, app) -> None:
        self.app = app
        self.state = app.state
        self._metrics: dict[tuple[str, int], tuple] = {}

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["method"] == "GET" and scope["path"].startswith(PREFIX):
            started = time.perf_counter()
            if await self._serve(scope, send):
                return self._record(scope, started)
        await self.app(scope, receive, send)

    async def _serve(self, scope, send) -> bool:
        state = self.state
        responses: ResponseCache | None = getattr(state, "responses", None)
        runtime = getattr(state, "runtime", None)
        if responses is None or runtime is None:
            return False
        authorization = if_none_match = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                authorization = value
            elif name == b"if-none-match":
                if_none_match = value
        if authorization is None:
            return False
        scheme, _, token = authorization.partition(b" ")
        token = token.strip()
        if scheme.lower() != b"bearer" or not token:
            return False
        who = state.keyring.lookup_cached(token.decode("latin-1"))
        if who is None or not who.can_read():
            return False  # the application answers 401/403 as a problem
        entry = responses.lookup(response_key(scope["path"], scope["query_string"], who.units),
                                 runtime.data_version)
        if entry is None:
            return False
        scope["dvc766.route"] = entry.route
        if if_none_match is not None and etag_matches(if_none_match, entry.etag):
            scope["dvc766.status"] = 304
            await send({"type": "http.response.start", "status": 304, "headers": [(b"etag", entry.etag)]})
            await send({"type": "http.response.body", "body": b""})
            return True
        scope["dvc766.status"] = 200
        await send({"type": "http.response.start", "status": 200, "headers": [
            (b"content-length", str(len(entry.body)).encode()), (b"content-type", _JSON), (b"etag", entry.etag)]})
        await send({"type": "http.response.body", "body": entry.body})
        return True

    def _record(self, scope, started: float) -> None:
        route, status = scope["dvc766.route"], scope["dvc766.status"]
        metrics = self._metrics.get((route, status))
        if metrics is None:  # the labelled children, looked up once
            metrics = self._metrics[(route, status)] = (HTTP_SECONDS.labels("GET", route),
                                                        HTTP_REQUESTS.labels("GET", route, str(status)))
        metrics[0].observe(time.perf_counter() - started)
        metrics[1].inc()
