"""The fast validation path (well-formed events, common timestamps) agrees with the full path on every
input: same event, same normalised body bytes (so the same stored hash), and it never decides a
rejection itself."""

from __future__ import annotations

import datetime as dt

from hypothesis import given, settings
from hypothesis import strategies as st

from shared.events import (
    BOOLEAN_ATTRIBUTES,
    DossierEvent,
    Reason,
    Rejection,
    _fast_timestamp,
    _parse_timestamp_full,
    _validate_fast,
    _validate_full,
    parse_timestamp,
    validate_event,
)

OFFSETS = st.integers(min_value=-23 * 60 - 59, max_value=23 * 60 + 59).map(lambda m: dt.timedelta(minutes=m))
DATETIMES = st.datetimes(min_value=dt.datetime(1, 1, 2), max_value=dt.datetime(9999, 12, 30))


@st.composite
def rfc3339ish(draw) -> str:
    """Timestamps in and around the fast path's shape: right ones, and ones with one character changed,
    inserted or removed, fractions, Z, spaces, week dates."""
    moment = draw(DATETIMES)
    offset = draw(OFFSETS)
    text = moment.replace(tzinfo=dt.timezone(offset)).isoformat(timespec=draw(st.sampled_from(
        ["seconds", "seconds", "seconds", "minutes", "microseconds", "milliseconds"])))
    kind = draw(st.integers(0, 6))
    if kind == 1 and text:
        i = draw(st.integers(0, len(text) - 1))
        text = text[:i] + draw(st.sampled_from(list("0123459:+-TZz ._W\n٣"))) + text[i + 1:]
    elif kind == 2:
        i = draw(st.integers(0, len(text)))
        text = text[:i] + draw(st.sampled_from(list("0:+- Z\t"))) + text[i:]
    elif kind == 3 and text:
        i = draw(st.integers(0, len(text) - 1))
        text = text[:i] + text[i + 1:]
    elif kind == 4:
        text = text.replace("+00:00", draw(st.sampled_from(["Z", "z", "+00:00", "-00:00"])))
    return text


TIMESTAMPS = st.one_of(rfc3339ish(), st.text(max_size=30), st.none(), st.integers(), st.just(""))


def _same_time(a, b) -> bool:
    if isinstance(a, dt.datetime) and isinstance(b, dt.datetime):
        return a == b and a.utcoffset() == b.utcoffset() and a.replace(tzinfo=None) == b.replace(tzinfo=None)
    return a == b


@settings(max_examples=2000, deadline=None)
@given(TIMESTAMPS)
def test_the_timestamp_fast_path_agrees_with_the_full_path(value):
    full = _parse_timestamp_full(value, "occurred_at")
    fast = _fast_timestamp(value)
    if fast is not None:
        assert _same_time(fast, full)
    assert _same_time(parse_timestamp(value, "occurred_at"), full)


def test_the_fast_path_takes_the_common_shape():
    assert _fast_timestamp("2026-07-31T07:39:29+07:00") == dt.datetime(2026, 7, 31, 0, 39, 29, tzinfo=dt.timezone.utc)
    assert _fast_timestamp("2026-07-31T07:39:29Z") is None  # the full path handles it
    assert isinstance(parse_timestamp("2026-07-31T07:39:29", "t"), Rejection)


CODES = st.one_of(
    st.text(min_size=1, max_size=10), st.just(""), st.none(), st.integers(), st.just("x" * 65),
    st.just("x" * 129), st.booleans(),
)
SMALL_INTS = st.one_of(st.integers(-1, 12), st.none(), st.booleans(), st.sampled_from(["2", " 3 ", "x", 2.0]))
ATTRIBUTE_VALUES = st.one_of(st.booleans(), st.none(), st.integers(-2, 5), st.text(max_size=3), st.floats(),
                             st.lists(st.integers(), max_size=2))
ATTRIBUTES = st.one_of(
    st.none(), st.just([]), st.just("x"),
    st.dictionaries(st.sampled_from(sorted(BOOLEAN_ATTRIBUTES) + ["applicant_type", "extra", "z"]),
                    ATTRIBUTE_VALUES, max_size=6),
)
STEPS = st.one_of(
    st.none(), st.just("step"), st.just([]),
    st.fixed_dictionaries({}, optional={
        "name": st.one_of(st.text(max_size=5), st.none(), st.integers()),
        "handler": st.one_of(st.text(max_size=5), st.none()),
        "due_at": st.one_of(TIMESTAMPS, st.just("")),
        "started_at": st.one_of(TIMESTAMPS, st.just("")),
    }),
)


GOOD_TIMES = st.builds(
    lambda moment, offset: moment.replace(tzinfo=dt.timezone(offset)).isoformat(timespec="seconds"),
    DATETIMES, OFFSETS,
)
WELL_FORMED = {
    "event_id": st.text(min_size=1, max_size=128),
    "dossier_code": st.text(min_size=1, max_size=64),
    "unit_code": st.sampled_from(["H44", "H44.03"]),
    "procedure_code": st.text(min_size=1, max_size=64),
    "status": st.integers(1, 10),
    "occurred_at": GOOD_TIMES,
    "channel": st.one_of(st.none(), st.integers(1, 3)),
    "due_at": st.one_of(st.none(), st.just(""), GOOD_TIMES),
    "step": st.one_of(st.none(), st.fixed_dictionaries({}, optional={
        "name": st.one_of(st.none(), st.text(max_size=5)), "handler": st.one_of(st.none(), st.text(max_size=5)),
        "due_at": st.one_of(st.none(), st.just(""), GOOD_TIMES),
        "started_at": st.one_of(st.none(), st.just(""), GOOD_TIMES), "other": st.integers(),
        "id": st.one_of(st.none(), st.text(max_size=5), st.integers()),
        "open": st.one_of(st.none(), st.booleans(), st.just(1), st.just("true"))})),
    "attributes": st.one_of(st.none(), st.dictionaries(
        st.sampled_from(sorted(BOOLEAN_ATTRIBUTES) + ["extra", "zz"]),
        st.one_of(st.none(), st.booleans()), max_size=8,
    ).flatmap(lambda d: st.just(d) if "extra" not in d else st.just({**d, "applicant_type": 3, "extra": [1, "a"]}))),
}
ODD = {
    "event_id": CODES, "dossier_code": CODES, "unit_code": CODES, "procedure_code": CODES,
    "status": SMALL_INTS, "occurred_at": TIMESTAMPS, "channel": SMALL_INTS,
    "due_at": st.one_of(TIMESTAMPS, st.just("")), "step": STEPS, "attributes": ATTRIBUTES,
}


@st.composite
def raw_events(draw) -> dict:
    """Well-formed events with, for about half of them, one or two fields absent or odd."""
    raw = {name: draw(strategy) for name, strategy in WELL_FORMED.items()}
    for _ in range(draw(st.sampled_from([0, 0, 1, 2]))):
        name = draw(st.sampled_from(sorted(ODD)))
        if draw(st.booleans()):
            raw.pop(name, None)
        else:
            raw[name] = draw(ODD[name])
    if draw(st.booleans()):
        raw["unknown"] = draw(st.integers())
    return raw


@settings(max_examples=3000, deadline=None)
@given(raw_events())
def test_the_event_fast_path_agrees_with_the_full_path(raw):
    full = _validate_full(raw, "src")
    fast = _validate_fast(raw, "src")
    if fast is not None:
        assert isinstance(full, DossierEvent)
        assert fast == full
        for a, b in ((fast.occurred_at, full.occurred_at), (fast.due_at, full.due_at)):
            assert _same_time(a, b)
        if fast.step is not None:
            assert _same_time(fast.step.due_at, full.step.due_at)
            assert _same_time(fast.step.started_at, full.step.started_at)
        assert fast.body() == full.body()
        assert fast.encoded_body() == full.encoded_body()
        assert fast.body_hash() == full.body_hash()
    checked = validate_event(raw, "src")
    if isinstance(full, DossierEvent) and _holds_nul(full.body()):  # PostgreSQL cannot store it
        assert isinstance(checked, Rejection) and checked.reason == Reason.BAD_FIELD
    else:
        assert checked == full


def _holds_nul(value) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_holds_nul(k) or _holds_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_holds_nul(v) for v in value)
    return False


def test_the_stored_hash_of_a_known_event_is_unchanged():
    """Hashes of events already stored must not move (conflicts are found by comparing them)."""
    raw = {"event_id": "sim-766-4619", "dossier_code": "H44.231-260803-0004", "unit_code": "H44.231",
           "procedure_code": "2.003258", "status": 1, "occurred_at": "2026-07-31T07:39:29+07:00", "channel": 2,
           "attributes": {"digitized": True, "applicant_type": 1}}
    event = validate_event(raw, "bench")
    assert event.encoded_body() == (
        b'{"attributes":{"applicant_type":1,"digitized":true},"channel":2,"dossier_code":"H44.231-260803-0004",'
        b'"event_id":"sim-766-4619","occurred_at":"2026-07-31T00:39:29Z","procedure_code":"2.003258","status":1,'
        b'"unit_code":"H44.231"}'
    )
    assert event.body_hash() == _validate_full(raw, "bench").body_hash() == "33817e4efb479aa222db8dc5f0f5cc46"
