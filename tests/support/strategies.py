"""Hypothesis strategies shared by the counter tests."""

from __future__ import annotations

import datetime as dt

from hypothesis import strategies as st

from services.indicators.rules.counters import Contribution

MONTHS = st.sampled_from(["2026-07", "2026-08", "2026-09", "2026-12", "2027-01"])
COUNTS = st.dictionaries(
    st.sampled_from(["received", "received_online", "completed", "on_time", "overdue", "fee_data",
                     "processing_working_seconds", "x"]),
    st.integers(-3, 10_000), max_size=5,
)


@st.composite
def contributions(draw):
    """Compact contributions of every shape: settled or open (deadline passed or not), with 3.6 counts in
    another month or not; counts include metrics kept per procedure and metrics that are not."""
    return Contribution(
        unit_code=draw(st.sampled_from(["H44", "H44.03"])),
        procedure_code=draw(st.sampled_from(["P1", "P2"])),
        received_month=draw(MONTHS),
        counts=draw(COUNTS),
        open_deadline=draw(st.none() | st.sampled_from([dt.datetime(2026, 8, 20, tzinfo=dt.UTC),
                                                         dt.datetime(2026, 10, 2, tzinfo=dt.UTC)])),
        deadline_passed=draw(st.booleans()),
        open_undetermined=draw(st.booleans()),
        start_month=draw(st.none() | MONTHS),
        start_counts=draw(COUNTS),
    )
