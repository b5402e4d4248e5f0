"""``GET /v1/reports/{unit}.xlsx``: the unit's score as an Excel workbook (numbers stored as numbers).

Sheets: a summary, one per group (its components with numerator, denominator, ratio, score and max)
and one of the children with their rank, total, rating and group scores. Built from the same score
document and league table as the API's JSON, so the file and the API never disagree.
"""

from __future__ import annotations

import io
from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response
from openpyxl import Workbook
from openpyxl.styles import Alignment, Font
from openpyxl.utils import get_column_letter

from services.api.http import league_table, score_document
from services.api.params import PathUnit, QueryPeriod
from shared.auth import Principal, reader

router = APIRouter(tags=["exports"])
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
BOLD = Font(bold=True)
CHILDREN_SHEET = "Đơn vị trực thuộc"


def _sheet_title(code: str, name: str) -> str:
    # Excel: at most 31 characters, none of []:*?/\
    title = f"{code} - {name}"
    for bad in "[]:*?/\\":
        title = title.replace(bad, " ")
    return title[:31]


def _table(sheet, header: list[str], rows: list[list], widths: list[int]) -> None:
    sheet.append(header)
    for cell in sheet[sheet.max_row]:
        cell.font = BOLD
        cell.alignment = Alignment(wrap_text=True, vertical="top")
    for row in rows:
        sheet.append(row)
    for index, width in enumerate(widths, start=1):
        sheet.column_dimensions[get_column_letter(index)].width = width
    sheet.freeze_panes = sheet.cell(row=sheet.max_row - len(rows) + 1, column=1)


def workbook(document: dict, children: list[dict]) -> bytes:
    book = Workbook()
    summary = book.active
    summary.title = "Tổng hợp"
    unit = document["unit"]
    summary.append(["Đơn vị", unit["name"]])
    summary.append(["Mã đơn vị", unit["code"]])
    summary.append(["Kỳ đánh giá", document["period"]])
    summary.append(["Số liệu tại thời điểm", document["as_of"]])
    summary.append(["Tổng điểm", document["total"]["score"]])
    summary.append(["Điểm tối đa", document["total"]["max"]])
    summary.append(["Xếp loại", document["rating"]])
    summary.append([])
    for row in summary.iter_rows(min_row=1, max_row=7, max_col=1):
        row[0].font = BOLD
    _table(summary, ["Mã nhóm", "Nhóm chỉ số", "Điểm", "Điểm tối đa"],
           [[g["code"], g["name"], g["score"], g["max"]] for g in document["groups"]], [24, 48, 12, 12])

    for group in document["groups"]:
        sheet = book.create_sheet(_sheet_title(group["code"], group["name"]))
        sheet.append([group["name"], None, None, None, None, "Điểm nhóm", group["score"], group["max"]])
        sheet["A1"].font = BOLD
        sheet.append([])
        _table(sheet, ["Mã", "Chỉ số thành phần", "Tử số", "Mẫu số", "Tỷ lệ (%)", "Điểm", "Điểm tối đa",
                       "Trạng thái"],
               [[c["id"], c["name"], c["numerator"], c["denominator"], c["ratio"], c["score"], c["max"],
                 "Chưa có dữ liệu" if c["status"] == "no_data" else "Có dữ liệu"] for c in group["components"]],
               [8, 60, 12, 12, 12, 10, 12, 16])

    sheet = book.create_sheet(CHILDREN_SHEET)
    codes = [g["code"] for g in document["groups"]]
    _table(sheet, ["Hạng", "Mã đơn vị", "Tên đơn vị", "Tổng điểm", "Xếp loại", *codes, "Hồ sơ tiếp nhận"],
           [[row["rank"], row["unit"]["code"], row["unit"]["name"], row["total"], row["rating"],
             *(row["groups"].get(code) for code in codes), row["received"]] for row in children],
           [7, 14, 48, 11, 12, *([9] * len(codes)), 14])
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


@router.get("/v1/reports/{unit_code}.xlsx", response_class=Response,
            responses={200: {"content": {XLSX: {}}, "description": "the Excel workbook"}},
            summary="The unit's scores as an Excel workbook: a sheet per group and one of the children")
async def report_xlsx(request: Request, _: Annotated[Principal, Depends(reader)], unit: PathUnit,
                      period: QueryPeriod) -> Response:
    document = await score_document(request, unit.code, period)
    children = await league_table(request, unit.code, period)
    body = workbook(document, children)
    filename = f"dvc766-{unit.code}-{period.key}.xlsx"
    return Response(body, media_type=XLSX, headers={"content-disposition": f'attachment; filename="{filename}"'})
