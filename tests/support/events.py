"""Builders for canonical events in tests."""

from __future__ import annotations

import datetime as dt
import itertools

from shared.timeutil import VIETNAM

_ids = itertools.count(1)


def vn(year: int, month: int, day: int, hour: int = 8, minute: int = 0) -> dt.datetime:
    return dt.datetime(year, month, day, hour, minute, tzinfo=VIETNAM)


def event(dossier: str, status: int, at: dt.datetime, *, unit: str = "H44.03", procedure: str = "P1",
          event_id: str | None = None, **extra) -> dict:
    body = {
        "event_id": event_id or f"ev-{next(_ids)}",
        "dossier_code": dossier,
        "unit_code": unit,
        "procedure_code": procedure,
        "status": status,
        "occurred_at": at.isoformat(),
    }
    for key, value in extra.items():
        body[key] = value.isoformat() if isinstance(value, dt.datetime) else value
    return body
