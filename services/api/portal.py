"""Read side in the national portal's shapes: ``GET /v1/portal/{group}-tree?unit=H44&period=2026-08``.

Dashboards built on the portal's evaluation responses (dichvucong.gov.vn ``reporting/evaluation``)
work unchanged: ``{"code": "OK", "data": {"parent": {...}, "children": [...]}}``, field names as the
portal's JSON (the columns of ``spec/reference/*.csv``). Values come from the generic scorecard
(the components' ``{id, numerator, denominator, ratio, score, max, status}``) and the counters, never
re-derived here. The parent row is the unit's subtree; the children are its direct subordinates.

Trees: ``progress`` (Tiến độ giải quyết), ``online`` (Dịch vụ công trực tuyến), ``payment`` (Thanh
toán trực tuyến), ``digitized`` (Số hóa hồ sơ), ``satisfaction`` (Mức độ hài lòng), ``transparency``
(Công khai, minh bạch). What dvc766 does not compute (the portal's ``departmentId``, PAKN
classification shares, online dossiers split by on-time) is ``null``.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import ROUND_HALF_UP, Decimal
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request

from services.api.params import QueryPeriod, QueryUnit
from services.api.schemas import PortalTree
from services.indicators.cards import Card, read_cards
from shared.auth import Principal, reader
from shared.problems import Problem
from shared.runtime import Runtime
from shared.units import Unit


router = APIRouter(tags=["portal"])

# Portal metric codes of the metric-list trees, with the portal's names (shown to users as is).
METRICS: dict[str, list[tuple[str, str, str]]] = {
    "digitized": [
        ("ORIGINAL_RESULT_AVAILABLE", "4.1",
         "Tỷ lệ hồ sơ thủ tục hành chính có cấp kết quả giải quyết thủ tục hành chính điện tử"),
        ("SO_HOA_GIAY_TO_GIAI_QUYET", "4.2", "Tỷ lệ hồ sơ thủ tục hành chính thực hiện số hóa hồ sơ"),
        ("REUSED_DIGITIZED_DATA", "4.4", "Tỷ lệ hồ sơ khai thác, sử dụng lại thông tin, dữ liệu số hóa"),
        ("SYNCED_WITH_DVCQG_PERSONAL_STORAGE", "4.5",
         "Tỷ lệ hồ sơ TTHC được số hóa có kết nối, chia sẻ dữ liệu phục vụ tái sử dụng"),
        ("CITIZEN_DATA_CONNECTED_DOSSIER", "4.7", "Tỷ lệ hồ sơ TTHC có sử dụng thông tin, dữ liệu dân cư"),
        ("CITIZEN_DATA_CONNECTED_FORMALITY", "4.6",
         "Tỷ lệ TTHC triển khai kết nối, chia sẻ dữ liệu dân cư phục vụ GQ TTHC"),
        ("ELECTRONIC_CERTIFIED_COPY", "4.3", "Tỷ lệ cung cấp dịch vụ chứng thực bản sao điện tử từ bản chính"),
    ],
    "satisfaction": [
        ("DOSSIER_RECEIVING_SATISFACTION", "5.3", "Tỷ lệ hài lòng trong tiếp nhận, giải quyết TTHC"),
        ("PETITION_PROCESSING_ON_TIME", "5.1", "Tỷ lệ PAKN xử lý đúng hạn"),
        ("PETITION_HANDLING_SATISFACTION", "5.2", "Tỷ lệ hài lòng trong xử lý PAKN"),
    ],
    "transparency": [
        ("PUBLISH_ON_TIME", "1.1", "Tỷ lệ TTHC công bố đúng hạn"),
        ("PUBLIC_UPDATE_ON_TIME", "1.2", "Tỷ lệ TTHC cập nhật, công khai đúng hạn"),
        ("PUBLIC_CONTENT_FULL", "1.3", "Tỷ lệ TTHC công khai đầy đủ nội dung"),
        ("DOSSIER_SYNC", "1.4", "Tỷ lệ hồ sơ đồng bộ lên Cổng DVCQG"),
    ],
}
GROUP_OF_TREE = {"progress": "TDGQ", "online": "CLGQ", "payment": "TTTT", "digitized": "MDSH",
                 "satisfaction": "MDHL", "transparency": "CKMB"}
TREES = tuple(GROUP_OF_TREE)


def _round2(value: float) -> float:
    return float(Decimal(str(value)).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP))


class Row:
    """One unit's figures for a tree: its score card and its subtree's counts."""

    def __init__(self, unit: Unit, card: Card, *, parent: bool) -> None:
        self.unit, self.counts, self.parent = unit, card.counts, parent
        groups = card.as_dict()["groups"]
        self.components = {c["id"]: c for g in groups for c in g["components"]}
        self.groups = {g["code"]: g for g in groups}

    def c(self, component: str, key: str) -> Any:
        return self.components[component][key]

    def head(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "departmentId": None,  # the portal's own id; dvc766 identifies units by code
            "departmentName": self.unit.name,
            "departmentCode": self.unit.code,
        }
        if not self.parent:
            out["level"] = portal_level(self.unit)
        return out

    def group_score(self, tree: str) -> tuple[float, int, float]:
        group = self.groups[GROUP_OF_TREE[tree]]
        score, maximum = group["score"], group["max"]
        return score, maximum, _round2(100 * score / maximum) if maximum else 0.0


def portal_level(unit: Unit) -> str:
    """The portal calls a provincial agency (sở, ban, ngành) PROVINCE, like its province."""
    return "PROVINCE" if unit.level == "DEPARTMENT" else unit.level


def _classification(unit: Unit, parent: bool) -> dict[str, str]:
    if parent:
        return {"departmentType": unit.level, "departmentLevel": unit.level, "agencyLevel": "level_1"}
    kind = {"DEPARTMENT": "PROVINCIAL_DEPARTMENT", "COMMUNE": "COMMUNE_PEOPLE_COMMITTEE"}.get(unit.level, unit.level)
    return {"departmentType": kind, "departmentLevel": portal_level(unit), "agencyLevel": "level_2"}


def progress_row(row: Row) -> dict[str, Any]:
    out = row.head()
    received, on_time = row.c("2.1", "denominator") or 0, row.c("2.1", "numerator") or 0
    out.update(totalReceived=received, totalOnTime=on_time)
    if row.parent:
        out["totalCompleted"] = row.counts.get("completed", 0)
    else:
        out["totalOverdue"] = row.counts.get("overdue", 0)
    out.update(avgProcessingDays=row.c("2.2", "ratio") or 0, ratio=row.c("2.1", "ratio") or 0)
    if row.parent:
        out.update(totalScore=row.c("2.1", "score"), totalMaxScore=row.c("2.1", "max"))
    else:
        out.update(score=row.c("2.1", "score"), maxScore=row.c("2.1", "max"), scoreDelta=None)
    return out


def online_row(row: Row) -> dict[str, Any]:
    out = row.head()
    if row.parent:  # the portal publishes the counts on the parent row only
        get = row.counts.get
        online, direct, postal = get("received_online", 0), get("received_in_person", 0), get("received_postal", 0)
        out.update(
            authorityCount=row.c("3.1", "denominator"),
            partialCount=None,
            fullCount=None,
            onlineDossierCount=row.c("3.2", "numerator"),
            onlineServiceTotal=row.c("3.2", "denominator"),
            channelOnlineSum=online,
            channelDirectSum=direct,
            channelPostalSum=postal,
            channelTotalSum=online + direct + postal,
            onlineOnTimeSum=None,
            onlineOverdueSum=None,
        )
    score, maximum, ratio = row.group_score("online")
    out.update(ratio=ratio, totalScore=score, totalMaxScore=maximum, scoreDelta=None)
    return out


def payment_row(row: Row) -> dict[str, Any]:
    out = row.head()
    out.update(
        totalDossierOnlinePaymentSuccess=row.c("3.6", "numerator"),
        totalDossierFinancialObligation=row.c("3.6", "denominator"),
        totalDossierOnlineFormalityPaymentSuccess=row.c("3.4", "numerator"),
        totalFeeDossierFormalityDistinct=row.c("3.4", "denominator"),
        totalFeeDossierFormality=row.c("3.5", "numerator"),
        totalFeeFormality=row.c("3.5", "denominator"),
    )
    score, maximum, ratio = row.group_score("payment")
    out.update(ratio=ratio, totalScore=score, totalMaxScore=maximum, scoreDelta=None)
    return out


def metrics_row(tree: str) -> Callable[[Row], dict[str, Any]]:
    def build(row: Row) -> dict[str, Any]:
        out = row.head()
        out.update(_classification(row.unit, row.parent))
        score, maximum, ratio = row.group_score(tree)
        out.update(totalScore=score, totalMaxScore=maximum, ratio=ratio, scoreDelta=None)
        if tree == "satisfaction":
            out.update(totalPetitions=row.c("5.1", "denominator"), classifiedPetitions=None,
                       totalDossiers=row.c("5.3", "denominator"), averageScore=None)
        if tree == "transparency":
            out["averageScore"] = None
        out["metrics"] = [
            {
                "code": code,
                "name": name,
                "numerator": row.c(cid, "numerator"),
                "denominator": row.c(cid, "denominator"),
                "ratio": row.c(cid, "ratio"),
                "score": row.c(cid, "score") if row.c(cid, "status") == "ok" else None,
                "maxScore": row.c(cid, "max"),
                "status": row.c(cid, "status"),
            }
            for code, cid, name in METRICS[tree]
        ]
        return out

    return build


BUILDERS: dict[str, Callable[[Row], dict[str, Any]]] = {
    "progress": progress_row,
    "online": online_row,
    "payment": payment_row,
    "digitized": metrics_row("digitized"),
    "satisfaction": metrics_row("satisfaction"),
    "transparency": metrics_row("transparency"),
}


@router.get(
    "/v1/portal/{tree}",
    response_model=PortalTree,
    summary="A unit and its subordinates in the national portal's evaluation shape",
    description="`tree`: progress-tree, online-tree, payment-tree, digitized-tree, satisfaction-tree or "
    "transparency-tree. Answer: `{\"code\": \"OK\", \"data\": {\"parent\": {...}, \"children\": [...]}}` with the "
    "portal's field names.",
)
async def portal_tree(request: Request, _: Annotated[Principal, Depends(reader)], tree: str, parent: QueryUnit,
                      period: QueryPeriod):
    runtime: Runtime = request.app.state.runtime
    name = tree.removesuffix("-tree")
    if not tree.endswith("-tree") or name not in BUILDERS:
        raise Problem(404, "unknown_tree", f"tree must be one of {', '.join(t + '-tree' for t in TREES)}")
    chosen = period
    tree_units = runtime.units
    children = sorted(tree_units.children.get(parent.code, []))  # by code as text, as the portal lists them
    cards = await read_cards(runtime, [parent.code, *children], chosen.key, "portal")

    def row_of(code: str, *, is_parent: bool) -> Row:
        return Row(tree_units.units[code], cards[code], parent=is_parent)

    build = BUILDERS[name]
    body = {
        "parent": build(row_of(parent.code, is_parent=True)),
        "children": [build(row_of(code, is_parent=False)) for code in children],
    }
    return {"code": "OK", "period": chosen.key, "data": body}
