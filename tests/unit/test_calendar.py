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


# Across the years the calendar holds (2024-2028) and beyond them on both sides.
instants = st.datetimes(min_value=dt.datetime(1990, 1, 1), max_value=dt.datetime(2040, 12, 1)).map(
    lambda d: d.replace(tzinfo=VIETNAM, microsecond=0)
)


@settings(max_examples=300, deadline=None)
@given(start=instants, budget=st.one_of(st.integers(min_value=1, max_value=40 * 8 * HOUR),
                                        st.integers(min_value=1, max_value=4000 * 8 * HOUR)))
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


def test_days_outside_the_years_held_are_monday_to_friday():
    assert CAL.is_working_day(dt.date(2030, 9, 2)) and CAL.is_working_day(dt.date(2023, 1, 2))  # no holidays known
    assert not CAL.is_working_day(dt.date(2030, 9, 7))  # a Saturday
    assert CAL.is_working_day(dt.date(9999, 12, 31)) and CAL.is_working_day(dt.date(1, 1, 1))
    assert CAL.working_days(vn(2999, 1, 1, 0, 0), vn(2999, 1, 8, 0, 0)) == 5
    # Across an edge of the years held: Friday 2028-12-29 (held) to Tuesday 2029-01-02 (outside).
    assert CAL.working_days(vn(2028, 12, 29, 0, 0), vn(2029, 1, 3, 0, 0)) == 3
    assert CAL.instant_after(vn(2028, 12, 29, 16, 0), 2 * HOUR) == vn(2029, 1, 1, 8, 0)
    assert CAL.instant_after(vn(2023, 12, 29, 16, 0), 2 * HOUR) == vn(2024, 1, 2, 8, 0)  # 1/1/2024 is Tết Dương lịch


def test_the_default_calendar_holds_every_year_the_holidays_package_knows_and_a_configured_day_widens_it():
    default = WorkingCalendar()
    assert not default.is_working_day(dt.date(2001, 9, 3)) and not default.is_working_day(dt.date(2099, 9, 2))
    late = WorkingCalendar(first_year=2026, last_year=2026, extra_days_off=[dt.date(2150, 6, 1)])
    assert not late.is_working_day(dt.date(2150, 6, 1)) and late.is_working_day(dt.date(2150, 6, 2))

