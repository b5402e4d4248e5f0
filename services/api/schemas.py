"""The shapes the query API and the feeds answer and take, declared once so OpenAPI documents them.

Scores and league tables are served as the score cards' stored bytes (services/indicators/cards.py):
their models document those bytes and are not re-validated per request. The other routes return dicts
that FastAPI validates against these models (``response_model_exclude_unset``: a key a route leaves out
stays out)."""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from services.indicators.rules.catalogue import ONLINE_LEVELS
from services.indicators.rules.feedback import KINDS, RATINGS
from shared.timeutil import PERIOD_OR_EMPTY_PATTERN, PERIOD_PATTERN

Number = int | float  # a count, or a fraction's rounded value (kept as the JSON number it is)


class Answer(BaseModel):
    """An answer's shape: a key a route sends that its model does not declare is an error (in tests),
    not a key silently dropped or left out of the documentation. Fields are declared in the order the
    route builds them: the JSON keeps its key order."""

    model_config = ConfigDict(extra="forbid")


class UnitInfo(Answer):
    code: str
    name: str
    level: str = Field(description="PROVINCE, DEPARTMENT, DISTRICT, COMMUNE …")
    parent: str | None
    identifier: str | None = Field(description="the unit's identifier in the portal's reference data")


class ComponentScore(Answer):
    id: str = Field(description="1.1 … 5.3")
    name: str
    status: Literal["ok", "no_data"] = Field(description="no_data: its inputs were never fed")
    numerator: Number | None
    denominator: int | None
    ratio: float | None = Field(description="percent, 2 decimals (2.2: mean working days)")
    score: float
    max: int


class GroupScore(Answer):
    code: str = Field(description="CKMB, TDGQ, CLGQ, TTTT, MDSH, MDHL (the decision's layout: its five)")
    name: str
    score: float
    max: int
    components: list[ComponentScore]


class TotalScore(Answer):
    score: float
    max: int
    points_without_data: int = Field(description="points of components whose inputs were never fed")


class Counters(Answer):
    """The operational counters of the unit's subtree in the period (indicators.md §4)."""

    received: int
    on_time: int
    overdue: int
    received_in_person: int
    received_online: int
    received_postal: int
    supplement_requests: int
    dossiers_with_1_supplement: int
    dossiers_with_2plus_supplements: int
    overdue_steps: int
    open_in_time: int
    open_overdue: int
    completed: int
    completed_early: int
    completed_on_time: int
    completed_late: int
    late_without_apology: int
    returned: int
    stopped: int
    withdrawn: int
    steps: int
    no_deadline_flagged: int


class RatingBand(Answer):
    min: float
    rating: str


class Policies(Answer):
    """The policies (settings) the scores were computed under."""

    due_time: str
    online_ratio_denominator: str
    e_result_denominator: str
    digitisation_scoring: str
    payment_group_score: str
    payment_period_fallback: str
    e_copy_without_communes: str
    dossier_complaint_kinds: list[str]
    publication_lead_days: int
    publication_lead_days_ministry: int
    made_public_lag_days: int
    made_public_lag_days_ministry: int
    rating_bands: list[RatingBand]


class ScoreDocument(Answer):
    """``GET /v1/scores/{unit}``: the unit's (its subtree's) 22 components, groups, total and rating."""

    unit: UnitInfo
    period: str
    as_of: str = Field(description="when the score was computed (Vietnam time)")
    total: TotalScore
    rating: str
    groups: list[GroupScore]
    counters: Counters
    policies: Policies


class LeagueRow(Answer):
    unit: UnitInfo
    total: float
    rating: str
    groups: dict[str, float] = Field(description="each group's score by its code")
    received: int
    directives: dict[str, int] = Field(description="the directives' counters (returned, stopped, …)")
    rank: int


class LeagueTable(Answer):
    parent: str
    period: str
    items: list[LeagueRow]
    next_cursor: str | None
    count: int = Field(description="rows in the whole table")


class FlaggedDossier(Answer):
    dossier_code: str
    unit_code: str
    procedure_code: str
    status: int
    channel: int | None
    received_at: str | None
    due_at: str | None
    ended_at: str | None
    deadline: str | None
    supplement_requests: int
    overdue_steps: int
    overdue: bool
    reasons: list[str] = Field(description="late_end, open_past_due, overdue_step, not_online …")
    flags: list[str] = Field(description="what its input lacked although it counts (input_gaps)")
    status_name: str | None


class FlaggedDossiers(Answer):
    unit: str
    period: str
    flag: str
    items: list[FlaggedDossier]
    next_cursor: str | None


class CostlyDossier(Answer):
    kind: Literal["dossier"]
    dossier_code: str
    unit_code: str
    procedure_code: str
    status: int
    status_name: str | None
    channel: int | None
    received_at: str | None
    due_at: str | None
    ended_at: str | None
    reasons: list[str]
    flags: list[str]


class CostlyProcedure(Answer):
    kind: Literal["procedure"]
    procedure_code: str
    reason: str
    reasons: list[str]


class CostlyFeedback(Answer):
    kind: Literal["feedback"]
    feedback_id: str
    unit_code: str
    dossier_code: str | None
    reasons: list[str]


class CostlyUnit(Answer):
    kind: Literal["unit"]
    unit_code: str
    name: str
    reasons: list[str]


class ComponentItems(Answer):
    unit: str
    period: str
    component: str
    name: str
    items: list[CostlyDossier | CostlyProcedure | CostlyFeedback | CostlyUnit] = Field(
        description="by kind: the dossiers, procedures, feedback items or communes that cost points")
    next_cursor: str | None


class TurningDossier(Answer):
    dossier_code: str
    unit_code: str
    procedure_code: str
    status: int
    status_name: str | None
    received_at: str | None
    due_at: str | None
    turns_overdue_at: str | None


class ProjectedComponent(ComponentScore):
    turning_overdue_in_period: int


class EarlyWarning(Answer):
    unit: str
    period: str
    days: int
    horizon: str
    items: list[TurningDossier]
    current_2_1: ComponentScore
    projected_2_1: ProjectedComponent


class PortalRow(Answer):
    """A unit's row in the portal's own field names (which fields depends on the tree)."""

    model_config = ConfigDict(extra="allow")

    departmentId: None = None  # noqa: N815 - the portal's field names
    departmentName: str  # noqa: N815
    departmentCode: str  # noqa: N815


class PortalTreeData(Answer):
    parent: PortalRow
    children: list[PortalRow]


class PortalTree(Answer):
    code: Literal["OK"]
    period: str
    data: PortalTreeData


class SnapshotInfo(Answer):
    id: int
    period: str
    label: str | None
    kind: str = Field(description="on_demand, or the scheduled kind")
    taken_at: str


class SnapshotTaken(Answer):
    id: int
    period: str
    kind: str
    label: str | None
    taken_at: str
    units: int = Field(description="units frozen")


class Snapshots(Answer):
    items: list[SnapshotInfo]


class SnapshotTakeRequest(BaseModel):
    period: str | None = Field(None, pattern=PERIOD_OR_EMPTY_PATTERN,
                               description="2026-08, 2026-Q3 or 2026; default: this month")
    label: str | None = None


class ComponentState(Answer):
    status: str | None
    numerator: Number | None
    denominator: int | None
    score: float | None


class ComponentChange(Answer):
    id: str
    name: str | None
    before: ComponentState
    after: ComponentState
    score_delta: float
    why: list[str]


class UnitChanges(Answer):
    unit: str
    total_before: float
    total_now: float
    changes: list[ComponentChange]


class SnapshotWithPolicies(Answer):
    id: int
    period: str
    kind: str
    label: str | None
    taken_at: str
    policies: dict[str, Any] = Field(description="the policies in force when it was taken")


class SnapshotComparison(Answer):
    snapshot: SnapshotWithPolicies
    policies_now: Policies
    units: list[UnitChanges]


# --- feeds ---------------------------------------------------------------------------------------------

class ItemResult(Answer):
    """One item of a batch: accepted, duplicate, or rejected with a machine-readable reason."""

    index: int
    status: Literal["accepted", "duplicate", "rejected"]
    reason: str | None = None
    detail: str | None = None
    field: str | None = None
    unit_code: str | None = None
    procedure_code: str | None = None
    feedback_id: str | None = None


class CatalogueWritten(Answer):
    accepted: int
    rejected: int
    versions_written: int
    dossiers_recomputed: int
    results: list[ItemResult]


class FeedbackWritten(Answer):
    accepted: int
    duplicates: int
    rejected: int
    results: list[ItemResult]


class TotalsWritten(Answer):
    accepted: int
    rejected: int
    results: list[ItemResult]


class CatalogueItem(Answer):
    unit_code: str
    procedure_code: str
    valid_from: str
    name: str | None
    field_code: str | None
    field_name: str | None
    online_level: str
    online_services: int
    fee_required: bool
    for_individuals: bool
    result_required: bool | None
    legal_days: Number | None
    decision_date: str | None
    legal_basis_effective_date: str | None
    made_public_date: str | None
    complete_parts: bool | None


class Catalogue(Answer):
    unit: str
    as_of: str
    count: int
    items: list[CatalogueItem]


class ProcedureIn(BaseModel):
    """One procedure as a unit handles it, from a version start on (events.md §5)."""

    unit_code: str = Field(min_length=1, max_length=64, description="must exist in the unit tree")
    procedure_code: str = Field(min_length=1, max_length=64)
    valid_from: dt.date | dt.datetime | None = Field(
        None, description="a date (YYYY-MM-DD) or an RFC 3339 time with offset, from 2000 up to 2100; default: the "
                          "query's valid_from, else now")
    name: str | None = Field(None, max_length=1000)
    field_code: str | None = Field(None, max_length=1000)
    field_name: str | None = Field(None, max_length=1000)
    online_level: Literal[ONLINE_LEVELS] | None = None
    online_services: int | None = Field(None, ge=0, le=2**31 - 1)
    legal_days: float | None = Field(None, ge=0, description="legal processing time, working days")
    fee_required: bool | None = None
    for_individuals: bool | None = None
    result_required: bool | None = None
    complete_parts: bool | None = None
    decision_date: dt.date | None = None
    legal_basis_effective_date: dt.date | None = None
    made_public_date: dt.date | None = None


class FeedbackIn(BaseModel):
    """A feedback (PAKN) event."""

    feedback_id: str = Field(min_length=1, max_length=128)
    unit_code: str = Field(min_length=1, max_length=64, description="must exist in the unit tree")
    kind: Literal[KINDS]
    occurred_at: dt.datetime = Field(description="RFC 3339 with offset, from 2000 up to 2100")
    due_at: dt.datetime | None = Field(None, description="RFC 3339 with offset")
    rating: Literal[RATINGS] | None = Field(None, description="required for kind rated")
    dossier_code: str | None = Field(None, max_length=64)


class ReportedTotalIn(BaseModel):
    unit_code: str = Field(min_length=1, max_length=64, description="must exist in the unit tree")
    period: str = Field(pattern=PERIOD_PATTERN, description="2026-08, 2026-Q3 or 2026")
    received: int = Field(ge=0, le=2**63 - 1)
