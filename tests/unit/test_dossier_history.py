"""The compact history kept in the dossier row, and the rules' view of an event just accepted."""

import datetime as dt

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from services.indicators.engine import compact_event, event_from_compact, history_event, history_event_of
from services.indicators.rules.dossier import HistoryEvent
from shared.events import DossierEvent, validate_event
from shared.timeutil import VIETNAM

instants = st.datetimes(min_value=dt.datetime(2025, 1, 1), max_value=dt.datetime(2027, 12, 31),
                        timezones=st.sampled_from([dt.UTC, VIETNAM]))
attributes = st.dictionaries(st.sampled_from(["e_result", "fee_required", "status_provisional"]), st.booleans(),
                             max_size=3)


@settings(max_examples=200, deadline=None)
@given(seq=st.integers(0, 2**40), status=st.integers(1, 10), occurred_at=instants,
       channel=st.none() | st.integers(1, 3), due_at=st.none() | instants, step_due_at=st.none() | instants,
       step_name=st.none() | st.text(max_size=20), attributes=attributes)
def test_compact_history_round_trips(seq, status, occurred_at, channel, due_at, step_due_at, step_name, attributes):
    original = HistoryEvent(seq=seq, status=status, occurred_at=occurred_at, unit_code="H44.03", procedure_code="P1",
                            channel=channel, due_at=due_at, step_due_at=step_due_at, step_name=step_name,
                            attributes=attributes)
    assert event_from_compact(orjson.loads(orjson.dumps(compact_event(original)))) == original


@settings(max_examples=200, deadline=None)
@given(status=st.integers(1, 10), occurred_at=instants, channel=st.none() | st.integers(1, 3),
       due_at=st.none() | instants, step=st.none() | st.fixed_dictionaries(
           {}, optional={"name": st.text(st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)),
                                         min_size=1, max_size=10),
                     "due_at": instants}),  # (U+0000 is rejected: test_ingest; a lone surrogate is not JSON)
       attributes=attributes)
def test_an_accepted_event_reads_as_its_stored_body(status, occurred_at, channel, due_at, step, attributes):
    raw = {"event_id": "e1", "dossier_code": "D1", "unit_code": "H44.03", "procedure_code": "P1", "status": status,
           "occurred_at": occurred_at.isoformat()}
    if channel is not None:
        raw["channel"] = channel
    if due_at is not None:
        raw["due_at"] = due_at.isoformat()
    if step is not None:
        raw["step"] = {k: v.isoformat() if isinstance(v, dt.datetime) else v for k, v in step.items()}
    if attributes:
        raw["attributes"] = attributes
    accepted = validate_event(raw, "s")
    assert isinstance(accepted, DossierEvent), accepted
    stored = orjson.loads(accepted.encoded_body())
    assert history_event_of(7, accepted) == history_event(7, stored)
