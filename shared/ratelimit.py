"""Token buckets (pure: the caller passes the time). One bucket per key (an API key's name, a client
address): it holds up to ``burst`` tokens and gains ``rate`` per second; a request takes one."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Limit:
    rate: float  # tokens per second; 0: no limit
    burst: int

    @property
    def enabled(self) -> bool:
        return self.rate > 0


class TokenBuckets:
    def __init__(self, limit: Limit, *, max_keys: int = 65_536) -> None:
        self.limit = limit
        self.max_keys = max_keys
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, at)

    def _level(self, key: str, now: float) -> float:
        tokens, at = self._buckets.get(key, (float(self.limit.burst), now))
        return min(float(self.limit.burst), tokens + (now - at) * self.limit.rate)

    def take(self, key: str, now: float) -> float:
        """Take a token: 0.0 when there was one, else the seconds until there will be (nothing taken)."""
        if not self.limit.enabled:
            return 0.0
        tokens = self._level(key, now)
        if tokens < 1.0:
            self._buckets[key] = (tokens, now)
            return (1.0 - tokens) / self.limit.rate
        if key not in self._buckets and len(self._buckets) >= self.max_keys:
            self._forget_full(now)
        self._buckets[key] = (tokens - 1.0, now)
        return 0.0

    def wait(self, key: str, now: float) -> float:
        """The seconds until ``key`` has a token (0.0: it has one now); takes nothing."""
        if not self.limit.enabled:
            return 0.0
        tokens = self._level(key, now)
        return 0.0 if tokens >= 1.0 else (1.0 - tokens) / self.limit.rate

    def _forget_full(self, now: float) -> None:
        """Drop buckets that have refilled (a full bucket is the same as none); if every one is in use,
        the oldest half (memory stays bounded whatever number of addresses calls)."""
        full = [k for k in self._buckets if self._level(k, now) >= self.limit.burst]
        if not full:
            full = list(self._buckets)[: len(self._buckets) // 2]
        for key in full:
            del self._buckets[key]
