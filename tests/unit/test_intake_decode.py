"""Items of a JSON array: their raw text (for dead letters) is their compact JSON, encoded only when asked
for, and the size bound that spares the encoding never understates it (so ``too_large`` stays exact)."""

from __future__ import annotations

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from services.events.checks import Item, check_items
from services.ingest.intake import SIZE_CHUNK, decode_json
from shared.events import DossierEvent, Reason

JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(st.lists(JSON, max_size=3 * SIZE_CHUNK))
def test_raw_text_is_the_compact_json_and_the_bound_is_never_below_its_size(values):
    items = decode_json(orjson.dumps(values))
    assert [item.index for item in items] == list(range(len(values)))
    for item, value in zip(items, values):
        assert item.raw == orjson.dumps(value).decode()
        assert item.size_bound >= len(item.raw.encode())


def test_a_single_object_is_one_item():
    (item,) = decode_json(b'{"a": 1}')
    assert (item.index, item.value, item.raw) == (0, {"a": 1}, '{"a":1}')


class _Units:
    def __contains__(self, code: str) -> bool:
        return True

    def is_within(self, code: str, ancestors) -> bool:
        return True


class _Runtime:
    class settings:
        max_event_bytes = 400

    units = _Units()


def _event(note: str) -> dict:
    return {"event_id": "e", "dossier_code": "D", "unit_code": "H44", "procedure_code": "P", "status": 2,
            "occurred_at": "2026-08-03T08:00:00+07:00", "attributes": {"note": note}}


def test_too_large_is_decided_on_the_exact_size_next_to_small_events():
    limit = _Runtime.settings.max_event_bytes
    base = len(orjson.dumps(_event("")))
    at_limit, over = _event("x" * (limit - base)), _event("x" * (limit - base + 1))
    assert len(orjson.dumps(at_limit)) == limit
    items = decode_json(orjson.dumps([_event("a"), at_limit, over, _event("b")]))
    checked = check_items(items, source="s", runtime=_Runtime(), allowed_units=None)
    assert [type(c) is DossierEvent for c in checked] == [True, True, False, True]
    assert checked[2].reason == Reason.TOO_LARGE
    assert items[2].raw == orjson.dumps(over).decode()


def test_an_item_nested_as_deep_as_orjson_goes_is_still_measured_on_its_own():
    deep = b"[" * 254 + b"]" * 254  # one more level (the chunk's list) than orjson will write
    items = decode_json(b"[" + deep + b", {}]")
    assert [item.size_bound for item in items] == [None, None]
    assert items[0].raw == deep.decode()


def test_items_built_elsewhere_keep_their_raw_text():
    item = Item(3, {"a": 1}, "{ \"a\": 1 }")
    assert item.raw == "{ \"a\": 1 }" and item.size_bound is None
