import asyncio

from services.api.cache import ScoreCache


async def test_concurrent_misses_share_one_computation_and_a_new_version_recomputes():
    cache = ScoreCache(ttl_seconds=60)
    calls = 0

    async def compute():
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.01)
        return calls

    results = await asyncio.gather(*(cache.get("k", 1, compute) for _ in range(50)))
    assert results == [1] * 50 and calls == 1
    assert await cache.get("k", 1, compute) == 1  # a hit
    assert await cache.get("k", 2, compute) == 2  # data changed in this process
    assert await cache.get("other", 2, compute) == 3


async def test_entries_expire_and_zero_ttl_disables():
    cache = ScoreCache(ttl_seconds=0.05)
    values = iter(range(10))

    async def compute():
        return next(values)

    assert await cache.get("k", 0, compute) == 0
    assert await cache.get("k", 0, compute) == 0
    await asyncio.sleep(0.06)
    assert await cache.get("k", 0, compute) == 1
    off = ScoreCache(ttl_seconds=0)
    assert [await off.get("k", 0, compute) for _ in range(2)] == [2, 3]


async def test_a_failed_computation_is_not_cached():
    cache = ScoreCache(ttl_seconds=60)
    attempts = 0

    async def flaky():
        nonlocal attempts
        attempts += 1
        if attempts == 1:
            raise ConnectionError("store went away")
        return "ok"

    try:
        await cache.get("k", 0, flaky)
    except ConnectionError:
        pass
    assert await cache.get("k", 0, flaky) == "ok"
