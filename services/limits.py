"""Rate limits at the door of every service (README, "Security"): token buckets per API key and per
client address, and a far stricter one for failed authentications per address. Over a limit: 429
problem JSON with ``Retry-After``. Probes and metrics are never limited."""

from __future__ import annotations

import math
import time

from fastapi import FastAPI

from shared.problems import problem_response
from shared.ratelimit import Limit, TokenBuckets
from shared.settings import Settings

UNLIMITED_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})


def presented_key(headers: list[tuple[bytes, bytes]]) -> str:
    """The key a request presents: ``Authorization: Bearer <key>``, or the portal callers' ``token``."""
    bearer = token = ""
    for name, value in headers:
        if name == b"authorization":
            scheme, _, rest = value.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer":
                bearer = rest.strip()
        elif name == b"token":
            token = value.decode("latin-1").strip()
    return bearer or token


class RateLimits:
    """Pure ASGI middleware (it runs on every request: no BaseHTTPMiddleware)."""

    def __init__(self, app, settings: Settings, clock=time.monotonic) -> None:
        self.app = app
        self.clock = clock
        self.per_key = TokenBuckets(Limit(settings.rate_limit_key_per_second, settings.rate_limit_key_burst))
        self.per_address = TokenBuckets(Limit(settings.rate_limit_address_per_second,
                                              settings.rate_limit_address_burst))
        self.auth_failures = TokenBuckets(Limit(settings.rate_limit_auth_failures_per_minute / 60.0,
                                                settings.rate_limit_auth_failure_burst))

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] in UNLIMITED_PATHS:
            return await self.app(scope, receive, send)
        now = self.clock()
        client = scope.get("client")
        address = client[0] if client else "-"
        key = presented_key(scope["headers"])
        keyring = getattr(scope["app"].state, "keyring", None)
        who = keyring.lookup_cached(key) if key and keyring is not None else None
        if who is None and (wait := self.auth_failures.wait(address, now)):
            return await self._refuse(scope, receive, send, wait, "too many failed authentications from this "
                                      "address; retry later with a valid key")
        if wait := self.per_address.take(address, now):
            return await self._refuse(scope, receive, send, wait, "too many requests from this address")
        if who is not None and (wait := self.per_key.take(key, now)):  # known keys only: bounded
            return await self._refuse(scope, receive, send, wait, "too many requests with this API key")

        async def watch(message):
            if message["type"] == "http.response.start" and message["status"] == 401:
                self.auth_failures.take(address, self.clock())
            await send(message)

        await self.app(scope, receive, watch)

    @staticmethod
    async def _refuse(scope, receive, send, wait: float, detail: str) -> None:
        seconds = max(1, math.ceil(wait))
        response = problem_response(429, "rate_limited", detail, retry_after=seconds,
                                    headers={"Retry-After": str(seconds)})
        await response(scope, receive, send)


def install_rate_limits(app: FastAPI, settings: Settings) -> None:
    app.add_middleware(RateLimits, settings=settings)
