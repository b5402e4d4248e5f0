"""A small province-month for the pages, the exports and the history: a catalogue with fields, dossiers of
four units posted day by day through the real API, the day's scores recorded after each day (as the
indicators side does), and two open dossiers about to turn overdue now (early warning)."""

from __future__ import annotations

import datetime as dt
import json

from services.indicators.cards import record_daily_scores
from shared.timeutil import VIETNAM, utcnow
from tests.conftest import ADMIN_KEY, ROOT, auth, drain
from tests.support.events import event, vn

PERIOD = "2026-08"
DAYS = (3, 4, 5, 6)
CATALOGUE = [
    {"unit_code": "H44.03", "procedure_code": "1.004227", "name": "Cấp Giấy chứng nhận đăng ký đầu tư",
     "field_code": "DT", "field_name": "Đầu tư tại Việt Nam", "online_level": "full", "online_services": 1,
     "legal_days": 15, "valid_from": "2026-01-01"},
    {"unit_code": "H44.07", "procedure_code": "2.000633", "name": "Cấp Giấy phép kinh doanh bán lẻ sản phẩm rượu",
     "field_code": "LTHH", "field_name": "Lưu thông hàng hóa trong nước", "online_level": "partial",
     "online_services": 1, "fee_required": True, "legal_days": 10, "valid_from": "2026-01-01"},
    {"unit_code": "H44.100", "procedure_code": "1.001193", "name": "Thủ tục đăng ký khai sinh",
     "field_code": "HT", "field_name": "Hộ tịch", "online_level": "full", "online_services": 1,
     "for_individuals": True, "legal_days": 1, "valid_from": "2026-01-01"},
]


def _day_events(day: int) -> list[dict]:
    """Each day: per unit, some on time, some late, one with two supplement requests, one offline."""
    out = []
    plan = {"H44.03": ("1.004227", 3), "H44.07": ("2.000633", 2), "H44.100": ("1.001193", 4),
            "H44.101": ("1.001193", 1)}
    for unit, (procedure, n) in plan.items():
        for i in range(n):
            code = f"{unit}-{day:02d}-{i}"
            due = vn(2026, 8, day + 3, 17)
            channel = 2 if i % 3 != 2 else 1
            out.append(event(code, 2, vn(2026, 8, day, 8 + i), unit=unit, procedure=procedure, due_at=due,
                             channel=channel))
            if (i + day) % 4 == 0:  # late
                out.append(event(code, 9, vn(2026, 8, day + 4, 9), unit=unit, procedure=procedure))
            elif (i + day) % 5 == 1:  # two supplement requests: overdue whatever its dates
                out.append(event(code, 5, vn(2026, 8, day, 14), unit=unit, procedure=procedure))
                out.append(event(code, 4, vn(2026, 8, day, 15), unit=unit, procedure=procedure))
                out.append(event(code, 5, vn(2026, 8, day, 16), unit=unit, procedure=procedure))
            else:
                out.append(event(code, 9, vn(2026, 8, day + 1, 10), unit=unit, procedure=procedure))
    return out


def _turning_overdue_now() -> list[dict]:
    now = utcnow().astimezone(VIETNAM)
    return [event(f"H44.03-now-{i}", 2, now - dt.timedelta(hours=2), unit="H44.03", procedure="1.004227",
                  due_at=now + dt.timedelta(hours=2 + i), channel=2) for i in range(2)]


async def load_month(client, runtime) -> None:
    response = await client.put("/v1/catalog/procedures", json=CATALOGUE, headers=auth(ADMIN_KEY))
    assert response.status_code == 200, response.text
    targets = json.loads((ROOT / "examples" / "targets-h44.json").read_text(encoding="utf-8"))
    response = await client.put("/v1/targets", json=targets, headers=auth(ADMIN_KEY))
    assert response.status_code == 200, response.text
    for day in DAYS:
        response = await client.post("/v1/events", json=_day_events(day), headers=auth(ADMIN_KEY))
        assert response.status_code == 200 and response.json()["rejected"] == 0, response.text
        await drain(runtime)
        await record_daily_scores(runtime, now=vn(2026, 8, day, 21))
    response = await client.post("/v1/events", json=_turning_overdue_now(), headers=auth(ADMIN_KEY))
    assert response.status_code == 200 and response.json()["rejected"] == 0, response.text
    await drain(runtime)
