import datetime as dt

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.calendar import WorkingCalendar
from shared.timeutil import VIETNAM

CAL = WorkingCalendar(first_year=2024, last_year=2028)
HOUR = 3600


def vn(*args) -> dt.datetime:
    return dt.datetime(*args, tzinfo=VIETNAM)


def test_weekends_and_public_holidays_are_not_working_days():
    assert CAL.is_working_day(dt.date(2026, 8, 28))  # Friday
    assert not CAL.is_working_day(dt.date(2026, 8, 29))  # Saturday
    assert not CAL.is_working_day(dt.date(2026, 9, 2))  # Quốc khánh
    assert not CAL.is_working_day(dt.date(2026, 2, 17))  # Tết Nguyên đán
    assert not CAL.is_working_day(dt.date(2026, 4, 30))  # 30/4


def test_a_full_working_day_is_eight_hours_of_the_configured_windows():
    assert CAL.seconds_per_day == 8 * HOUR
    assert CAL.working_seconds(vn(2026, 8, 3, 0, 0), vn(2026, 8, 4, 0, 0)) == 8 * HOUR
    # Lunch break 11:30–13:30 does not count.
    assert CAL.working_seconds(vn(2026, 8, 3, 11, 0), vn(2026, 8, 3, 14, 0)) == 1 * HOUR
    # Friday 16:00 to Monday 08:00: one hour Friday, one hour Monday.
    assert CAL.working_seconds(vn(2026, 8, 7, 16, 0), vn(2026, 8, 10, 8, 0)) == 2 * HOUR


def test_configured_days_off_and_make_up_days():
    extra = WorkingCalendar(
        first_year=2026, last_year=2026,
        extra_days_off=[dt.date(2026, 8, 3)], make_up_days=[dt.date(2026, 8, 8)],
    )
    assert not extra.is_working_day(dt.date(2026, 8, 3))
    assert extra.is_working_day(dt.date(2026, 8, 8))  # a Saturday worked (ngày làm bù)
    assert extra.working_days(vn(2026, 8, 3, 0, 0), vn(2026, 8, 10, 0, 0)) == 5


def test_instant_after_lands_inside_a_window():
    # Five working days from Friday 10:00 ends the next Friday 10:00.
    assert CAL.instant_after(vn(2026, 8, 7, 10, 0), 5 * 8 * HOUR) == vn(2026, 8, 14, 10, 0)
    # From lunch time, the first hour ends at 14:30.
    assert CAL.instant_after(vn(2026, 8, 3, 12, 0), HOUR) == vn(2026, 8, 3, 14, 30)


def test_bad_windows_are_refused():
    with pytest.raises(ValueError):
        WorkingCalendar(first_year=2026, last_year=2026, work_hours=["09:00-08:00"])


instants = st.datetimes(min_value=dt.datetime(2025, 1, 1), max_value=dt.datetime(2027, 12, 1)).map(
    lambda d: d.replace(tzinfo=VIETNAM, microsecond=0)
)


@settings(max_examples=300, deadline=None)
@given(start=instants, budget=st.integers(min_value=1, max_value=40 * 8 * HOUR))
def test_instant_after_inverts_working_seconds(start, budget):
    end = CAL.instant_after(start, budget)
    assert CAL.working_seconds(start, end) == budget
    # …and it is the earliest such instant.
    assert CAL.working_seconds(start, end - dt.timedelta(seconds=1)) < budget


@settings(max_examples=300, deadline=None)
@given(a=instants, b=instants, c=instants)
def test_working_seconds_add_up(a, b, c):
    a, b, c = sorted((a, b, c))
    assert CAL.working_seconds(a, c) == CAL.working_seconds(a, b) + CAL.working_seconds(b, c)
