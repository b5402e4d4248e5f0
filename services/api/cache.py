"""Short-lived cache of computed scores, so many clients asking the same question cost one computation.

An entry is served while it is younger than ``ttl`` seconds *and* no change was applied in this
process since it was computed (the runtime's ``data_version``): within one process a posted event
shows as soon as its batch is applied; a separate api process sees changes within ``ttl``.
Concurrent misses for one key share a single computation, and so does a refresh started ahead of
expiry (``refresh``) with the misses that arrive while it runs.

``ResponseCache`` (below) keeps the encoded answers of the read API on top of it, served before
routing by ``services.api.fastpath``.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable
from typing import Any, NamedTuple

log = logging.getLogger("dvc766.api.cache")


class Computed(NamedTuple):
    value: Any
    version: int  # the data version it was computed at
    started: float  # time.monotonic() when its computation started (its age counts from there)


class ScoreCache:
    def __init__(self, ttl_seconds: float, max_entries: int = 4096) -> None:
        self.ttl = ttl_seconds
        self.max_entries = max_entries
        self._entries: OrderedDict[Hashable, Computed] = OrderedDict()
        self._inflight: dict[tuple[Hashable, int], asyncio.Task] = {}
        self.hits = 0
        self.misses = 0

    async def get(self, key: Hashable, version: int, compute: Callable[[], Awaitable[Any]]) -> Any:
        return (await self.get_entry(key, version, compute)).value

    async def get_entry(self, key: Hashable, version: int, compute: Callable[[], Awaitable[Any]]) -> Computed:
        """The value with the version and time it was computed at (a response built from it is no
        fresher than that)."""
        if self.ttl <= 0:
            return Computed(await compute(), version, time.monotonic())
        entry = self._entries.get(key)
        if entry is not None and entry.version == version and time.monotonic() - entry.started < self.ttl:
            self.hits += 1
            self._entries.move_to_end(key)
            return entry
        self.misses += 1
        return await self._join(key, version, compute)

    async def refresh(self, key: Hashable, version: int, compute: Callable[[], Awaitable[Any]]) -> Computed:
        """Compute afresh even if the entry is still valid (a refresh ahead of its expiry); shares a
        computation already in flight for this key and version."""
        if self.ttl <= 0:
            return Computed(await compute(), version, time.monotonic())
        entry = self._entries.get(key)
        inflight = self._inflight.get((key, version))
        if inflight is None and entry is not None and entry.version == version and \
                time.monotonic() - entry.started < self.ttl / 4:
            return entry  # refreshed a moment ago (by another response sharing this computation)
        return await self._join(key, version, compute)

    async def _join(self, key: Hashable, version: int, compute: Callable[[], Awaitable[Any]]) -> Computed:
        task = self._inflight.get((key, version))
        if task is None:
            task = asyncio.ensure_future(self._compute(key, version, compute))
            self._inflight[(key, version)] = task
        return await asyncio.shield(task)

    async def _compute(self, key: Hashable, version: int, compute: Callable[[], Awaitable[Any]]) -> Computed:
        started = time.monotonic()
        try:
            value = await compute()
        finally:
            self._inflight.pop((key, version), None)
        entry = Computed(value, version, started)
        self._entries[key] = entry
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
        return entry


class CachedResponse(NamedTuple):
    version: int
    refresh_at: float  # monotonic: from then on a hit starts a refresh in the background
    expires: float  # monotonic: not served from then on
    body: bytes
    etag: bytes  # quoted, as sent in the ETag header
    route: str  # the route template, for the HTTP metrics
    refresh: Callable[[], Awaitable[tuple[bytes, int, float]]] | None
    limit: float | None  # monotonic: never served from then on, refreshed or not (``valid_until``)


def etag_of(body: bytes) -> bytes:
    return b'"' + hashlib.blake2b(body, digest_size=12).hexdigest().encode() + b'"'


def etag_matches(if_none_match: str | bytes | None, etag: bytes) -> bool:
    """RFC 9110 §13.1.2: ``*`` or any listed tag, compared weakly (W/ prefixes ignored)."""
    if not if_none_match:
        return False
    if isinstance(if_none_match, str):
        if_none_match = if_none_match.encode("latin-1")
    if if_none_match.strip() == b"*":
        return True
    return any(tag.strip().removeprefix(b"W/") == etag for tag in if_none_match.split(b","))


class ResponseCache:
    """The encoded answers of cached reads, by (path, query string, the reader's unit scope).

    Each entry inherits the version and age of the computation it was built from, so it is never
    served later than that computation would be (``ttl``, or a change applied in this process). From
    ``refresh_fraction`` of its life on, a hit starts one background refresh (the answer is rebuilt
    and replaced before it expires), so steady readers never wait for a computation; the hit itself
    is served the current, still valid entry."""

    def __init__(self, ttl_seconds: float, max_entries: int = 4096, refresh_fraction: float = 0.3) -> None:
        self.ttl = ttl_seconds
        self.max_entries = max_entries
        self.refresh_fraction = refresh_fraction
        self._entries: dict[Hashable, CachedResponse] = {}
        self._refreshing: dict[Hashable, asyncio.Task] = {}
        # Answers being computed by the application for a first miss (services/api/fastpath.py).
        self.first_misses: dict[Hashable, asyncio.Future] = {}
        self.hits = 0
        self.refreshes = 0

    def __len__(self) -> int:
        return len(self._entries)

    def lookup(self, key: Hashable, version: int) -> CachedResponse | None:
        entry = self._entries.get(key)
        if entry is None or entry.version != version:
            return None
        now = time.monotonic()
        if now >= entry.expires:
            return None
        self.hits += 1
        if now >= entry.refresh_at and entry.refresh is not None and key not in self._refreshing:
            self._refreshing[key] = asyncio.ensure_future(self._refresh(key, entry))
        return entry

    def store(self, key: Hashable, version: int, started: float, body: bytes, *, route: str,
              refresh: Callable[[], Awaitable[tuple[bytes, int, float]]] | None = None,
              valid_until: float | None = None) -> bytes:
        """Keep ``body`` (computed from data at ``version``, its computation started at monotonic
        ``started``); returns its ETag. ``valid_until`` (monotonic) can shorten its life (an answer for
        "this month" ends with the month)."""
        etag = etag_of(body)
        if self.ttl <= 0:
            return etag
        expires = started + self.ttl
        if valid_until is not None:
            expires = min(expires, valid_until)
        if len(self._entries) >= self.max_entries and key not in self._entries:
            self._entries.pop(next(iter(self._entries)))  # the oldest stored
        self._entries[key] = CachedResponse(version, started + self.ttl * self.refresh_fraction, expires, body,
                                            etag, route, refresh, valid_until)
        return etag

    async def _refresh(self, key: Hashable, entry: CachedResponse) -> None:
        try:
            body, version, started = await entry.refresh()  # type: ignore[misc]
            self.refreshes += 1
            current = self._entries.get(key)
            if current is None or current.version <= version:
                self.store(key, version, started, body, route=entry.route, refresh=entry.refresh,
                           valid_until=entry.limit)
        except Exception:  # noqa: BLE001 - the entry expires and the next request computes it in the open
            log.warning("background refresh of a cached answer failed", exc_info=True)
        finally:
            self._refreshing.pop(key, None)
