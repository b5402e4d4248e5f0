"""A dossier's facts, derived from its whole event history (indicators.md §3). Pure: no I/O.

The history is always re-read in ``occurred_at`` order (ties: arrival order), so a late or
out-of-order event simply changes the derived facts, and duplicates are removed before we get here.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from shared.calendar import WorkingCalendar
from shared.event_flags import INPUT_FLAGS, PROVISIONAL
from shared.statuses import Status

ENDING_OTHER = (Status.STOPPED, Status.WITHDRAWN, Status.REFUSED)


# The rules' value types are plain (not frozen) dataclasses: a frozen one's __init__ sets each field
# through object.__setattr__, ~3x slower, and every applied event rebuilds its dossier's history. The
# rules never mutate them (``replace`` makes changed copies).
@dataclass
class HistoryEvent:
    """What the rules need of one stored event."""

    seq: int  # arrival order
    status: int
    occurred_at: dt.datetime
    unit_code: str
    procedure_code: str
    channel: int | None = None
    due_at: dt.datetime | None = None
    step_due_at: dt.datetime | None = None
    step_name: str | None = None
    attributes: dict[str, Any] = field(default_factory=dict)
    step_started_at: dt.datetime | None = None
    step_id: str | None = None
    step_open: bool = False  # the step started and is still open (events.md: step.open)


@dataclass
class DossierFacts:
    dossier_code: str
    unit_code: str
    procedure_code: str
    current_status: int
    received_at: dt.datetime | None  # None: never received, counts nowhere
    channel: int = 1
    due_at_received: dt.datetime | None = None
    due_at_latest: dt.datetime | None = None
    processing_started_at: dt.datetime | None = None
    ended_at: dt.datetime | None = None
    end_status: int | None = None
    supplement_count: int = 0
    supplement_seconds: float = 0.0  # wall time spent in status 5 by returned requests
    supplement_working_seconds: int = 0
    outstanding_supplement_at: dt.datetime | None = None  # the last request, still not answered
    steps: int = 0
    overdue_steps: int = 0
    # Deadlines of the steps started and still open (processing not ended): overdue once the clock passes.
    open_step_deadlines: tuple[dt.datetime, ...] = ()
    # The directives' counters (targets.md): statuses entered after receipt, whatever came next.
    returned: bool = False  # 3 after 2: refused or returned to the applicant
    stopped: bool = False  # 8, Dừng xử lý
    withdrawn: bool = False  # 7, the applicant withdrew
    attributes: dict[str, Any] = field(default_factory=dict)

    @property
    def received(self) -> bool:
        return self.received_at is not None

    @property
    def ended(self) -> bool:
        return self.ended_at is not None

    def due_at(self, policy: str = "received") -> dt.datetime | None:
        if policy == "latest":
            return self.due_at_latest or self.due_at_received
        return self.due_at_received


# A status only claimed (PROVISIONAL, shared/event_flags.py): at the same instant reported events come
# first, and a claimed status yields to the reported one: a claimed 9 only to the statuses systems
# collapse into it.
COLLAPSED_INTO = {Status.RESOLVED: {Status.SUPPLEMENT_REQUESTED, Status.AWAITING_PAYMENT, Status.STOPPED}}


def _reconcile_claimed(events: list[HistoryEvent]) -> list[HistoryEvent]:
    ordered = sorted(events, key=lambda e: (e.occurred_at, bool(e.attributes.get(PROVISIONAL)), e.seq))
    if not any(e.attributes.get(PROVISIONAL) for e in ordered):
        return ordered
    reported: dict[dt.datetime, int] = {}
    for event in ordered:
        if not event.attributes.get(PROVISIONAL):
            reported[event.occurred_at] = event.status
    out = []
    for event in ordered:
        status = reported.get(event.occurred_at)
        if event.attributes.get(PROVISIONAL) and status is not None and status != event.status:
            collapsed = COLLAPSED_INTO.get(event.status)
            if collapsed is None or status in collapsed:
                event = replace(event, status=status)
        out.append(event)
    return out


def derive_facts(dossier_code: str, events: Iterable[HistoryEvent], calendar: WorkingCalendar) -> DossierFacts:
    ordered = _reconcile_claimed(list(events))
    if not ordered:
        raise ValueError("a dossier needs at least one event")

    attributes: dict[str, Any] = {}
    for event in ordered:  # latest value (by occurred_at) wins
        attributes.update(event.attributes)
    attributes.pop(PROVISIONAL, None)
    for flag in INPUT_FLAGS:  # a flag stated false (a corrected record) is no flag
        if attributes.get(flag) is False:
            del attributes[flag]

    receipt_index = next((i for i, e in enumerate(ordered) if e.status == Status.RECEIVED), None)
    latest = ordered[-1]
    if receipt_index is None:
        # Waits, counted nowhere, until its status-2 event arrives.
        return DossierFacts(
            dossier_code=dossier_code,
            unit_code=latest.unit_code,
            procedure_code=latest.procedure_code,
            current_status=latest.status,
            received_at=None,
            attributes=attributes,
        )

    receipt = ordered[receipt_index]
    after = ordered[receipt_index:]
    due_latest = next((e.due_at for e in reversed(after) if e.due_at is not None), None)
    due_received = receipt.due_at or next((e.due_at for e in after if e.due_at is not None), None)

    processing_started_at = next((e.occurred_at for e in after if e.status == Status.PROCESSING), None)

    end_event = (
        next((e for e in after if e.status == Status.RESOLVED), None)
        or next((e for e in after if e.status == Status.RESULT_RETURNED), None)
        or next((e for e in after if e.status in ENDING_OTHER), None)
    )
    ended_at = end_event.occurred_at if end_event else None

    # Supplement requests: each entry into status 5 is one request; time in 5 runs until the next
    # event in another status. Only the history up to the end of processing counts.
    requests = 0
    spent = 0.0
    spent_working = 0
    open_request_at: dt.datetime | None = None
    previous_status = None
    for event in after:
        if ended_at is not None and event.occurred_at > ended_at:
            break
        if event.status == Status.SUPPLEMENT_REQUESTED:
            if previous_status != Status.SUPPLEMENT_REQUESTED:
                requests += 1
                open_request_at = event.occurred_at
        elif open_request_at is not None:
            spent += (event.occurred_at - open_request_at).total_seconds()
            spent_working += calendar.working_seconds(open_request_at, event.occurred_at)
            open_request_at = None
        previous_status = event.status

    steps, overdue_steps, open_step_deadlines = step_counts(after, ended_at)

    entered = {e.status for e in after[1:]}
    return DossierFacts(
        dossier_code=dossier_code,
        unit_code=receipt.unit_code,
        procedure_code=receipt.procedure_code,
        current_status=latest.status,
        received_at=receipt.occurred_at,
        channel=receipt.channel or 1,
        due_at_received=due_received,
        due_at_latest=due_latest,
        processing_started_at=processing_started_at,
        ended_at=ended_at,
        end_status=end_event.status if end_event else None,
        supplement_count=requests,
        supplement_seconds=spent,
        supplement_working_seconds=spent_working,
        outstanding_supplement_at=open_request_at,
        steps=steps,
        overdue_steps=overdue_steps,
        open_step_deadlines=open_step_deadlines,
        returned=Status.REFUSED in entered,
        stopped=Status.STOPPED in entered,
        withdrawn=Status.WITHDRAWN in entered,
        attributes=attributes,
    )


def _open_step_of(opened: dict[int, HistoryEvent], closing: HistoryEvent) -> int | None:
    """The open step an event closes: the same ``step_id``; else the same name and start, the same start,
    or the same name (the latest opened first)."""
    if closing.step_id is not None:
        return next((k for k, e in opened.items() if e.step_id == closing.step_id), None)
    tests = (
        lambda e: e.step_name == closing.step_name and e.step_started_at == closing.step_started_at,
        lambda e: closing.step_started_at is not None and e.step_started_at == closing.step_started_at,
        lambda e: closing.step_name is not None and e.step_name == closing.step_name,
    )
    for test in tests:
        found = next((k for k, e in reversed(opened.items()) if e.step_id is None and test(e)), None)
        if found is not None:
            return found
    return None


def step_counts(events: list[HistoryEvent], ended_at: dt.datetime | None
                ) -> tuple[int, int, tuple[dt.datetime, ...]]:
    """(steps with a deadline, those finished past it, deadlines of the steps still open).

    An event with a step closes that step at its time; one with ``step_open`` opens it (again, for the
    same ``step_id``). The end of processing closes every step still open at that instant.
    """
    opened: dict[int, HistoryEvent] = {}
    steps = overdue = 0
    for event in events:
        if event.step_open:
            for key in [k for k, e in opened.items()  # re-stating an open step replaces it
                        if (e.step_id, e.step_name, e.step_started_at)
                        == (event.step_id, event.step_name, event.step_started_at)]:
                del opened[key]
            opened[event.seq] = event
            continue
        if event.step_due_at is None and event.step_name is None and event.step_id is None:
            continue
        key = _open_step_of(opened, event)
        if key is not None:
            del opened[key]
        if event.step_due_at is not None:
            steps += 1
            if event.occurred_at > event.step_due_at:
                overdue += 1
    still_open = []
    for event in opened.values():
        if event.step_due_at is None:
            continue
        if ended_at is not None:
            steps += 1
            if ended_at > event.step_due_at:
                overdue += 1
        else:
            still_open.append(event.step_due_at)
    return steps, overdue, tuple(sorted(still_open))


@dataclass
class Timeliness:
    """On time or overdue, as far as it can be known without the evaluation instant T.

    ``fixed`` outcomes hold for every T. Otherwise the dossier is open and becomes overdue for an
    evaluation instant T exactly when ``T > deadline``; a ``deadline`` of None never turns overdue.
    """

    fixed: bool
    overdue: bool = False
    deadline: dt.datetime | None = None
    reason: str | None = None  # why overdue: late_end, two_plus_supplements, supplement_late
    no_deadline: bool = False  # neither a due time nor the procedure's legal time is known
    early: bool = False  # finished before the day it was due


def assess(
    facts: DossierFacts,
    calendar: WorkingCalendar,
    *,
    legal_days: float | None = None,
    due_policy: str = "received",
) -> Timeliness:
    if facts.received_at is None:
        raise ValueError("only received dossiers are assessed")
    if facts.supplement_count >= 2:
        return Timeliness(fixed=True, overdue=True, reason="two_plus_supplements")

    due = facts.due_at(due_policy)
    returned_supplement = facts.supplement_count == 1 and facts.outstanding_supplement_at is None

    if facts.ended_at is not None or facts.outstanding_supplement_at is not None:
        if facts.ended_at is not None:
            end = facts.ended_at
            if returned_supplement:
                end = end - dt.timedelta(seconds=facts.supplement_seconds)
            reason = "late_end"
        else:
            end = facts.outstanding_supplement_at  # still outstanding: the clock stopped at the request
            reason = "supplement_late"
        if due is not None:
            late = end > due
            early = not late and end.astimezone(due.tzinfo).date() < due.astimezone(due.tzinfo).date()
            return Timeliness(fixed=True, overdue=late, reason=reason if late else None, early=early)
        if legal_days is not None:
            worked = calendar.working_seconds(facts.received_at, facts.ended_at or end)
            if returned_supplement:
                worked -= facts.supplement_working_seconds
            late = worked > legal_days * calendar.seconds_per_day
            return Timeliness(fixed=True, overdue=late, reason=reason if late else None)
        return Timeliness(fixed=True, overdue=False, no_deadline=True)

    # Open: overdue once the clock passes the deadline, pushed back by time spent waiting for a supplement.
    if due is not None:
        return Timeliness(fixed=False, deadline=due + dt.timedelta(seconds=facts.supplement_seconds))
    if legal_days is not None:
        budget = int(legal_days * calendar.seconds_per_day) + facts.supplement_working_seconds
        return Timeliness(fixed=False, deadline=calendar.instant_after(facts.received_at, budget))
    return Timeliness(fixed=False, deadline=None, no_deadline=True)
