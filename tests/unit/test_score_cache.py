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


async def test_refresh_recomputes_a_valid_entry_and_shares_the_flight_with_misses():
    cache = ScoreCache(ttl_seconds=60)
    calls = 0

    async def compute():
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.01)
        return calls

    assert (await cache.get_entry("k", 1, compute)).value == 1
    refreshed, missed = await asyncio.gather(cache.refresh("k", 1, lambda: _later(compute)),
                                             cache.get_entry("k", 2, compute))
    assert refreshed.value == 1  # computed a moment ago: not again
    cache._entries["k"] = cache._entries["k"]._replace(started=cache._entries["k"].started - 30)
    first, second = await asyncio.gather(cache.refresh("k", 2, compute), cache.refresh("k", 2, compute))
    assert first == second and first.value == calls


async def _later(compute):
    return await compute()


async def test_a_cached_answer_is_refreshed_before_it_expires_and_never_served_after():
    import time

    from services.api.cache import ResponseCache, etag_matches

    responses = ResponseCache(ttl_seconds=10, refresh_fraction=0.5)
    fresh = []

    async def refresh():
        fresh.append(time.monotonic())
        return b"new", 1, time.monotonic()

    now = time.monotonic()
    etag = responses.store("k", 1, now, b"old", route="/r", refresh=refresh)
    assert etag_matches(etag, etag) and etag_matches(b'"x", W/' + etag, etag) and not etag_matches(b'"x"', etag)
    assert responses.lookup("k", 1).body == b"old" and not fresh  # young: no refresh
    assert responses.lookup("k", 2) is None  # another data version
    responses.store("k", 1, now - 6, b"old", route="/r", refresh=refresh)  # past half its life
    assert responses.lookup("k", 1).body == b"old"  # still served, while it is rebuilt
    await responses._refreshing["k"]
    assert responses.lookup("k", 1).body == b"new" and len(fresh) == 1
    responses.store("k", 1, now - 11, b"old", route="/r", refresh=refresh)  # older than the ttl
    assert responses.lookup("k", 1) is None
    responses.store("k", 1, now, b"old", route="/r", refresh=refresh, valid_until=now - 1)  # e.g. the month ended
    assert responses.lookup("k", 1) is None
    off = ResponseCache(ttl_seconds=0)
    off.store("k", 1, now, b"x", route="/r")
    assert off.lookup("k", 1) is None


def test_a_scorecard_is_reused_while_its_inputs_are_equal():
    from services.api.queries import ScorecardMemo, scorecard_for
    from services.indicators.rules.scoring import ScoreInputs
    from shared.settings import Settings

    settings = Settings(database_url="postgresql://unused/db")
    memo = ScorecardMemo(settings, 28_800)
    counts = {"received": 4, "on_time": 3, "overdue": 1, "received_online": 2}
    first = memo.card("H44.03", "2026-08", "portal", ScoreInputs(counts=dict(counts)))
    again = memo.card("H44.03", "2026-08", "portal", ScoreInputs(counts=dict(counts)))  # equal, not the same
    assert again is first and (memo.built, memo.reused) == (1, 1)
    moved = memo.card("H44.03", "2026-08", "portal", ScoreInputs(counts={**counts, "on_time": 4, "overdue": 0}))
    assert moved is not first and memo.built == 2
    assert moved.as_dict() == scorecard_for({}, settings, 28_800, "portal",
                                            inputs=ScoreInputs(counts={**counts, "on_time": 4, "overdue": 0})).as_dict()
    other = memo.card("H44.03", "2026-08", "decision", ScoreInputs(counts=dict(counts)))  # layout is in the key
    assert [g["code"] for g in other.as_dict()["groups"]] == ["I", "II", "III", "IV", "V"]
