"""Feedback (phản ánh, kiến nghị — PAKN) items and components 5.1, 5.2 (indicators.md §2). Pure: no I/O.

An item is the history of its events (``received``, ``handled``, ``rated``, ``recomplained``);
it belongs to the period of its first receipt, in Vietnam local time, and is judged at the
evaluation instant ``T = min(now, end of the period)`` like dossiers.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass, field

KINDS = ("received", "handled", "rated", "recomplained")
RATINGS = ("satisfied", "unsatisfied")


@dataclass(frozen=True)
class FeedbackEvent:
    feedback_id: str
    unit_code: str
    kind: str
    occurred_at: dt.datetime
    dossier_code: str | None = None
    due_at: dt.datetime | None = None
    rating: str | None = None


@dataclass(frozen=True)
class FeedbackItem:
    feedback_id: str
    unit_code: str
    received_at: dt.datetime
    dossier_code: str | None = None
    due_at: dt.datetime | None = None
    handled_at: dt.datetime | None = None
    rating: str | None = None
    recomplained: bool = False
    kinds: frozenset[str] = frozenset()

    def handled_by(self, instant: dt.datetime) -> bool:
        return self.handled_at is not None and self.handled_at <= instant

    def on_time(self, instant: dt.datetime) -> bool:
        """Handled by its due time, or still in progress within it at ``instant``."""
        if self.due_at is None:
            return True
        if self.handled_by(instant):
            return self.handled_at <= self.due_at  # type: ignore[operator]
        return instant <= self.due_at

    def costs(self, instant: dt.datetime) -> list[str]:
        """Why the item costs points in 5.1 / 5.2 (empty: it does not)."""
        reasons = []
        if not self.on_time(instant):
            reasons.append("handled_late" if self.handled_by(instant) else "open_past_due")
        if self.rating == "unsatisfied":
            reasons.append("rated_unsatisfied")
        if self.recomplained:
            reasons.append("recomplained")
        return reasons


def derive_items(events: Iterable[FeedbackEvent]) -> list[FeedbackItem]:
    by_id: dict[str, list[FeedbackEvent]] = {}
    for event in events:
        by_id.setdefault(event.feedback_id, []).append(event)
    items = []
    for feedback_id, history in by_id.items():
        history.sort(key=lambda e: e.occurred_at)
        receipt = next((e for e in history if e.kind == "received"), history[0])
        due = receipt.due_at or next((e.due_at for e in history if e.due_at), None)
        handled = next((e.occurred_at for e in history if e.kind == "handled"), None)
        rating = next((e.rating for e in reversed(history) if e.kind == "rated" and e.rating), None)
        items.append(
            FeedbackItem(
                feedback_id=feedback_id,
                unit_code=receipt.unit_code,
                received_at=receipt.occurred_at,
                dossier_code=next((e.dossier_code for e in history if e.dossier_code), None),
                due_at=due,
                handled_at=handled,
                rating=rating,
                recomplained=any(e.kind == "recomplained" for e in history),
                kinds=frozenset(e.kind for e in history),
            )
        )
    return sorted(items, key=lambda i: i.feedback_id)


@dataclass(frozen=True)
class FeedbackCounts:
    items: int = 0  # 5.1 and 5.2 denominator: items first received in the period
    on_time: int = 0  # 5.1 numerator
    satisfied: int = 0  # 5.2 numerator: not rated unsatisfied, not overdue, not re-complained
    costly: list[dict] = field(default_factory=list)


def feedback_counts(
    items: Iterable[FeedbackItem], *, period_start: dt.datetime, period_end: dt.datetime, now: dt.datetime,
    with_reasons: bool = False,
) -> FeedbackCounts:
    instant = min(now, period_end)
    total = on_time = satisfied = 0
    costly = []
    for item in items:
        if not period_start <= item.received_at < period_end:
            continue
        total += 1
        reasons = item.costs(instant)
        if item.on_time(instant):
            on_time += 1
        if not reasons:
            satisfied += 1
        elif with_reasons:
            costly.append({"feedback_id": item.feedback_id, "unit_code": item.unit_code,
                           "dossier_code": item.dossier_code, "reasons": reasons})
    return FeedbackCounts(items=total, on_time=on_time, satisfied=satisfied, costly=costly)


def complains_about_dossier(item: FeedbackItem, complaint_kinds: Iterable[str]) -> bool:
    """Whether an item referencing a dossier counts against 5.3 (a complaint or a not-satisfied rating)."""
    if item.dossier_code is None:
        return False
    return item.rating == "unsatisfied" or bool(item.kinds & set(complaint_kinds))
