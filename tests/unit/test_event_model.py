"""The event model on any input: it never raises, every rejection carries a known reason and names the
field at fault, an accepted event's stored form validates to the very same bytes (so the same event,
whatever shape it came in, hashes the same), and hashes already stored do not move."""

from __future__ import annotations

import datetime as dt

from hypothesis import given, settings
from hypothesis import strategies as st

from shared.events import BOOLEAN_ATTRIBUTES, DossierEvent, Reason, Rejection, decode_event, parse_timestamp, validate_event

OFFSETS = st.integers(min_value=-23 * 60 - 59, max_value=23 * 60 + 59).map(lambda m: dt.timedelta(minutes=m))
DATETIMES = st.datetimes(min_value=dt.datetime(1, 1, 2), max_value=dt.datetime(9999, 12, 30))


@st.composite
def rfc3339ish(draw) -> str:
    """Timestamps in and around RFC 3339: right ones, and ones with one character changed, inserted or
    removed, fractions, Z, spaces, week dates."""
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
REASONS = {value for name, value in vars(Reason).items() if name.isupper()}


@settings(max_examples=1000, deadline=None)
@given(TIMESTAMPS)
def test_a_time_is_parsed_or_rejected_with_a_time_reason(value):
    parsed = parse_timestamp(value, "occurred_at")
    if isinstance(parsed, Rejection):
        assert parsed.reason in (Reason.BAD_TIMESTAMP, Reason.NAIVE_TIMESTAMP, Reason.OUT_OF_RANGE_TIME)
        assert parsed.field == "occurred_at" and parsed.detail
    else:
        assert parsed.tzinfo is not None


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
def test_any_event_is_accepted_in_its_stored_form_or_rejected_with_a_reason(raw):
    checked = validate_event(raw, "src")
    if isinstance(checked, Rejection):
        assert checked.reason in REASONS and checked.detail
        if checked.field is not None:
            top = checked.field.split(".")[0]
            assert top in raw or checked.reason == Reason.MISSING_FIELD, (checked, raw)
        return
    assert isinstance(checked, DossierEvent) and checked.source == "src"
    assert not _holds_nul(checked.body())  # PostgreSQL cannot store it
    again = validate_event(checked.body(), "src")
    assert isinstance(again, DossierEvent)
    assert again == checked == decode_event(checked.encoded_body())
    assert again.encoded_body() == checked.encoded_body()


@settings(max_examples=1000, deadline=None)
@given(raw_events(), st.sampled_from(sorted(ODD)), st.data())
def test_one_odd_field_is_the_field_its_rejection_names(raw, name, data):
    base = validate_event(raw, "src")
    if not isinstance(base, DossierEvent):
        return
    changed = {**raw, name: data.draw(ODD[name])}
    checked = validate_event(changed, "src")
    if isinstance(checked, Rejection) and checked.field is not None:  # (too_deep and NUL name no field)
        assert checked.field.split(".")[0] == name, (checked, changed[name])


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
    assert event.body_hash() == "33817e4efb479aa222db8dc5f0f5cc46"
