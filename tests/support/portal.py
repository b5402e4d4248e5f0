"""Realistic national-portal payloads (DongBoHoSoMC snapshots, CapNhatTienDoHoSoMC steps) in tests.

A :class:`Story` is one dossier's life. From it we build both what a one-stop-shop system pushes to
the portal (a snapshot re-sent after every change, plus step records) and the same history as
canonical events, so tests can check that both give exactly the same counters.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from shared.timeutil import VIETNAM


def stamp(value: dt.datetime | None) -> str:
    return value.astimezone(VIETNAM).strftime("%Y%m%d%H%M%S") if value else ""


@dataclass
class Supplement:
    requested: dt.datetime
    returned: dt.datetime | None = None
    due_before: dt.datetime | None = None
    due_after: dt.datetime | None = None


@dataclass
class StepRecord:
    status: int
    at: dt.datetime
    due: dt.datetime | None = None  # NgayKetThucTheoQuyDinh
    started: dt.datetime | None = None
    handler: str = "Nguyễn Văn An"
    department: str = "Bộ phận một cửa"


@dataclass
class Story:
    code: str
    procedure: str
    received: dt.datetime
    due: dt.datetime | None
    channel: int | None = 1
    steps: list[StepRecord] = field(default_factory=list)
    supplements: list[Supplement] = field(default_factory=list)
    ended: tuple[int, dt.datetime] | None = None  # (status, NgayKetThucXuLy)
    returned: dt.datetime | None = None  # NgayTra (status 10)
    documents: list[dict] | None = None  # TaiLieuNop
    results: list[dict] | None = None  # DanhSachGiayToKetQua
    fees: list[dict] | None = None  # DanhSachLePhi
    paid_online: str = ""  # DuocThanhToanTrucTuyen
    # The known quirk: from this instant the snapshot says this status (9, with NgayKetThucXuLy) while the
    # step records report the real one (5, 6 or 8).
    snapshot_claims: tuple[int, dt.datetime] | None = None

    # ------------------------------------------------------------------ the history, as it unfolds

    def moments(self) -> list[dt.datetime]:
        """Every instant at which the dossier changed (a snapshot is re-sent after each)."""
        instants = {self.received, *(s.at for s in self.steps)}
        for s in self.supplements:
            instants.add(s.requested)
            if s.returned:
                instants.add(s.returned)
        if self.ended:
            instants.add(self.ended[1])
        if self.snapshot_claims:
            instants.add(self.snapshot_claims[1])
        if self.returned:
            instants.add(self.returned)
        return sorted(instants)

    def snapshot_at(self, now: dt.datetime, *, unit: str | None = None, empties: bool = True) -> dict[str, Any]:
        """The DongBoHoSoMC dossier as the system would send it at ``now``."""
        status = 2
        for step in sorted(self.steps, key=lambda s: s.at):
            if step.at <= now:
                status = step.status
        supplements = []
        due_now = self.due
        for s in self.supplements:
            if s.requested > now:
                continue
            entry = {"NgayBoSung": stamp(s.requested), "NoiDungBoSung": "Bổ sung giấy tờ",
                     "NgayHenTraTruoc": stamp(s.due_before)}
            if s.returned and s.returned <= now:
                entry["NgayTiepNhanBoSung"] = stamp(s.returned)
                entry["NgayHenTraMoi"] = stamp(s.due_after)
                due_now = s.due_after or due_now
            elif empties:
                entry["NgayTiepNhanBoSung"] = ""
                entry["NgayHenTraMoi"] = ""
            supplements.append(entry)
        ended = self.ended if self.ended and self.ended[1] <= now else None
        if ended:
            status = ended[0]
        returned = self.returned if self.returned and self.returned <= now else None
        if returned:
            status = 10
        if self.snapshot_claims and self.snapshot_claims[1] <= now:
            status, ended = self.snapshot_claims[0], self.snapshot_claims
        finished = ended is not None
        record: dict[str, Any] = {
            "MaHoSo": self.code,
            "MaTTHC": self.procedure,
            "TenTTHC": "Thủ tục " + self.procedure,
            "KenhThucHien": str(self.channel) if self.channel else "",
            "NgayTiepNhan": stamp(self.received),
            "NgayHenTra": stamp(due_now),
            "TrangThaiHoSo": str(status),
            "NgayKetThucXuLy": stamp(ended[1]) if ended else "",
            "NgayTra": stamp(returned),
            "ChuHoSo": "Trần Thị Bình",
        }
        if unit:
            record["DonViXuLy"] = unit
        if supplements or empties:
            record["DanhSachHoSoBoSung"] = supplements
        if self.documents is not None:
            record["TaiLieuNop"] = self.documents
            record["HoSoCoThanhPhanSoHoa"] = "1" if any(d.get("DuocSoHoa") == "1" for d in self.documents) else "0"
        elif empties:
            record["HoSoCoThanhPhanSoHoa"] = ""
        if self.fees is not None:
            record["DanhSachLePhi"] = self.fees
        if finished and self.results is not None:
            record["DanhSachGiayToKetQua"] = self.results
        if self.paid_online or empties:
            record["DuocThanhToanTrucTuyen"] = self.paid_online
        return record

    def step_records(self) -> list[dict[str, Any]]:
        out = []
        for step in self.steps:
            record = {
                "MaHoSo": self.code,
                "NguoiXuLy": step.handler,
                "ChucDanh": "Chuyên viên",
                "ThoiDiemXuLy": stamp(step.at),
                "PhongBanXuLy": step.department,
                "NoiDungXuLy": "Xử lý hồ sơ",
                "TrangThai": str(step.status),
                "NgayBatDau": stamp(step.started),
                "NgayKetThucTheoQuyDinh": stamp(step.due),
            }
            out.append(record)
        return out

    # ---------------------------------------------------------- the same history, canonical events

    def canonical(self, unit: str, attributes: dict[str, Any]) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []

        def add(status: int, at: dt.datetime, **extra: Any) -> None:
            body = {"event_id": f"c:{self.code}:{len(events)}", "dossier_code": self.code, "unit_code": unit,
                    "procedure_code": self.procedure, "status": status, "occurred_at": at.isoformat()}
            for key, value in extra.items():
                if value is not None:
                    body[key] = value.isoformat() if isinstance(value, dt.datetime) else value
            events.append(body)

        first_due = next((s.due_before for s in self.supplements if s.due_before), None) or self.due
        add(2, self.received, channel=self.channel, due_at=first_due)
        for s in self.supplements:
            add(5, s.requested)
            if s.returned:
                add(4, s.returned, due_at=s.due_after)
        for step in self.steps:
            detail = {k: v.isoformat() for k, v in (("due_at", step.due), ("started_at", step.started)) if v}
            add(step.status, step.at, step=detail or None)
        if self.ended:
            add(9 if self.ended[0] == 10 else self.ended[0], self.ended[1])
        if self.returned:
            add(10, self.returned)
        latest = max(events, key=lambda e: e["occurred_at"])
        add(latest["status"], dt.datetime.fromisoformat(latest["occurred_at"]), attributes=attributes)
        return events


def final_attributes(story: Story) -> dict[str, Any]:
    """The attributes the story's last snapshot states (as the mapping reads them)."""
    from services.ingest.portal_mapping import snapshot_attributes
    from shared.event_flags import END_TIME_MISSING

    last = story.snapshot_at(max(story.moments()))
    out = snapshot_attributes(last)
    if last["TrangThaiHoSo"] in ("7", "8", "9", "10"):
        out[END_TIME_MISSING] = not (last["NgayKetThucXuLy"] or last["NgayTra"])
    return out


def snapshot_call(madonvi: str, dossiers: list[dict], *, updating: bool = True) -> dict[str, Any]:
    return {"service": "DongBoHoSoMC", "madonvi": madonvi, "isUpdating": "True" if updating else "False",
            "data": dossiers}


def progress_call(madonvi: str, steps: list[dict]) -> dict[str, Any]:
    return {"service": "CapNhatTienDoHoSoMC", "madonvi": madonvi, "data": steps}


def vn(year: int, month: int, day: int, hour: int = 8, minute: int = 0) -> dt.datetime:
    return dt.datetime(year, month, day, hour, minute, tzinfo=VIETNAM)


def sample_stories(prefix: str = "HS") -> list[Story]:
    """Several dossiers of August 2026: on time, late, with supplements, stopped, the 9-for-5 quirk, open."""
    docs = [
        {"TenTaiLieu": "Đơn đề nghị", "DuocSoHoa": "1", "DuocTaiSuDung": "0", "DuocLayTuKhoDMQG": ""},
        {"TenTaiLieu": "Căn cước", "DuocSoHoa": "1", "DuocTaiSuDung": "1", "DuocLayTuKhoDMQG": "1"},
    ]
    return [
        # Online, processed and returned on time, with attachments, fees and an electronic result.
        Story(f"{prefix}-001", "1.001234", vn(2026, 8, 3, 8), vn(2026, 8, 7, 17), channel=2,
              steps=[StepRecord(2, vn(2026, 8, 3, 8), due=vn(2026, 8, 3, 17)),
                     StepRecord(4, vn(2026, 8, 3, 14), due=vn(2026, 8, 5, 17), started=vn(2026, 8, 3, 8)),
                     StepRecord(9, vn(2026, 8, 5, 10), due=vn(2026, 8, 6, 17), started=vn(2026, 8, 3, 14))],
              ended=(9, vn(2026, 8, 5, 10)), returned=vn(2026, 8, 6, 9), documents=docs,
              results=[{"TenGiayTo": "Giấy phép", "DuongDanTepTinKetQua": "https://dvc.phutho.gov.vn/kq/1.pdf"}],
              fees=[{"TenPhiLePhi": "Lệ phí cấp phép", "Gia": "50000"}], paid_online="1"),
        # In person, one supplement (due moved from the 10th to the 14th), finished late anyway; a late step.
        Story(f"{prefix}-002", "1.005678", vn(2026, 8, 4, 9), vn(2026, 8, 10, 17), channel=1,
              steps=[StepRecord(4, vn(2026, 8, 4, 10), due=vn(2026, 8, 5, 17)),
                     StepRecord(5, vn(2026, 8, 5, 9), due=vn(2026, 8, 5, 8)),
                     StepRecord(4, vn(2026, 8, 6, 9)),
                     StepRecord(9, vn(2026, 8, 17, 15), due=vn(2026, 8, 14, 17))],
              supplements=[Supplement(vn(2026, 8, 5, 9), vn(2026, 8, 6, 9), vn(2026, 8, 10, 17), vn(2026, 8, 14, 17))],
              ended=(9, vn(2026, 8, 17, 15)), returned=vn(2026, 8, 18, 8), documents=[], fees=[]),
        # Two supplement requests: overdue whatever its dates. Postal channel.
        Story(f"{prefix}-003", "1.001234", vn(2026, 8, 5, 8), vn(2026, 8, 20, 17), channel=3,
              steps=[StepRecord(4, vn(2026, 8, 5, 9)), StepRecord(9, vn(2026, 8, 12, 9))],
              supplements=[Supplement(vn(2026, 8, 6, 9), vn(2026, 8, 7, 9), vn(2026, 8, 20, 17), vn(2026, 8, 21, 17)),
                           Supplement(vn(2026, 8, 10, 9), vn(2026, 8, 11, 9), vn(2026, 8, 21, 17), vn(2026, 8, 24, 17))],
              ended=(9, vn(2026, 8, 12, 9))),
        # Stopped (8); the channel is an empty string (counts as in person).
        Story(f"{prefix}-004", "2.000111", vn(2026, 8, 6, 8), vn(2026, 8, 12, 17), channel=None,
              steps=[StepRecord(4, vn(2026, 8, 6, 9)), StepRecord(8, vn(2026, 8, 7, 10))],
              ended=(8, vn(2026, 8, 7, 10))),
        # The quirk: the snapshot reports 9 while the step record says 5 (supplement requested, still out).
        Story(f"{prefix}-005", "2.000111", vn(2026, 8, 10, 8), vn(2026, 8, 14, 17), channel=2,
              steps=[StepRecord(4, vn(2026, 8, 10, 9)), StepRecord(5, vn(2026, 8, 11, 9))],
              snapshot_claims=(9, vn(2026, 8, 11, 9))),
        # The quirk with 6 (waiting for the applicant to pay).
        Story(f"{prefix}-006", "1.005678", vn(2026, 8, 12, 8), vn(2026, 8, 19, 17), channel=2,
              steps=[StepRecord(4, vn(2026, 8, 12, 9)), StepRecord(6, vn(2026, 8, 13, 9))],
              snapshot_claims=(9, vn(2026, 8, 13, 9))),
        # Received, no due time at all (optional field missing), still open.
        Story(f"{prefix}-007", "2.000222", vn(2026, 8, 20, 8), None, channel=1,
              steps=[StepRecord(4, vn(2026, 8, 20, 9), due=vn(2026, 8, 21, 17))]),
    ]
