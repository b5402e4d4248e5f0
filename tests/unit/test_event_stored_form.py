"""An event's stored form reads back as the event itself, and as the same rules' view."""

import datetime as dt

from hypothesis import given, settings
from hypothesis import strategies as st

from services.indicators.engine import history_event
from shared.events import DossierEvent, decode_event, validate_event
from shared.timeutil import VIETNAM

instants = st.datetimes(min_value=dt.datetime(2025, 1, 1), max_value=dt.datetime(2027, 12, 31),
                        timezones=st.sampled_from([dt.UTC, VIETNAM]))
attributes = st.dictionaries(st.sampled_from(["e_result", "fee_required", "status_provisional"]), st.booleans(),
                             max_size=3)
# (U+0000 is rejected: test_ingest; a lone surrogate is not JSON)
texts = st.text(st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)), min_size=1, max_size=10)
steps = st.none() | st.fixed_dictionaries(
    {}, optional={"name": texts, "due_at": instants, "started_at": instants, "id": texts, "open": st.booleans()})


def _raw(status, occurred_at, channel, due_at, step, attributes) -> dict:
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
    return raw


@settings(max_examples=200, deadline=None)
@given(status=st.integers(1, 10), occurred_at=instants, channel=st.none() | st.integers(1, 3),
       due_at=st.none() | instants, step=steps, attributes=attributes)
def test_an_accepted_event_reads_as_its_stored_body(status, occurred_at, channel, due_at, step, attributes):
    accepted = validate_event(_raw(status, occurred_at, channel, due_at, step, attributes), "s")
    assert isinstance(accepted, DossierEvent), accepted
    stored = decode_event(accepted.encoded_body())
    assert stored == accepted
    assert stored.encoded_body() == accepted.encoded_body()
    assert history_event(7, accepted) == history_event(7, stored)
