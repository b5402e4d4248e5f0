"""QĐ 766 components, groups and the 100-point total (indicators.md §1, §2, §6). Pure: no I/O.

Scores are computed from exact ratios (fractions), rounded half-up to 2 decimals per component;
groups and the total are sums of the rounded component scores, as the portal publishes them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from fractions import Fraction
from typing import Literal

from services.indicators.rules import counters as c
from services.indicators.rules.catalogue import CatalogueCounts
from services.indicators.rules.feedback import FeedbackCounts

Rule = Literal["linear", "cap", "none"]
Empty = Literal["zero", "full", "no_data"]


@dataclass(frozen=True)
class ComponentDef:
    id: str
    group: str
    name: str
    max: int
    rule: Rule = "linear"
    cap: Fraction | None = None
    when_empty: Empty = "zero"  # a zero denominator scores 0, the full maximum, or no_data


@dataclass(frozen=True)
class GroupDef:
    code: str
    name: str
    max: int


GROUPS: tuple[GroupDef, ...] = (
    GroupDef("CKMB", "Công khai, minh bạch", 18),
    GroupDef("TDGQ", "Tiến độ giải quyết", 20),
    GroupDef("CLGQ", "Dịch vụ công trực tuyến", 12),
    GroupDef("TTTT", "Thanh toán trực tuyến", 10),
    GroupDef("MDSH", "Số hóa hồ sơ", 22),
    GroupDef("MDHL", "Mức độ hài lòng", 18),
)

# The decision's five groups; III is the portal's CLGQ + TTTT.
DECISION_GROUPS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("I", "Công khai, minh bạch", ("CKMB",)),
    ("II", "Tiến độ giải quyết", ("TDGQ",)),
    ("III", "Dịch vụ công trực tuyến, thanh toán trực tuyến", ("CLGQ", "TTTT")),
    ("IV", "Mức độ số hóa hồ sơ", ("MDSH",)),
    ("V", "Mức độ hài lòng", ("MDHL",)),
)

F = Fraction
COMPONENTS: tuple[ComponentDef, ...] = (
    ComponentDef("1.1", "CKMB", "Tỷ lệ TTHC công bố đúng hạn", 6, when_empty="no_data"),
    ComponentDef("1.2", "CKMB", "Tỷ lệ TTHC được cập nhật, công khai đúng hạn", 4, when_empty="no_data"),
    ComponentDef("1.3", "CKMB", "Tỷ lệ TTHC công khai đầy đủ các bộ phận tạo thành", 2, when_empty="no_data"),
    ComponentDef("1.4", "CKMB", "Tỷ lệ hồ sơ đồng bộ trạng thái lên Cổng DVCQG", 6, when_empty="no_data"),
    ComponentDef("2.1", "TDGQ", "Tỷ lệ hồ sơ xử lý trước hạn, đúng hạn", 20),
    ComponentDef("2.2", "TDGQ", "Thời gian giải quyết trung bình", 0, rule="none"),
    ComponentDef("3.1", "CLGQ", "Tỷ lệ TTHC cung cấp dịch vụ công trực tuyến", 2, "cap", F(4, 5)),
    ComponentDef("3.2", "CLGQ", "Tỷ lệ DVCTT có phát sinh hồ sơ", 4),
    ComponentDef("3.3", "CLGQ", "Tỷ lệ hồ sơ trực tuyến", 6, "cap", F(1, 2)),
    ComponentDef("3.4", "TTTT", "TTHC có giao dịch thanh toán trực tuyến", 2, "cap", F(4, 5)),
    ComponentDef(
        "3.5", "TTTT", "TTHC có nghĩa vụ tài chính được tích hợp thanh toán trực tuyến", 2, "cap", F(4, 5)
    ),
    ComponentDef("3.6", "TTTT", "Tỷ lệ hồ sơ thanh toán trực tuyến", 6),
    ComponentDef("4.1", "MDSH", "Tỷ lệ hồ sơ cấp kết quả điện tử", 6, when_empty="no_data"),
    ComponentDef("4.2", "MDSH", "Tỷ lệ hồ sơ thực hiện số hóa", 4, when_empty="no_data"),
    ComponentDef("4.3", "MDSH", "Tỷ lệ cung cấp dịch vụ chứng thực bản sao điện tử", 2, when_empty="full"),
    ComponentDef("4.4", "MDSH", "Tỷ lệ hồ sơ khai thác, sử dụng lại dữ liệu số hóa", 2, "cap", F(4, 5),
                 when_empty="no_data"),
    ComponentDef("4.5", "MDSH", "Tỷ lệ hồ sơ số hóa kết nối, chia sẻ dữ liệu", 4, when_empty="no_data"),
    ComponentDef("4.6", "MDSH", "Tỷ lệ TTHC kết nối, chia sẻ dữ liệu dân cư", 2, when_empty="no_data"),
    ComponentDef("4.7", "MDSH", "Tỷ lệ hồ sơ sử dụng dữ liệu dân cư", 2, when_empty="no_data"),
    ComponentDef("5.1", "MDHL", "Tỷ lệ PAKN xử lý đúng hạn", 6, when_empty="full"),
    ComponentDef("5.2", "MDHL", "Tỷ lệ hài lòng xử lý PAKN", 6, when_empty="full"),
    ComponentDef("5.3", "MDHL", "Tỷ lệ hài lòng tiếp nhận, giải quyết TTHC", 6, "cap", F(9, 10)),
)
COMPONENTS_BY_ID = {d.id: d for d in COMPONENTS}


def round_half_up(value: Fraction | int | float, places: int = 2) -> float:
    if isinstance(value, float):
        return float(Decimal(value).quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP))
    # Exact integer arithmetic (a hot path: every component of every unit of a ranking).
    scale = 10**places
    numerator, denominator = value.numerator * scale, value.denominator
    magnitude = (2 * abs(numerator) + denominator) // (2 * denominator)
    return (magnitude if numerator >= 0 else -magnitude) / scale


@dataclass(frozen=True)
class Measure:
    """A component's exact ratio inputs. ``None`` for a component instead means: inputs never fed."""

    numerator: int | Fraction
    denominator: int


@dataclass(frozen=True)
class ComponentScore:
    definition: ComponentDef
    status: Literal["ok", "no_data"]
    numerator: int | float | None
    denominator: int | None
    ratio: float | None  # percentage, 2 decimals (2.2: mean working days)
    score: float
    exact: Fraction = Fraction(0)  # the unrounded score (the portal's TTTT formula sums these)

    def as_dict(self) -> dict:
        return {
            "id": self.definition.id,
            "name": self.definition.name,
            "status": self.status,
            "numerator": self.numerator,
            "denominator": self.denominator,
            "ratio": self.ratio,
            "score": self.score,
            "max": self.definition.max,
        }


def score_component(definition: ComponentDef, measure: Measure | None) -> ComponentScore:
    if measure is None:
        return ComponentScore(definition, "no_data", None, None, None, 0.0)
    num, den = measure.numerator, measure.denominator
    if definition.rule == "none":  # tracked, no points (2.2: mean working days)
        mean = round_half_up(Fraction(num) / den) if den else 0.0
        return ComponentScore(definition, "ok", _plain(num), den, mean, 0.0)
    if den == 0:
        if definition.when_empty == "no_data":
            return ComponentScore(definition, "no_data", _plain(num), 0, None, 0.0)
        score = float(definition.max) if definition.when_empty == "full" else 0.0
        return ComponentScore(definition, "ok", _plain(num), 0, 100.0 if score else 0.0, score, Fraction(int(score)))
    ratio = Fraction(num) / den
    if definition.rule == "cap":
        assert definition.cap is not None
        exact = min(Fraction(definition.max), definition.max * ratio / definition.cap)
    else:
        exact = definition.max * ratio
    return ComponentScore(definition, "ok", _plain(num), den, round_half_up(100 * ratio), round_half_up(exact), exact)


def _plain(value: int | Fraction) -> int | float:
    if isinstance(value, Fraction):
        return value.numerator if value.denominator == 1 else round_half_up(value, 4)
    return value


@dataclass(frozen=True)
class ScoreCard:
    components: dict[str, ComponentScore]
    groups: list[dict]
    total: float
    max_total: int
    points_without_data: int
    rating: str

    def as_dict(self) -> dict:
        return {
            "total": {"score": self.total, "max": self.max_total, "points_without_data": self.points_without_data},
            "rating": self.rating,
            "groups": self.groups,
        }


def rating_of(total: float, bands: list[tuple[float, str]]) -> str:
    for minimum, name in sorted(bands, key=lambda b: -b[0]):
        if total >= minimum:
            return name
    return bands[-1][1]


def build_scorecard(
    measures: Mapping[str, Measure | None],
    *,
    rating_bands: list[tuple[float, str]],
    layout: Literal["portal", "decision"] = "portal",
    scoring_overrides: Mapping[str, ComponentDef] | None = None,
    exact_groups: tuple[str, ...] = ("TTTT",),
) -> ScoreCard:
    """Score every component, the six groups (or the decision's five) and the total.

    A group listed in ``exact_groups`` is scored as the portal publishes TTTT: the exact component
    scores summed, then rounded once; other groups are sums of the rounded component scores.
    """
    definitions = {**COMPONENTS_BY_ID, **(scoring_overrides or {})}
    scored = {cid: score_component(definitions[cid], measures.get(cid)) for cid in definitions}
    portal_groups = []
    for group in GROUPS:
        members = [scored[d.id] for d in COMPONENTS if d.group == group.code]
        if group.code in exact_groups:
            group_score = round_half_up(sum((m.exact for m in members), Fraction(0)))
        else:
            group_score = round(sum(m.score for m in members), 2)
        portal_groups.append(
            {
                "code": group.code,
                "name": group.name,
                "score": group_score,
                "max": group.max,
                "components": [m.as_dict() for m in members],
            }
        )
    groups = portal_groups
    if layout == "decision":
        by_code = {g["code"]: g for g in portal_groups}
        groups = [
            {
                "code": code,
                "name": name,
                "score": round(sum(by_code[p]["score"] for p in parts), 2),
                "max": sum(by_code[p]["max"] for p in parts),
                "components": [comp for p in parts for comp in by_code[p]["components"]],
            }
            for code, name, parts in DECISION_GROUPS
        ]
    total = round(sum(g["score"] for g in portal_groups), 2)
    missing = sum(s.definition.max for s in scored.values() if s.status == "no_data")
    return ScoreCard(
        components=scored,
        groups=groups,
        total=total,
        max_total=sum(g.max for g in GROUPS),
        points_without_data=missing,
        rating=rating_of(total, rating_bands),
    )


# Components whose numerator and denominator are two of the metrics a dossier is counted in
# (rules/counters.py: contribution_of): (numerator, denominator). The score sums them over dossiers; a
# dossier costs points in one when it is counted in the denominator and not in the numerator (the
# drill-down's condition, services/api/drilldown.py).
COUNTED = {
    "1.4": (c.SYNCED, c.RECEIVED),  # the score's denominator is also at least the reported total
    "3.3": (c.RECEIVED_BY_CHANNEL[2], c.RECEIVED),
    "3.6": (c.PAID_ONLINE_DOSSIERS, c.FEE_DOSSIERS),
    "4.2": (c.DIGITIZED, c.RECEIVED),
    "4.4": (c.REUSED_DIGITIZED, c.RECEIVED),
    "4.5": (c.FROM_DATA_STORE, c.RECEIVED),
    "4.7": (c.POPULATION_DATA, c.RECEIVED),
}


def counted_metrics(policy) -> dict[str, tuple[str, str]]:
    """:data:`COUNTED` with 4.1, whose denominator is a policy: every received dossier, or those whose
    procedure requires a result."""
    e_result = ((c.E_RESULT_WHERE_REQUIRED, c.RESULT_REQUIRED) if policy.e_result_denominator == "result_required"
                else (c.E_RESULT, c.RECEIVED))
    return {**COUNTED, "4.1": e_result}


def _counted(counts: Mapping[str, int], metrics: tuple[str, str]) -> Measure:
    numerator, denominator = metrics
    return Measure(counts.get(numerator, 0), counts.get(denominator, 0))


def satisfaction_measure(counts: Mapping[str, int], complaint_dossiers: int) -> Measure:
    """5.3: dossiers received on time and without a complaint or a not-satisfied rating, of all received."""
    return Measure(max(0, counts.get(c.ON_TIME, 0) - complaint_dossiers), counts.get(c.RECEIVED, 0))


def dossier_measures(counts: Mapping[str, int], *, seconds_per_day: int) -> dict[str, Measure | None]:
    """The components computed from dossier counters alone (2.1, 2.2, 3.3)."""
    received = counts.get(c.RECEIVED, 0)
    completed = counts.get(c.COMPLETED, 0)
    return {
        "2.1": Measure(counts.get(c.ON_TIME, 0), received),
        "2.2": Measure(Fraction(counts.get(c.PROCESSING_WORKING_SECONDS, 0), seconds_per_day), completed),
        "3.3": _counted(counts, COUNTED["3.3"]),
    }


@dataclass(frozen=True)
class ScoreInputs:
    """Everything the 22 components are computed from, for one unit's subtree and one period.

    ``counts``: the dossier counters summed over the subtree (counters.py). ``None`` for an input means
    it was never fed (its components say ``no_data``).
    """

    counts: Mapping[str, int]
    catalogue: CatalogueCounts | None = None
    feedback: FeedbackCounts | None = None
    reported_received: int | None = None
    complaint_dossiers: int = 0  # received in the period, on time, with a complaint or a not-satisfied rating
    communes: int | None = None  # communes in the subtree whose e-certified-copy offer is known
    communes_e_copy: int = 0


def measures_of(inputs: ScoreInputs, policy, *, seconds_per_day: int) -> dict[str, Measure | None]:
    """Every component's exact numerator and denominator (policy: shared.settings.PolicySettings)."""
    counts = inputs.counts
    out: dict[str, Measure | None] = dict(dossier_measures(counts, seconds_per_day=seconds_per_day))
    cat = inputs.catalogue
    if policy.online_ratio_denominator == "online_procedures":
        out["3.3"] = (
            Measure(cat.online_in_online_procedures, cat.received_in_online_procedures) if cat is not None else None
        )
    for cid, metrics in counted_metrics(policy).items():
        if cid != "3.3":  # dossier_measures' (or the catalogue's, by policy)
            out[cid] = _counted(counts, metrics)
    synced = out["1.4"]
    out["1.4"] = Measure(synced.numerator, max(synced.denominator, inputs.reported_received or 0))
    out["5.3"] = satisfaction_measure(counts, inputs.complaint_dossiers)
    if cat is None:
        for cid in ("1.1", "1.2", "1.3", "3.1", "3.2", "3.4", "3.5", "4.6"):
            out[cid] = None
    else:
        out["1.1"] = Measure(cat.published_on_time, cat.published)
        out["1.2"] = Measure(cat.public_on_time, cat.due_public)
        out["1.3"] = Measure(cat.complete, cat.procedures)
        out["3.1"] = Measure(cat.online_procedures, cat.procedures)
        out["3.2"] = Measure(cat.services_used, cat.services)
        out["3.4"] = Measure(cat.paid_online_procedures, cat.fee_procedures)
        out["3.5"] = Measure(cat.fee_data_procedures, cat.fee_procedures)
        out["4.6"] = Measure(cat.population_procedures, cat.individual_procedures)
    if inputs.communes is None:
        out["4.3"] = None
    elif inputs.communes == 0 and policy.e_copy_without_communes == "no_data":
        out["4.3"] = None
    else:
        out["4.3"] = Measure(inputs.communes_e_copy, inputs.communes)
    fb = inputs.feedback
    out["5.1"] = Measure(fb.on_time, fb.items) if fb is not None else None
    out["5.2"] = Measure(fb.satisfied, fb.items) if fb is not None else None
    return out


def definitions_for(policy) -> dict[str, ComponentDef]:
    """Scoring overrides chosen by policy (4.2 linear, or capped at 0.8)."""
    overrides = {}
    if policy.digitisation_scoring == "cap_0_8":
        base = COMPONENTS_BY_ID["4.2"]
        overrides["4.2"] = ComponentDef(base.id, base.group, base.name, base.max, "cap", F(4, 5), base.when_empty)
    return overrides


def exact_groups_for(policy) -> tuple[str, ...]:
    return ("TTTT",) if policy.payment_group_score == "portal_formula" else ()


def score_inputs(inputs: ScoreInputs, policy, *, seconds_per_day: int, layout: str = "portal") -> ScoreCard:
    return build_scorecard(
        measures_of(inputs, policy, seconds_per_day=seconds_per_day),
        rating_bands=policy.rating_bands,
        layout=layout,  # type: ignore[arg-type]
        scoring_overrides=definitions_for(policy),
        exact_groups=exact_groups_for(policy),
    )


# The directives' counters (targets.md), each with the counter it is a share of (a target's counter ratio).
DIRECTIVE_COUNTERS: dict[str, str] = {
    c.RETURNED: c.RECEIVED,
    c.STOPPED: c.RECEIVED,
    c.WITHDRAWN: c.RECEIVED,
    c.DOSSIERS_TWO_PLUS_SUPPLEMENTS: c.RECEIVED,
    c.LATE_WITHOUT_APOLOGY: c.OVERDUE,
    c.OVERDUE_STEPS: c.STEPS,
}


def directive_counters(counts: Mapping[str, int]) -> dict[str, int]:
    """The directives' counters of a unit and period (the league table's ``directives``)."""
    return {name: counts.get(name, 0) for name in DIRECTIVE_COUNTERS}


@dataclass
class CounterView:
    """The API's ``counters`` object: the operational counters users watch (indicators.md §4)."""

    counts: Mapping[str, int]
    extra: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        g = self.counts.get
        return {
            "received": g(c.RECEIVED, 0),
            "on_time": g(c.ON_TIME, 0),
            "overdue": g(c.OVERDUE, 0),
            "received_in_person": g("received_in_person", 0),
            "received_online": g("received_online", 0),
            "received_postal": g("received_postal", 0),
            "supplement_requests": g(c.SUPPLEMENT_REQUESTS, 0),
            "dossiers_with_1_supplement": g(c.DOSSIERS_ONE_SUPPLEMENT, 0),
            "dossiers_with_2plus_supplements": g(c.DOSSIERS_TWO_PLUS_SUPPLEMENTS, 0),
            "overdue_steps": g(c.OVERDUE_STEPS, 0),
            "open_in_time": g(c.OPEN_IN_TIME, 0),
            "open_overdue": g(c.OPEN_OVERDUE, 0),
            "completed": g(c.COMPLETED, 0),
            "completed_early": g(c.COMPLETED_EARLY, 0),
            "completed_on_time": g(c.COMPLETED_ON_TIME, 0),
            "completed_late": g(c.COMPLETED_LATE, 0),
            "late_without_apology": g(c.LATE_WITHOUT_APOLOGY, 0),
            "returned": g(c.RETURNED, 0),
            "stopped": g(c.STOPPED, 0),
            "withdrawn": g(c.WITHDRAWN, 0),
            "steps": g(c.STEPS, 0),
            "no_deadline_flagged": g(c.NO_DEADLINE, 0),
            **self.extra,
        }
