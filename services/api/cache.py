"""Short-lived cache of computed scores, so many clients asking the same question cost one computation.

An entry is served while it is younger than ``ttl`` seconds *and* no change was applied in this
process since it was computed (the runtime's ``data_version``): within one process a posted event
shows as soon as its batch is applied; a separate api process sees changes within ``ttl``.
Concurrent misses for one key share a single computation.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable
from typing import Any


class ScoreCache:
    def __init__(self, ttl_seconds: float, max_entries: int = 4096) -> None:
        self.ttl = ttl_seconds
        self.max_entries = max_entries
        self._entries: OrderedDict[Hashable, tuple[int, float, Any]] = OrderedDict()
        self._inflight: dict[tuple[Hashable, int], asyncio.Task] = {}
        self.hits = 0
        self.misses = 0

    async def get(self, key: Hashable, version: int, compute: Callable[[], Awaitable[Any]]) -> Any:
        if self.ttl <= 0:
            return await compute()
        entry = self._entries.get(key)
        if entry is not None and entry[0] == version and time.monotonic() - entry[1] < self.ttl:
            self.hits += 1
            self._entries.move_to_end(key)
            return entry[2]
        self.misses += 1
        task = self._inflight.get((key, version))
        if task is None:
            task = asyncio.ensure_future(self._compute(key, version, compute))
            self._inflight[(key, version)] = task
        return await asyncio.shield(task)

    async def _compute(self, key: Hashable, version: int, compute: Callable[[], Awaitable[Any]]) -> Any:
        started = time.monotonic()
        try:
            value = await compute()
        finally:
            self._inflight.pop((key, version), None)
        self._entries[key] = (version, started, value)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
        return value
