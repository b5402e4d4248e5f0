"""Cached score reads answered before routing: the encoded bytes, an ETag, and little else per request.

A GET of ``/v1/scores…`` whose answer is in the ``ResponseCache`` (same path and query string, same
data version, younger than the score cache's ttl) and whose API key may read is answered here with the
bytes the route stored: no routing, no dependency solving, no validation, no encoding. A matching
``If-None-Match`` gets a 304. Everything else — a miss, an unknown or missing key, a role that may not
read — goes through the application as before (which computes, stores, or answers the problem).
Requests for an answer that the application is computing right now (the first miss after a change or
an expiry) wait for it here instead of each going through the application. HTTP metrics are recorded
here for the requests answered here, with the same labels.
"""

from __future__ import annotations

import asyncio
import time

from services.api.cache import CachedResponse, ResponseCache, etag_matches
from shared.metrics import HTTP_REQUESTS, HTTP_SECONDS

PREFIX = "/v1/scores"
_JSON = b"application/json"


def response_key(path: str, query_string: bytes, units: tuple[str, ...]) -> tuple:
    """What an answer is cached under: the path, the raw query string and the reader's unit scope
    (the answer does not depend on anything else of the request)."""
    return (path, query_string, units)


class CachedReads:
    """Pure ASGI wrapper around the FastAPI application (``services.app.served``): serves cache hits
    of the score routes, hands everything else (lifespan included) to the application. The server's
    HTTP protocol (services/http_protocol.py) asks ``raw_answer`` first, before any ASGI work."""

    def __init__(self, app) -> None:
        self.app = app
        self.state = app.state
        self._metrics: dict[tuple[str, int], tuple] = {}

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["method"] == "GET" and scope["path"].startswith(PREFIX):
            started = time.perf_counter()
            path, query_string, headers = scope["path"], scope["query_string"], scope["headers"]
            found = self.find(path, query_string, headers)
            if found is None:
                key = self.miss_key(path, query_string, headers)
                if key is None:
                    return await self.app(scope, receive, send)
                responses: ResponseCache = self.state.responses
                first = responses.first_misses.get(key)
                if first is None:  # the application computes this answer (and stores it); others wait
                    first = responses.first_misses[key] = asyncio.get_running_loop().create_future()
                    try:
                        return await self.app(scope, receive, send)
                    finally:
                        del responses.first_misses[key]
                        first.set_result(None)
                await asyncio.shield(first)
                found = self.find(path, query_string, headers)
                if found is None:  # nothing was stored (an error, a problem): the application answers
                    return await self.app(scope, receive, send)
            entry, not_modified = found
            if not_modified:
                await send({"type": "http.response.start", "status": 304, "headers": [(b"etag", entry.etag)]})
                await send({"type": "http.response.body", "body": b""})
            else:
                await send({"type": "http.response.start", "status": 200, "headers": [  # the route's order
                    (b"etag", entry.etag), (b"content-length", str(len(entry.body)).encode()),
                    (b"content-type", _JSON)]})
                await send({"type": "http.response.body", "body": entry.body})
            return self._record(entry.route, 304 if not_modified else 200, started)
        await self.app(scope, receive, send)

    def raw_answer(self, path: str, query_string: bytes, headers, default_headers: bytes) -> bytes | None:
        """The whole HTTP/1.1 response to a GET, as the ASGI path above would have it written (after
        the server's ``default_headers`` lines), or None: let the application answer."""
        started = time.perf_counter()
        found = self.find(path, query_string, headers)
        if found is None:
            return None
        entry, not_modified = found
        if not_modified:
            data = b"HTTP/1.1 304 Not Modified\r\n" + default_headers + b"etag: " + entry.etag + b"\r\n\r\n"
        else:
            data = b"".join((b"HTTP/1.1 200 OK\r\n", default_headers, b"etag: ", entry.etag, b"\r\ncontent-length: ",
                             str(len(entry.body)).encode(), b"\r\ncontent-type: application/json\r\n\r\n",
                             entry.body))
        self._record(entry.route, 304 if not_modified else 200, started)
        return data

    def find(self, path: str, query_string: bytes, headers) -> tuple[CachedResponse, bool] | None:
        """The cached answer to a GET (and whether the client already has it: If-None-Match), if there
        is one and the API key presented may read it."""
        found = self._lookup(path, query_string, headers)
        return found if found is None or found[0] is not None else None

    def miss_key(self, path: str, query_string: bytes, headers) -> tuple | None:
        """After ``find`` found nothing: the key its answer will be stored under, if the API key may read
        it and answers are cached at all (None: only the application can say)."""
        found = self._lookup(path, query_string, headers)
        if found is None or found[0] is not None or self.state.responses.ttl <= 0:
            return None
        return found[1]

    def _lookup(self, path: str, query_string: bytes, headers):
        if not path.startswith(PREFIX):
            return None
        state = self.state
        responses: ResponseCache | None = getattr(state, "responses", None)
        runtime = getattr(state, "runtime", None)
        if responses is None or runtime is None:
            return None
        authorization = if_none_match = None
        for name, value in headers:
            if name == b"authorization":
                authorization = value
            elif name == b"if-none-match":
                if_none_match = value
        if authorization is None:
            return None
        scheme, _, token = authorization.partition(b" ")
        token = token.strip()
        if scheme.lower() != b"bearer" or not token:
            return None
        who = state.keyring.lookup_cached(token.decode("latin-1"))
        if who is None or not who.can_read():
            return None  # the application answers 401/403 as a problem
        key = response_key(path, query_string, who.units)
        entry = responses.lookup(key, runtime.data_version)
        if entry is None:
            return None, key
        return entry, if_none_match is not None and etag_matches(if_none_match, entry.etag)

    def _record(self, route: str, status: int, started: float) -> None:
        metrics = self._metrics.get((route, status))
        if metrics is None:  # the labelled children, looked up once
            metrics = self._metrics[(route, status)] = (HTTP_SECONDS.labels("GET", route),
                                                        HTTP_REQUESTS.labels("GET", route, str(status)))
        metrics[0].observe(time.perf_counter() - started)
        metrics[1].inc()
