from aiokafka import TopicPartition
from hypothesis import given
from hypothesis import strategies as st

from services.indicators.kafka import split_by_partition


@given(st.dictionaries(st.integers(0, 11), st.integers(1, 50), min_size=1), st.integers(1, 4))
def test_every_partition_lands_in_exactly_one_group_whole(sizes, groups):
    batch = {TopicPartition("t", p): list(range(n)) for p, n in sizes.items()}
    split = split_by_partition(batch, groups)
    assert len(split) == min(groups, len(batch))
    assert all(split)  # no empty transaction
    seen = [tp for group in split for tp in group]
    assert sorted(seen) == sorted(batch)
    assert all(group[tp] is batch[tp] for group in split for tp in group)


def test_groups_get_similar_message_counts():
    batch = {TopicPartition("t", p): [0] * n for p, n in enumerate([900, 100, 500, 500])}
    split = split_by_partition(batch, 2)
    assert sorted(sum(len(m) for m in g.values()) for g in split) == [1000, 1000]
