"""Working days and working time (indicators.md §7). Pure: no I/O beyond the `holidays` data.

Working time between two instants is answered in O(1) from per-day prefix sums, so scoring
thousands of dossiers a second never walks the calendar day by day.
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


class WorkingCalendar:
    """Monday–Friday minus Vietnam's holidays and configured days off, plus make-up working days."""

    def __init__(
        self,
        *,
        extra_days_off: Iterable[dt.date] = (),
        make_up_days: Iterable[dt.date] = (),
        work_hours: Iterable[str] = ("07:00-11:30", "13:30-17:00"),
        first_year: int = 2015,
        last_year: int = 2040,
    ) -> None:
        self.windows = _parse_windows(work_hours)
        self.seconds_per_day = sum(b - a for a, b in self.windows)
        self.first_day = dt.date(first_year, 1, 1)
        self.last_day = dt.date(last_year, 12, 31)
        vn = holidays.country_holidays("VN", years=range(first_year, last_year + 1))
        days_off = set(vn.keys()) | set(extra_days_off)
        make_up = set(make_up_days)
        n_days = (self.last_day - self.first_day).days + 1
        self._working = bytearray(n_days)
        # _cum[i] = working seconds in the days before day i (from first_day).
        self._cum = [0] * (n_days + 1)
        for i in range(n_days):
            day = self.first_day + dt.timedelta(days=i)
            working = day in make_up or (day.weekday() < 5 and day not in days_off)
            self._working[i] = 1 if working else 0
            self._cum[i + 1] = self._cum[i] + (self.seconds_per_day if working else 0)
        # Seconds of working time elapsed by each second-of-day boundary, for the within-day part.
        self._window_starts = [a for a, _ in self.windows]

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
        return bool(self._working[self._index(day)])

    def _index(self, day: dt.date) -> int:
        i = (day - self.first_day).days
        if not 0 <= i < len(self._working):
            raise ValueError(f"{day} is outside the calendar's years")
        return i

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
        i = self._index(local.date())
        base = self._cum[i]
        if not self._working[i]:
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
        target = self.cumulative(start) + max(0, working_seconds)
        if working_seconds <= 0:
            return start
        # First day whose end-of-day cumulative reaches the target.
        i = bisect.bisect_left(self._cum, target, lo=1) - 1
        if i >= len(self._working):
            raise ValueError("deadline falls outside the calendar's years")
        remaining = target - self._cum[i]
        day = self.first_day + dt.timedelta(days=i)
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
