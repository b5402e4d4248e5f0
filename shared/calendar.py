"""Working days and working time (indicators.md §7). Pure: no I/O beyond the `holidays` data.

Working time between two instants is answered in O(1) from per-day prefix sums, so scoring
thousands of dossiers a second never walks the calendar day by day.

The calendar is total: a day outside the years it holds (by default those the holidays package
knows for Vietnam) is a working day when it is a Monday to Friday, counted arithmetically, so a
date the rules meet never makes them raise.
"""

from __future__ import annotations

import bisect
import datetime as dt
from collections.abc import Iterable

import holidays

from shared.timeutil import VIETNAM

SECONDS_PER_WORKING_DAY_DEFAULT = 8 * 3600


def _parse_windows(windows: Iterable[str]) -> list[tuple[int, int]]:
    parsed = []
    for window in windows:
        start, end = window.split("-")
        h1, m1 = (int(x) for x in start.split(":"))
        h2, m2 = (int(x) for x in end.split(":"))
        a, b = h1 * 3600 + m1 * 60, h2 * 3600 + m2 * 60
        if not 0 <= a < b <= 86400:
            raise ValueError(f"bad working-hours window {window!r}")
        parsed.append((a, b))
    parsed.sort()
    for (_, b1), (a2, _) in zip(parsed, parsed[1:]):
        if a2 < b1:
            raise ValueError("working-hours windows overlap")
    return parsed


def _weekdays_before(ordinal: int) -> int:
    """Mondays to Fridays among the days of ordinal 1 (0001-01-01, a Monday) up to ``ordinal``, excluded."""
    weeks, rest = divmod(ordinal - 1, 7)
    return 5 * weeks + min(rest, 5)


def _weekday_number(count: int) -> int:
    """The ordinal of the ``count``-th Monday-to-Friday day from 0001-01-01 (the inverse of
    :func:`_weekdays_before`: ``_weekdays_before(o + 1) == count`` for the day ``o`` returned)."""
    weeks, rest = divmod(count - 1, 5)
    return 1 + 7 * weeks + rest


class WorkingCalendar:
    """Monday–Friday minus Vietnam's holidays and configured days off, plus make-up working days.

    Days between ``first_year`` and ``last_year`` (widened to hold every configured day) come from
    the holidays data; days outside them are Monday to Friday (see the module docstring).
    """

    def __init__(
        self,
        *,
        extra_days_off: Iterable[dt.date] = (),
        make_up_days: Iterable[dt.date] = (),
        work_hours: Iterable[str] = ("07:00-11:30", "13:30-17:00"),
        first_year: int = 2000,
        last_year: int = 2100,
    ) -> None:
        self.windows = _parse_windows(work_hours)
        self.seconds_per_day = sum(b - a for a, b in self.windows)
        extra_days_off, make_up_days = set(extra_days_off), set(make_up_days)
        configured_years = [day.year for day in extra_days_off | make_up_days]
        first_year = min([first_year, *configured_years])
        last_year = max([last_year, *configured_years])
        self.first_day = dt.date(first_year, 1, 1)
        self.last_day = dt.date(last_year, 12, 31)
        vn = holidays.country_holidays("VN", years=range(first_year, last_year + 1))
        days_off = set(vn.keys()) | extra_days_off
        make_up = make_up_days
        n_days = (self.last_day - self.first_day).days + 1
        self._working = bytearray(n_days)
        # _cum[i] = working seconds in the days before day i (from first_day).
        self._cum = [0] * (n_days + 1)
        for i in range(n_days):
            day = self.first_day + dt.timedelta(days=i)
            working = day in make_up or (day.weekday() < 5 and day not in days_off)
            self._working[i] = 1 if working else 0
            self._cum[i + 1] = self._cum[i] + (self.seconds_per_day if working else 0)
        self._first_ordinal = self.first_day.toordinal()
        self._after_ordinal = self.last_day.toordinal() + 1

    @classmethod
    def from_settings(cls, settings) -> WorkingCalendar:  # settings: shared.settings.CalendarSettings
        return cls(
            extra_days_off=settings.extra_days_off,
            make_up_days=settings.make_up_days,
            work_hours=settings.work_hours,
            first_year=settings.first_year,
            last_year=settings.last_year,
        )

    def is_working_day(self, day: dt.date) -> bool:
        i = day.toordinal() - self._first_ordinal
        if 0 <= i < len(self._working):
            return bool(self._working[i])
        return day.weekday() < 5

    def _cumulative_days(self, ordinal: int) -> int:
        """Working seconds from the first day to the start of the day ``ordinal`` (negative before it)."""
        i = ordinal - self._first_ordinal
        if i < 0:
            return (_weekdays_before(ordinal) - _weekdays_before(self._first_ordinal)) * self.seconds_per_day
        if i < len(self._cum):
            return self._cum[i]
        return self._cum[-1] + (_weekdays_before(ordinal) - _weekdays_before(self._after_ordinal)) * self.seconds_per_day

    def _day_reaching(self, target: int) -> dt.date:
        """The first day by whose end ``target`` working seconds (from the first day) have passed."""
        if 0 < target <= self._cum[-1]:
            return self.first_day + dt.timedelta(days=bisect.bisect_left(self._cum, target, lo=1) - 1)
        # Outside the years held: Monday to Friday from the edge of the range the target is beyond.
        edge = self._first_ordinal if target <= 0 else self._after_ordinal
        base = self._cumulative_days(edge)
        days = -((base - target) // self.seconds_per_day)  # ceil((target - base) / seconds_per_day)
        return dt.date.fromordinal(_weekday_number(_weekdays_before(edge) + days))

    def _within_day(self, second_of_day: int) -> int:
        done = 0
        for a, b in self.windows:
            if second_of_day <= a:
                break
            done += min(second_of_day, b) - a
        return done

    def cumulative(self, instant: dt.datetime) -> int:
        """Working seconds from the calendar's first day to ``instant``."""
        local = instant.astimezone(VIETNAM)
        day = local.date()
        base = self._cumulative_days(day.toordinal())
        if not self.is_working_day(day):
            return base
        second = local.hour * 3600 + local.minute * 60 + local.second
        return base + self._within_day(second)

    def working_seconds(self, start: dt.datetime, end: dt.datetime) -> int:
        """Working seconds between two instants (0 if end is before start)."""
        if end <= start:
            return 0
        return self.cumulative(end) - self.cumulative(start)

    def working_days(self, start: dt.datetime, end: dt.datetime) -> float:
        return self.working_seconds(start, end) / self.seconds_per_day

    def instant_after(self, start: dt.datetime, working_seconds: int) -> dt.datetime:
        """The earliest instant by which ``working_seconds`` of working time have passed since ``start``."""
        if working_seconds <= 0:
            return start
        target = self.cumulative(start) + working_seconds
        day = self._day_reaching(target)
        remaining = target - self._cumulative_days(day.toordinal())
        for a, b in self.windows:
            length = b - a
            if remaining <= length:
                second = a + remaining
                break
            remaining -= length
        else:  # pragma: no cover - guarded by bisect
            second = self.windows[-1][1]
        midnight = dt.datetime(day.year, day.month, day.day, tzinfo=VIETNAM)
        return midnight + dt.timedelta(seconds=second)
