"""Vietnam local time and periods (month ``2026-08``, quarter ``2026-Q3``, year ``2026``)."""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

VIETNAM = dt.timezone(dt.timedelta(hours=7), "ICT")  # Asia/Ho_Chi_Minh: UTC+7, no daylight saving

_PERIOD = re.compile(r"(?P<year>20\d{2})(?:-(?:(?P<month>0[1-9]|1[0-2])|Q(?P<quarter>[1-4])))?")
# The same, for OpenAPI: the years events may fall in (shared/events.py: 2000 up to 2100).
PERIOD_PATTERN = r"^20[0-9]{2}(-(0[1-9]|1[0-2])|-Q[1-4])?$"
PERIOD_OR_EMPTY_PATTERN = r"^(20[0-9]{2}(-(0[1-9]|1[0-2])|-Q[1-4])?)?$"  # empty: the default period


class BadPeriod(ValueError):
    pass


@dataclass(frozen=True, order=True)
class Period:
    """A calendar period in Vietnam local time; ``end`` is exclusive."""

    key: str
    start: dt.datetime
    end: dt.datetime

    @property
    def kind(self) -> str:
        if "-Q" in self.key:
            return "quarter"
        return "month" if "-" in self.key else "year"

    def months(self) -> list[str]:
        """The month keys the period is made of."""
        out = []
        year, month = self.start.year, self.start.month
        while True:
            out.append(f"{year:04d}-{month:02d}")
            month += 1
            if month == 13:
                year, month = year + 1, 1
            if dt.datetime(year, month, 1, tzinfo=VIETNAM) >= self.end:
                return out


def _month_start(year: int, month: int) -> dt.datetime:
    return dt.datetime(year, month, 1, tzinfo=VIETNAM)


def _next_month(year: int, month: int) -> tuple[int, int]:
    return (year + 1, 1) if month == 12 else (year, month + 1)


def parse_period(key: str) -> Period:
    match = _PERIOD.fullmatch(key) if isinstance(key, str) else None
    if not match:
        raise BadPeriod(f"period must look like 2026-08, 2026-Q3 or 2026 (years 2000 to 2099), not {key!r}")
    year = int(match["year"])
    if match["month"]:
        month = int(match["month"])
        return Period(key, _month_start(year, month), _month_start(*_next_month(year, month)))
    if match["quarter"]:
        quarter = int(match["quarter"])
        first = 3 * (quarter - 1) + 1
        return Period(key, _month_start(year, first), _month_start(*_next_month(year, first + 2)))
    return Period(key, _month_start(year, 1), _month_start(year + 1, 1))


def periods_of(instant: dt.datetime) -> tuple[str, str, str]:
    """The month, quarter and year keys holding an instant, in Vietnam local time."""
    local = instant.astimezone(VIETNAM)
    quarter = (local.month - 1) // 3 + 1
    return f"{local.year:04d}-{local.month:02d}", f"{local.year:04d}-Q{quarter}", f"{local.year:04d}"


def current_period(now: dt.datetime, kind: str = "month") -> str:
    month, quarter, year = periods_of(now)
    return {"month": month, "quarter": quarter, "year": year}[kind]


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)
