"""The national portal's own sync payloads -> canonical events (events.md §4). Pure: no I/O.

One-stop-shop systems push two calls to the national portal (Cổng DVCQG):

- ``DongBoHoSoMC``: a whole dossier snapshot, re-sent on every change;
- ``CapNhatTienDoHoSoMC``: processing-step records (QuaTrinhXuLy).

Every value on that wire is a string and times are ``yyyyMMddHHmmss`` in Vietnam local time. Each
snapshot or step record becomes a few canonical event dicts (or one per-item rejection), which then go
through the one acceptance path (``services.ingest.intake``) like any other event.

Identities: an event's id is ``dvcqg:{MaHoSo}:{status}:{yyyyMMddHHmmss}:{digest of its body}``. A
re-sent snapshot therefore maps to the very same ids and is a duplicate; a snapshot whose content
changed (new attributes, a moved due time) maps to *additional* events at the same instants, never to
a different body under a known id (a conflict). Extra events only restate a status already in the
history at the same instant, which the dossier rules count once, so history is kept and nothing
counts twice.

Snapshot -> events:

- status 2 at NgayTiepNhan (channel KenhThucHien, procedure MaTTHC, due time as it was at receipt: the
  first supplement's NgayHenTraTruoc when there is one, else NgayHenTra);
- each DanhSachHoSoBoSung entry: 5 at NgayBoSung and, once answered, 4 at NgayTiepNhanBoSung carrying
  the new due time NgayHenTraMoi (due-time changes are kept);
- the end TrangThaiHoSo claims (3, 7, 8, 9; 9 for a dossier at 10) at NgayKetThucXuLy, marked
  *provisional*: a step record's reported status at the same instant wins (the known quirk of systems
  that send 5, 6 and 8 as 9); 10 at NgayTra;
- the snapshot's latest event is restated with the dossier attributes (DuocSoHoa, DuocTaiSuDung,
  DuocLayTuKhoDMQG, result files, fees, DuocThanhToanTrucTuyen) and the current NgayHenTra.

Step record -> one event: TrangThai at ThoiDiemXuLy with the step (NgayKetThucTheoQuyDinh,
NgayBatDau, NguoiXuLy, NoiDungXuLy). Step records do not carry the procedure; the dossier's procedure
and unit come from its receipt, so steps use :data:`STEP_PROCEDURE`. A step record in status 2 is
provisional too: the receipt's facts (channel, procedure, due time) come from the snapshot.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import math
from collections.abc import Callable, Container
from dataclasses import dataclass, field
from typing import Any

import orjson

from services.indicators.rules.dossier import PROVISIONAL
from shared.events import MAX_DEPTH, Reason, Rejection, is_ascii_digits, nested_deeper_than
from shared.timeutil import VIETNAM

SNAPSHOT = "DongBoHoSoMC"
PROGRESS = "CapNhatTienDoHoSoMC"
SERVICES = (SNAPSHOT, PROGRESS)
STEP_PROCEDURE = "(tiến độ)"  # steps carry no MaTTHC; never used once the dossier's receipt is known
ID_PREFIX = "dvcqg"
MAX_CODE = 64


class PortalReason:
    """Payload-level reasons (per-item reasons are the canonical :class:`shared.events.Reason`)."""

    UNKNOWN_SERVICE = "unknown_service"
    BAD_PAYLOAD = "bad_payload"
    DATA_NOT_ARRAY = "data_not_array"
    MISSING_FIELD = Reason.MISSING_FIELD


@dataclass(frozen=True)
class MappedItem:
    """One element of ``data``: the canonical events it stands for, or why it was refused."""

    index: int
    dossier_code: str | None
    events: tuple[dict[str, Any], ...] = ()
    rejection: Rejection | None = None


@dataclass(frozen=True)
class MappedPayload:
    service: str
    madonvi: str
    items: list[MappedItem] = field(default_factory=list)


# ---------------------------------------------------------------------------------------- values


def parse_portal_time(value: Any, name: str) -> dt.datetime | None | Rejection:
    """``yyyyMMddHHmmss`` in Vietnam local time; empty or missing is None (an optional value)."""
    if value is None:
        return None
    text = str(value).strip()
    if not text:
        return None
    if len(text) != 14 or not is_ascii_digits(text):
        return Rejection(Reason.BAD_TIMESTAMP, f"{name} must be yyyyMMddHHmmss (Vietnam time), not {value!r}", name)
    try:
        return dt.datetime(int(text[0:4]), int(text[4:6]), int(text[6:8]), int(text[8:10]), int(text[10:12]),
                           int(text[12:14]), tzinfo=VIETNAM)
    except ValueError:
        return Rejection(Reason.BAD_TIMESTAMP, f"{name} is not a real date and time: {value!r}", name)


def _text(value: Any) -> str:
    return "" if value is None else str(value).strip()


def _code(record: dict, name: str) -> str | Rejection:
    text = _text(record.get(name))
    if not text:
        return Rejection(Reason.MISSING_FIELD, f"{name} is required", name)
    if len(text) > MAX_CODE:
        return Rejection(Reason.BAD_FIELD, f"{name} is longer than {MAX_CODE} characters", name)
    return text


def _small_int(value: Any, name: str, low: int, high: int, reason: str, *, required: bool) -> int | None | Rejection:
    text = _text(value)
    if not text:
        return Rejection(Reason.MISSING_FIELD, f"{name} is required", name) if required else None
    if not is_ascii_digits(text) or not low <= int(text) <= high:
        return Rejection(reason, f"{name} must be a number from {low} to {high}, not {value!r}", name)
    return int(text)


def _flag(value: Any) -> bool | None:
    """The portal's "0"/"1" flags (also true/false); empty is unknown."""
    text = _text(value).lower()
    if not text:
        return None
    if text in ("1", "true", "co", "có"):
        return True
    if text in ("0", "false", "khong", "không"):
        return False
    return None


def _iso(value: dt.datetime | None) -> str | None:
    return value.isoformat() if value else None


def _stamp(value: dt.datetime) -> str:
    return value.astimezone(VIETNAM).strftime("%Y%m%d%H%M%S")


def event_id_for(dossier_code: str, status: int, at: dt.datetime, body: dict[str, Any]) -> str:
    digest = hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()[:12]
    return f"{ID_PREFIX}:{dossier_code}:{status}:{_stamp(at)}:{digest}"


def _event(dossier: str, unit: str, procedure: str, status: int, at: dt.datetime, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "dossier_code": dossier,
        "unit_code": unit,
        "procedure_code": procedure,
        "status": status,
        "occurred_at": _iso(at),
    }
    for key, value in extra.items():
        if value is None or value == {}:
            continue
        body[key] = _iso(value) if isinstance(value, dt.datetime) else value
    return {"event_id": event_id_for(dossier, status, at, body), **body}


# ----------------------------------------------------------------------------------- attributes

RESULT_FILE_FIELDS = ("DuongDanTepTinKetQua", "DuongDanTepTin", "TepDinhKem", "FileKetQua", "UrlKetQua")
FEE_AMOUNT_FIELDS = ("Gia", "SoTien", "MucPhi", "MucLePhi")


def _items(value: Any) -> list[dict] | None:
    """A list of records (None when the field is absent or empty-string, i.e. not reported)."""
    if value is None or value == "":
        return None
    if isinstance(value, list):
        return [v for v in value if isinstance(v, dict)]
    return None


def _amount(value: Any) -> float | None:
    text = _text(value).replace(",", "")
    if not text or not text.isascii():  # float() would read "１２" and "٢"
        return None
    try:
        amount = float(text)
    except ValueError:
        return None
    return amount if math.isfinite(amount) else None


def snapshot_attributes(dossier: dict) -> dict[str, Any]:
    """The dossier attributes a snapshot states; what it does not report is left out (not set false)."""
    out: dict[str, Any] = {"synced_to_portal": True}  # this very payload is the sync to the national portal
    documents = _items(dossier.get("TaiLieuNop"))
    whole = _flag(dossier.get("HoSoCoThanhPhanSoHoa"))
    if documents is not None or whole is not None:
        out["digitized"] = bool(whole) or any(_flag(d.get("DuocSoHoa")) for d in documents or ())
    if documents is not None:
        out["reused_digitized"] = any(_flag(d.get("DuocTaiSuDung")) for d in documents)
        out["from_data_store"] = any(_flag(d.get("DuocLayTuKhoDMQG")) for d in documents)
    results = _items(dossier.get("DanhSachGiayToKetQua"))
    if results is not None:
        out["e_result"] = any(_text(r.get(f)) for r in results for f in RESULT_FILE_FIELDS)
    fees = _items(dossier.get("DanhSachLePhi"))
    if fees is not None:
        out["fee_data"] = bool(fees)
        amounts = [a for a in (_amount(f.get(k)) for f in fees for k in FEE_AMOUNT_FIELDS) if a is not None]
        out["fee_required"] = any(a > 0 for a in amounts)
    paid = _text(dossier.get("DuocThanhToanTrucTuyen"))
    if paid:
        out["paid_online"] = paid in ("1", "2")  # 1: paid online via the portal, 2: via the province's gateway
    return out


# -------------------------------------------------------------------------------------- mapping


def map_snapshot(dossier: Any, madonvi: str, is_unit: Callable[[str], bool]) -> tuple[str | None, list[dict] | Rejection]:
    """A ``DongBoHoSoMC`` dossier -> canonical events (or the reason it cannot be used)."""
    if not isinstance(dossier, dict):
        return None, Rejection(Reason.NOT_AN_OBJECT, "each element of data must be a JSON object")
    code = _code(dossier, "MaHoSo")
    if isinstance(code, Rejection):
        return None, code
    status = _small_int(dossier.get("TrangThaiHoSo"), "TrangThaiHoSo", 1, 10, Reason.BAD_STATUS, required=True)
    if isinstance(status, Rejection):
        return code, status
    channel = _small_int(dossier.get("KenhThucHien"), "KenhThucHien", 1, 3, Reason.BAD_CHANNEL, required=False)
    if isinstance(channel, Rejection):
        return code, channel
    times: dict[str, dt.datetime | None] = {}
    for name in ("NgayTiepNhan", "NgayHenTra", "NgayKetThucXuLy", "NgayTra"):
        parsed = parse_portal_time(dossier.get(name), name)
        if isinstance(parsed, Rejection):
            return code, parsed
        times[name] = parsed
    received = times["NgayTiepNhan"]
    if received is None:
        if status in (1, 3):  # never received: counts nowhere, nothing to record
            return code, []
        return code, Rejection(Reason.MISSING_FIELD, f"NgayTiepNhan is required for a dossier in status {status}",
                               "NgayTiepNhan")
    procedure = _code(dossier, "MaTTHC")
    if isinstance(procedure, Rejection):
        return code, procedure
    processing_unit = _text(dossier.get("DonViXuLy"))
    unit = processing_unit if processing_unit and is_unit(processing_unit) else madonvi

    supplements = []
    for position, entry in enumerate(_items(dossier.get("DanhSachHoSoBoSung")) or ()):
        parsed_entry = {}
        for name in ("NgayBoSung", "NgayTiepNhanBoSung", "NgayHenTraTruoc", "NgayHenTraMoi"):
            parsed = parse_portal_time(entry.get(name), f"DanhSachHoSoBoSung[{position}].{name}")
            if isinstance(parsed, Rejection):
                return code, parsed
            parsed_entry[name] = parsed
        if parsed_entry["NgayBoSung"] is not None:  # an entry without its request time says nothing usable
            supplements.append(parsed_entry)
    supplements.sort(key=lambda s: s["NgayBoSung"])
    due_at_receipt = next((s["NgayHenTraTruoc"] for s in supplements if s["NgayHenTraTruoc"]), None)
    due_at_receipt = due_at_receipt or times["NgayHenTra"]

    def make(status_: int, at: dt.datetime, **extra: Any) -> dict:
        return _event(code, unit, procedure, status_, at, **extra)

    events = [make(2, received, channel=channel, due_at=due_at_receipt)]
    for entry in supplements:
        events.append(make(5, entry["NgayBoSung"]))
        if entry["NgayTiepNhanBoSung"] is not None:
            events.append(make(4, entry["NgayTiepNhanBoSung"], due_at=entry["NgayHenTraMoi"]))
    claimed = {PROVISIONAL: True}
    if status in (3, 7, 8, 9, 10):
        ended = times["NgayKetThucXuLy"]
        if ended is not None:
            events.append(make(9 if status == 10 else status, ended, attributes=claimed))
        elif status != 10:
            return code, Rejection(Reason.MISSING_FIELD, f"NgayKetThucXuLy is required for a dossier in status "
                                   f"{status}", "NgayKetThucXuLy")
    if status == 10:
        if times["NgayTra"] is None:
            return code, Rejection(Reason.MISSING_FIELD, "NgayTra is required for a dossier in status 10", "NgayTra")
        events.append(make(10, times["NgayTra"]))

    # Restate the latest event with what the snapshot says about the dossier now.
    latest = max(enumerate(events), key=lambda pair: (pair[1]["occurred_at"], pair[0]))[1]
    latest_at = dt.datetime.fromisoformat(latest["occurred_at"])
    attributes = {**(latest.get("attributes") or {}), **snapshot_attributes(dossier)}
    extra = {k: latest[k] for k in ("channel",) if k in latest}
    state = make(latest["status"], latest_at, due_at=times["NgayHenTra"] or latest.get("due_at"),
                 attributes=attributes, **extra)
    if all(state["event_id"] != e["event_id"] for e in events):
        events.append(state)
    return code, events


def map_step(step: Any, madonvi: str) -> tuple[str | None, list[dict] | Rejection]:
    """A ``CapNhatTienDoHoSoMC`` step record -> one canonical event."""
    if not isinstance(step, dict):
        return None, Rejection(Reason.NOT_AN_OBJECT, "each element of data must be a JSON object")
    code = _code(step, "MaHoSo")
    if isinstance(code, Rejection):
        return None, code
    status = _small_int(step.get("TrangThai"), "TrangThai", 1, 10, Reason.BAD_STATUS, required=True)
    if isinstance(status, Rejection):
        return code, status
    times = {}
    for name in ("ThoiDiemXuLy", "NgayBatDau", "NgayKetThucTheoQuyDinh"):
        parsed = parse_portal_time(step.get(name), name)
        if isinstance(parsed, Rejection):
            return code, parsed
        times[name] = parsed
    at = times["ThoiDiemXuLy"]
    if at is None:
        return code, Rejection(Reason.MISSING_FIELD, "ThoiDiemXuLy is required", "ThoiDiemXuLy")
    handler = " - ".join(t for t in (_text(step.get("NguoiXuLy")), _text(step.get("ChucDanh"))) if t)
    name = " - ".join(t for t in (_text(step.get("PhongBanXuLy")), _text(step.get("NoiDungXuLy"))) if t)
    detail = {
        k: v
        for k, v in (
            ("name", name or None),
            ("handler", handler or None),
            ("due_at", _iso(times["NgayKetThucTheoQuyDinh"])),
            ("started_at", _iso(times["NgayBatDau"])),
        )
        if v is not None
    }
    attributes = {PROVISIONAL: True} if status == 2 else None  # the receipt's facts come from the snapshot
    return code, [_event(code, madonvi, STEP_PROCEDURE, status, at, step=detail or None, attributes=attributes)]


def map_payload(payload: Any, *, service: str | None = None,
                is_unit: Callable[[str], bool] | Container[str] = ()) -> MappedPayload | Rejection:
    """A whole portal call -> mapped items, or the payload-level reason it cannot be read at all.

    ``service`` is the one named in the path (``/v1/dvcqg/DongBoHoSoMC``), if any; the body's
    ``service`` must agree with it. ``is_unit`` tells which unit codes exist (for DonViXuLy).
    """
    check = is_unit if callable(is_unit) else (lambda code: code in is_unit)  # type: ignore[operator]
    if not isinstance(payload, dict):
        return Rejection(PortalReason.BAD_PAYLOAD, "the body must be a JSON object with service, madonvi and data")
    named = _text(payload.get("service")) or service
    if named not in SERVICES:
        return Rejection(PortalReason.UNKNOWN_SERVICE, f"service must be one of {', '.join(SERVICES)}, not {named!r}",
                         "service")
    if service and named != service:
        return Rejection(PortalReason.UNKNOWN_SERVICE, f"the body says service {named!r} but the path says "
                         f"{service!r}", "service")
    madonvi = _text(payload.get("madonvi"))
    if not madonvi:
        return Rejection(PortalReason.MISSING_FIELD, "madonvi is required", "madonvi")
    data = payload.get("data")
    if not isinstance(data, list):
        return Rejection(PortalReason.DATA_NOT_ARRAY, "data must be an array of records", "data")
    items = []
    for index, record in enumerate(data):
        if nested_deeper_than(record, MAX_DEPTH):
            items.append(MappedItem(index, None, (), Rejection(
                Reason.TOO_DEEP, f"a record may nest objects and arrays at most {MAX_DEPTH} levels deep")))
            continue
        if named == SNAPSHOT:
            code, mapped = map_snapshot(record, madonvi, check)
        else:
            code, mapped = map_step(record, madonvi)
        if isinstance(mapped, Rejection):
            items.append(MappedItem(index, code, (), mapped))
        else:
            items.append(MappedItem(index, code, tuple(mapped)))
    return MappedPayload(named, madonvi, items)
