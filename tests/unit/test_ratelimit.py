from hypothesis import given
from hypothesis import strategies as st

from shared.ratelimit import Limit, TokenBuckets


def test_a_bucket_allows_its_burst_then_waits_for_its_rate():
    buckets = TokenBuckets(Limit(rate=2.0, burst=3))
    assert [buckets.take("a", 0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert buckets.take("a", 0.0) == 0.5
    assert buckets.take("b", 0.0) == 0.0  # another key has its own bucket
    assert buckets.take("a", 0.25) == 0.25
    assert buckets.take("a", 0.5) == 0.0
    assert buckets.wait("a", 0.5) == 0.5


def test_a_zero_rate_is_no_limit():
    buckets = TokenBuckets(Limit(rate=0.0, burst=1))
    assert all(buckets.take("a", 0.0) == 0.0 for _ in range(100))


def test_memory_stays_bounded_whatever_number_of_keys():
    buckets = TokenBuckets(Limit(rate=1.0, burst=5), max_keys=100)
    for i in range(10_000):
        buckets.take(str(i), 0.0)
    assert len(buckets._buckets) <= 100


@given(st.lists(st.floats(min_value=0, max_value=10), min_size=1, max_size=200), st.integers(1, 20),
       st.floats(min_value=0.1, max_value=50))
def test_never_more_than_burst_plus_rate_times_elapsed(gaps, burst, rate):
    buckets = TokenBuckets(Limit(rate=rate, burst=burst))
    now, allowed = 0.0, 0
    for gap in gaps:
        now += gap
        allowed += buckets.take("k", now) == 0.0
    assert allowed <= burst + rate * now + 1e-6
