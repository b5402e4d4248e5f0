"""What one dossier adds to the counters (indicators.md §3–§4). Pure: no I/O.

A dossier's contribution is kept in a compact form (:class:`Contribution`: its unit, procedure,
received month, the period-independent counts, and the deadline of an open dossier). :func:`expand`
states what it adds to each month, quarter and year holding its received time, for its procedure and
for the all-procedures row. Counters are stored per month (a quarter or a year reads the sum of its
months plus its own row of corrections for open dossiers: :class:`CounterDelta`, :func:`stored_periods`).
Applying an event retracts the old contribution and adds the new one, so counters never drift from the
dossiers' facts.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache

from services.indicators.rules.dossier import DossierFacts, Timeliness
from shared.calendar import WorkingCalendar
from shared.timeutil import parse_period, periods_of

ALL_PROCEDURES = "*"

# Counter names (the metric column). Kept as plain strings: they are API-visible.
RECEIVED = "received"
ON_TIME = "on_time"
OVERDUE = "overdue"
OPEN_IN_TIME = "open_in_time"
OPEN_OVERDUE = "open_overdue"
COMPLETED = "completed"
COMPLETED_EARLY = "completed_early"
COMPLETED_ON_TIME = "completed_on_time"
COMPLETED_LATE = "completed_late"
PROCESSING_WORKING_SECONDS = "processing_working_seconds"
SUPPLEMENT_REQUESTS = "supplement_requests"
DOSSIERS_ONE_SUPPLEMENT = "dossiers_with_1_supplement"
DOSSIERS_TWO_PLUS_SUPPLEMENTS = "dossiers_with_2plus_supplements"
OVERDUE_STEPS = "overdue_steps"
STEPS = "steps"
LATE_WITHOUT_APOLOGY = "late_without_apology"
RETURNED = "returned"
STOPPED = "stopped"
WITHDRAWN = "withdrawn"
NO_DEADLINE = "no_deadline_flagged"
RECEIVED_BY_CHANNEL = {1: "received_in_person", 2: "received_online", 3: "received_postal"}

# Dossier attributes (events.md §2) counted in the received period (components 1.4, 3.5, 4.x).
SYNCED = "synced"  # 1.4
E_RESULT = "e_result"  # 4.1
RESULT_REQUIRED = "result_required"  # 4.1's denominator under the result_required policy
E_RESULT_WHERE_REQUIRED = "e_result_where_required"
DIGITIZED = "digitized"  # 4.2: components digitised, and an e-result where a result is required
REUSED_DIGITIZED = "reused_digitized"  # 4.4
FROM_DATA_STORE = "from_data_store"  # 4.5
POPULATION_DATA = "population_data"  # 4.7 (and 4.6 per procedure)
FEE_DATA = "fee_data"  # 3.5 per procedure
# 3.6 counts in the period of the processing start (first status 4): a second anchor month.
FEE_DOSSIERS = "fee_dossiers"
PAID_ONLINE_DOSSIERS = "paid_online_dossiers"  # also 3.4 per procedure
ATTRIBUTE_METRICS = {
    "synced_to_portal": SYNCED,
    "e_result": E_RESULT,
    "reused_digitized": REUSED_DIGITIZED,
    "from_data_store": FROM_DATA_STORE,
    "population_data": POPULATION_DATA,
    "fee_data": FEE_DATA,
}

CounterKey = tuple[str, str, str, str]  # unit, procedure, period, metric


@dataclass  # not frozen: see HistoryEvent
class Contribution:
    unit_code: str
    procedure_code: str
    received_month: str
    counts: dict[str, int] = field(default_factory=dict)
    # Open dossier whose on-time status depends on the evaluation instant.
    open_deadline: dt.datetime | None = None
    deadline_passed: bool = False
    open_undetermined: bool = False
    # Counts anchored on the processing start's month (3.6), when it differs from the received month's.
    start_month: str | None = None
    start_counts: dict[str, int] = field(default_factory=dict)
    # The next deadline of a step still open that the clock has not passed: the sweeper re-derives the
    # dossier then (its overdue steps grow with no event). Kept in the dossier's row, not in the JSON.
    next_step_deadline: dt.datetime | None = None

    def to_json(self) -> dict:
        out = {
            "u": self.unit_code,
            "p": self.procedure_code,
            "r": self.received_month,
            "c": self.counts,
            "d": self.open_deadline.isoformat() if self.open_deadline else None,
            "x": self.deadline_passed,
            "o": self.open_undetermined,
        }
        if self.start_counts:
            out["s"] = self.start_month
            out["sc"] = self.start_counts
        return out

    @classmethod
    def from_json(cls, data: Mapping | None) -> Contribution | None:
        if not data:
            return None
        deadline = data.get("d")
        return cls(
            unit_code=data["u"],
            procedure_code=data["p"],
            received_month=data["r"],
            counts=dict(data.get("c") or {}),
            open_deadline=dt.datetime.fromisoformat(deadline) if deadline else None,
            deadline_passed=bool(data.get("x")),
            open_undetermined=bool(data.get("o")),
            start_month=data.get("s"),  # absent in contributions stored by earlier versions
            start_counts=dict(data.get("sc") or {}),
        )


def contribution_of(
    facts: DossierFacts,
    timeliness: Timeliness,
    calendar: WorkingCalendar,
    now: dt.datetime,
    *,
    payment_period_fallback: str = "received",
    fee_bearing_procedure: bool = False,
) -> Contribution | None:
    """The compact contribution of a received dossier (None for one never received).

    A dossier bears fees (3.6's denominator) when its procedure does in the catalogue (as the portal
    counts it: some systems send fee lines only once paid) or when the dossier itself says so.
    """
    if facts.received_at is None:
        return None
    counts: dict[str, int] = {RECEIVED: 1, RECEIVED_BY_CHANNEL.get(facts.channel, "received_in_person"): 1}
    if facts.supplement_count:
        counts[SUPPLEMENT_REQUESTS] = facts.supplement_count
        key = DOSSIERS_ONE_SUPPLEMENT if facts.supplement_count == 1 else DOSSIERS_TWO_PLUS_SUPPLEMENTS
        counts[key] = 1
    # Steps still open count as steps, and as overdue steps once the clock has passed their deadline.
    open_steps = facts.open_step_deadlines
    open_overdue_steps = sum(1 for deadline in open_steps if deadline < now)
    if facts.steps or open_steps:
        counts[STEPS] = facts.steps + len(open_steps)
    if facts.overdue_steps or open_overdue_steps:
        counts[OVERDUE_STEPS] = facts.overdue_steps + open_overdue_steps
    if timeliness.no_deadline:
        counts[NO_DEADLINE] = 1
    if facts.returned:
        counts[RETURNED] = 1
    if facts.stopped:
        counts[STOPPED] = 1
    if facts.withdrawn:
        counts[WITHDRAWN] = 1

    if facts.ended_at is not None:
        counts[COMPLETED] = 1
        counts[PROCESSING_WORKING_SECONDS] = calendar.working_seconds(facts.received_at, facts.ended_at)

    open_undetermined = False
    if timeliness.fixed:
        counts[OVERDUE if timeliness.overdue else ON_TIME] = 1
        if facts.ended_at is not None:
            if timeliness.overdue:
                counts[COMPLETED_LATE] = 1
            else:
                counts[COMPLETED_EARLY if timeliness.early else COMPLETED_ON_TIME] = 1
        else:
            counts[OPEN_OVERDUE if timeliness.overdue else OPEN_IN_TIME] = 1
        if timeliness.overdue and facts.attributes.get("apology_letter") is False:
            counts[LATE_WITHOUT_APOLOGY] = 1
    else:
        open_undetermined = True

    attributes = facts.attributes
    for attribute, metric in ATTRIBUTE_METRICS.items():
        if attributes.get(attribute) is True:
            counts[metric] = 1
    if attributes.get("result_required") is True:
        counts[RESULT_REQUIRED] = 1
        if attributes.get("e_result") is True:
            counts[E_RESULT_WHERE_REQUIRED] = 1
    if attributes.get("digitized") is True and (
        attributes.get("result_required") is not True or attributes.get("e_result") is True
    ):
        counts[DIGITIZED] = 1

    start_month = None
    start_counts: dict[str, int] = {}
    if fee_bearing_procedure or attributes.get("fee_required") is True:
        payment: dict[str, int] = {FEE_DOSSIERS: 1}
        if attributes.get("paid_online") is True:
            payment[PAID_ONLINE_DOSSIERS] = 1
        received_month = periods_of(facts.received_at)[0]
        if facts.processing_started_at is not None:
            start_month = periods_of(facts.processing_started_at)[0]
        elif payment_period_fallback == "received":
            start_month = received_month
        if start_month == received_month:
            counts.update(payment)
            start_month = None
        elif start_month is not None:
            start_counts = payment

    deadline = timeliness.deadline if open_undetermined else None
    return Contribution(
        unit_code=facts.unit_code,
        procedure_code=facts.procedure_code,
        received_month=periods_of(facts.received_at)[0],
        counts=counts,
        open_deadline=deadline,
        deadline_passed=bool(deadline is not None and now > deadline),
        open_undetermined=open_undetermined,
        start_month=start_month,
        start_counts=start_counts,
        next_step_deadline=min((d for d in open_steps if d >= now), default=None),
    )


# Per-procedure rows are kept only for the metrics something reads per procedure: the catalogue
# components 3.2, 3.3, 3.4, 3.5 and 4.6 (received, received online, paid online, fee data, population
# data) and the per-procedure and per-field tables (on time, overdue, completed with their processing
# time, supplement requests); the all-procedures row keeps every metric. Any other per-procedure row
# would be written on the hot path and never read.
PROCEDURE_METRICS = frozenset({
    RECEIVED, RECEIVED_BY_CHANNEL[2], PAID_ONLINE_DOSSIERS, FEE_DATA, POPULATION_DATA,
    ON_TIME, OVERDUE, COMPLETED, PROCESSING_WORKING_SECONDS, SUPPLEMENT_REQUESTS, DOSSIERS_TWO_PLUS_SUPPLEMENTS,
})


@lru_cache(maxsize=4096)
def _periods_of_month(month: str) -> tuple[tuple[str, dt.datetime], ...]:
    first = parse_period(month).start
    return tuple((key, parse_period(key).end) for key in periods_of(first))


@lru_cache(maxsize=4096)
def stored_periods(period: str) -> tuple[str, ...]:
    """The counter rows a period's value is the sum of: a month is its own row; a quarter or a year is
    the sum of its months' rows plus its own row, which holds only the corrections of the dossiers
    still open (see :class:`CounterDelta`)."""
    parsed = parse_period(period)
    if parsed.kind == "month":
        return (period,)
    return (*parsed.months(), period)


def _open_split(contribution: Contribution, period_end: dt.datetime) -> tuple[str, str]:
    """An open dossier's (on time | overdue, open in time | open overdue) for a period ending then:
    overdue iff its deadline passed before min(now, end of the period)."""
    deadline = contribution.open_deadline
    overdue = contribution.deadline_passed and deadline is not None and deadline < period_end
    return (OVERDUE, OPEN_OVERDUE) if overdue else (ON_TIME, OPEN_IN_TIME)


class CounterDelta:
    """Counter changes of a batch, summed at the month grain.

    Counters are stored per month: a month's, its quarter's and its year's counts of a finished dossier
    are the same, so a quarter or a year is the sum of its months (:func:`stored_periods`) and an event
    writes one row per metric instead of three. Only an open dossier's on-time/overdue split depends on
    the period (on each period's end): its quarter and year rows hold the difference from its month's
    split, which is zero (no row) unless its deadline passed between the month's end and the period's.
    """

    __slots__ = ("changes",)

    def __init__(self) -> None:
        self.changes: defaultdict[CounterKey, int] = defaultdict(int)  # (unit, procedure, stored period, metric)

    def add(self, contribution: Contribution, sign: int = 1) -> None:
        changes = self.changes
        unit, procedure, month = contribution.unit_code, contribution.procedure_code, contribution.received_month
        for metric, value in contribution.counts.items():
            changes[(unit, procedure, month, metric)] += sign * value
        if contribution.start_counts and contribution.start_month:
            start = contribution.start_month
            for metric, value in contribution.start_counts.items():
                changes[(unit, procedure, start, metric)] += sign * value
        if contribution.open_undetermined:
            (_, month_end), *wider = _periods_of_month(month)
            in_month = _open_split(contribution, month_end)
            for metric in in_month:
                changes[(unit, procedure, month, metric)] += sign
            for period, period_end in wider:
                in_period = _open_split(contribution, period_end)
                if in_period != in_month:
                    for metric in in_period:
                        changes[(unit, procedure, period, metric)] += sign
                    for metric in in_month:
                        changes[(unit, procedure, period, metric)] -= sign

    def move(self, old: Contribution | None, new: Contribution | None) -> None:
        """Retract ``old`` and add ``new``."""
        if old == new:
            return
        if (
            old is not None
            and new is not None
            and old.open_undetermined == new.open_undetermined
            and (not new.open_undetermined
                 or (old.open_deadline == new.open_deadline and old.deadline_passed == new.deadline_passed))
            and (old.unit_code, old.procedure_code, old.received_month, old.start_month)
            == (new.unit_code, new.procedure_code, new.received_month, new.start_month)
        ):
            # The usual case (a status moves on): only some counts differ.
            unit, procedure = new.unit_code, new.procedure_code
            self._difference(unit, procedure, new.received_month, old.counts, new.counts)
            if new.start_month:
                self._difference(unit, procedure, new.start_month, old.start_counts, new.start_counts)
            return
        if old is not None:
            self.add(old, -1)
        if new is not None:
            self.add(new, 1)

    def _difference(self, unit: str, procedure: str, month: str, old: dict[str, int], new: dict[str, int]) -> None:
        changes = self.changes
        for metric, value in new.items():
            change = value - old.get(metric, 0)
            if change:
                changes[(unit, procedure, month, metric)] += change
        for metric, value in old.items():
            if metric not in new and value:
                changes[(unit, procedure, month, metric)] -= value

    def totals(self) -> dict[CounterKey, int]:
        """The change of every stored counter row (zeros included): the all-procedures row, and the
        procedure's own row for the metrics kept per procedure."""
        out: defaultdict[CounterKey, int] = defaultdict(int)
        for (unit, procedure, period, metric), value in self.changes.items():
            if not value:
                continue
            out[(unit, ALL_PROCEDURES, period, metric)] += value
            if metric in PROCEDURE_METRICS:
                out[(unit, procedure, period, metric)] += value
        return out

    def rows(self) -> list[tuple[str, str, str, str, int]]:
        """The non-zero changes as (unit, period, procedure, metric, value), sorted: the counters' primary
        key order, in which every writer locks rows, so concurrent workers cannot deadlock."""
        return sorted((unit, period, procedure, metric, value)
                      for (unit, procedure, period, metric), value in self.totals().items() if value)


def stored_rows(contribution: Contribution) -> dict[CounterKey, int]:
    """What a contribution adds to the stored counter rows (month rows, and corrections)."""
    delta = CounterDelta()
    delta.add(contribution)
    return {k: v for k, v in delta.totals().items() if v}


def expand(contribution: Contribution) -> dict[CounterKey, int]:
    """What a contribution adds to the counters as read, for every month, quarter and year that holds
    its received month (and its 3.6 start month): the rules' plain statement, independent of how the
    rows are stored (the reference the stored form is tested against)."""
    out: defaultdict[CounterKey, int] = defaultdict(int)
    unit, procedure = contribution.unit_code, contribution.procedure_code

    def count(period: str, metric: str, value: int) -> None:
        out[(unit, ALL_PROCEDURES, period, metric)] += value
        if metric in PROCEDURE_METRICS:
            out[(unit, procedure, period, metric)] += value

    for period, period_end in _periods_of_month(contribution.received_month):
        for metric, value in contribution.counts.items():
            count(period, metric, value)
        if contribution.open_undetermined:
            for metric in _open_split(contribution, period_end):
                count(period, metric, 1)
    if contribution.start_counts and contribution.start_month:
        for period, _ in _periods_of_month(contribution.start_month):
            for metric, value in contribution.start_counts.items():
                count(period, metric, value)
    return {k: v for k, v in out.items() if v}


def read_periods(stored: Mapping[CounterKey, int], periods: Iterable[str]) -> dict[CounterKey, int]:
    """The counters as read for ``periods``, from stored rows (what the API's queries do in SQL)."""
    out: defaultdict[CounterKey, int] = defaultdict(int)
    for period in periods:
        wanted = set(stored_periods(period))
        for (unit, procedure, row_period, metric), value in stored.items():
            if row_period in wanted:
                out[(unit, procedure, period, metric)] += value
    return {k: v for k, v in out.items() if v}


def accumulate_delta(
    delta: defaultdict[CounterKey, int],
    old: Contribution | None,
    new: Contribution | None,
) -> None:
    """Add ``new``'s stored rows and retract ``old``'s, in place (the reference :meth:`CounterDelta.move`
    is tested against)."""
    if old == new:
        return
    if old is not None:
        for key, value in stored_rows(old).items():
            delta[key] -= value
    if new is not None:
        for key, value in stored_rows(new).items():
            delta[key] += value


def total_counts(contributions: Iterable[Contribution]) -> dict[CounterKey, int]:
    """Stored counter rows computed from scratch (used by replay checks and tests)."""
    totals: defaultdict[CounterKey, int] = defaultdict(int)
    for contribution in contributions:
        for key, value in stored_rows(contribution).items():
            totals[key] += value
    return {k: v for k, v in totals.items() if v}
