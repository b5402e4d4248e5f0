"""How the pages write numbers and words: Vietnamese conventions (1.234,56), labels with diacritics,
and the trend chart as plain SVG coordinates (the numbers are also in a table)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal

REASONS = {
    "late_end": "Giải quyết quá hạn",
    "supplement_late": "Yêu cầu bổ sung sau khi đã quá hạn",
    "two_plus_supplements": "Yêu cầu bổ sung từ 2 lần trở lên",
    "open_past_due": "Chưa giải quyết, đã quá hạn",
    "overdue_step": "Có bước xử lý quá hạn",
    "not_online": "Không tiếp nhận trực tuyến",
    "not_synced": "Chưa đồng bộ lên Cổng DVCQG",
    "not_paid_online": "Chưa thanh toán trực tuyến",
    "no_e_result": "Không cấp kết quả điện tử",
    "not_digitized": "Chưa số hóa hồ sơ",
    "no_reused_data": "Không khai thác lại dữ liệu số hóa",
    "no_data_store_component": "Không dùng dữ liệu từ kho dữ liệu của công dân",
    "no_population_data": "Không sử dụng dữ liệu dân cư",
    "complaint_or_unsatisfied": "Có phản ánh hoặc đánh giá không hài lòng",
    "handled_late": "Phản ánh, kiến nghị xử lý quá hạn",
    "rated_unsatisfied": "Người dân đánh giá không hài lòng",
    "recomplained": "Phản ánh, kiến nghị lại",
    "incomplete_parts": "Công khai chưa đầy đủ các bộ phận",
    "published_late": "Công bố không đúng hạn",
    "made_public_late": "Công khai trên CSDL quốc gia không đúng hạn",
    "not_made_public": "Chưa công khai trên CSDL quốc gia",
    "no_online_dossier": "Dịch vụ trực tuyến chưa phát sinh hồ sơ",
    "no_online_payment": "Chưa có giao dịch thanh toán trực tuyến",
    "no_fee_data": "Hồ sơ chưa có dữ liệu phí, lệ phí",
    "no_e_certified_copy": "Chưa cung cấp dịch vụ chứng thực bản sao điện tử",
}

FLAGS = {
    "overdue": "Hồ sơ quá hạn",
    "open_overdue": "Hồ sơ đang giải quyết đã quá hạn",
    "two_plus_supplements": "Hồ sơ yêu cầu bổ sung từ 2 lần trở lên",
    "overdue_step": "Hồ sơ có bước xử lý quá hạn",
    "not_online": "Hồ sơ không tiếp nhận trực tuyến",
}

LEVELS = {"MINISTRY": "Bộ, ngành", "PROVINCE": "Tỉnh, thành phố", "DEPARTMENT": "Sở, ban, ngành",
          "DISTRICT": "Cấp huyện", "COMMUNE": "Cấp xã"}
CHANNELS = {1: "Trực tiếp", 2: "Trực tuyến", 3: "Bưu chính công ích"}
TARGET_STATUS = {"met": ("Đạt", "r-top"), "at_risk": ("Có nguy cơ không đạt", "r-mid"),
                 "missed": ("Không đạt", "r-low")}
NO_TARGET_VALUE = ("Chưa có số liệu", "")  # met, with nothing to measure yet
RATING_CLASS = {"Xuất sắc": "r-top", "Tốt": "r-good", "Khá": "r-fair", "Trung bình": "r-mid", "Yếu": "r-low"}


def reason(code: str) -> str:
    base, _, detail = code.partition(":")
    label = REASONS.get(base, code)
    return f"{label} ({detail})" if detail else label


def _grouped(integer: str) -> str:
    digits = integer.lstrip("-")
    parts = []
    while len(digits) > 3:
        parts.insert(0, digits[-3:])
        digits = digits[:-3]
    parts.insert(0, digits)
    return ("-" if integer.startswith("-") else "") + ".".join(parts)


def number(value, decimals: int = 2) -> str:
    """``1234.5`` → ``1.234,50``; None → an en dash."""
    if value is None:
        return "–"
    quantum = Decimal(1).scaleb(-decimals)
    text = str(Decimal(str(value)).quantize(quantum, rounding=ROUND_HALF_UP))
    integer, _, fraction = text.partition(".")
    return _grouped(integer) + ("," + fraction if fraction else "")


def count(value) -> str:
    return "–" if value is None else _grouped(str(int(value)))


def signed(value) -> str:
    if value is None:
        return "–"
    if value > 0:
        return "▲ +" + number(value)
    if value < 0:
        return "▼ −" + number(-value)
    return "0,00"


def local_time(iso: str | None) -> str:
    """``2026-08-20T09:15:02+07:00`` → ``09:15 20/08/2026``."""
    if not iso:
        return "–"
    instant = dt.datetime.fromisoformat(iso)
    return instant.strftime("%H:%M %d/%m/%Y")


def day(value: dt.date) -> str:
    return value.strftime("%d/%m")


def period_label(key: str) -> str:
    if "-Q" in key:
        year, quarter = key.split("-Q")
        return f"Quý {quarter}/{year}"
    if "-" in key:
        year, month = key.split("-")
        return f"Tháng {int(month)}/{year}"
    return f"Năm {key}"


@dataclass(frozen=True)
class Trend:
    """A line of the period's daily totals in a 0–100 score box of ``width`` × ``height`` pixels."""

    points: str  # SVG polyline points
    dots: list[tuple[float, float, str, str]]  # x, y, date label, score label
    width: int
    height: int
    gridlines: list[tuple[float, str]]  # y, label


def trend(days: list, *, width: int = 640, height: int = 200, pad: int = 36) -> Trend | None:
    if not days:
        return None
    low, high = (50.0 if min(d.total for d in days) >= 50 else 0.0), 100.0
    steps = [low + k * (10 if low else 20) for k in range(6)]
    span = max(1, len(days) - 1)

    def x(i: int) -> float:
        return round(pad + (width - pad - 8) * (i / span if len(days) > 1 else 0.5), 1)

    def y(score: float) -> float:
        return round(8 + (height - 8 - 24) * (high - score) / (high - low), 1)

    dots = [(x(i), y(d.total), day(d.date), number(d.total)) for i, d in enumerate(days)]
    return Trend(points=" ".join(f"{px},{py}" for px, py, _, _ in dots), dots=dots, width=width, height=height,
                 gridlines=[(y(s), number(s, 0)) for s in steps])
