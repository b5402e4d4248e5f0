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
- the end TrangThaiHoSo claims (7, 8, 9; 9 for a dossier at 10) at NgayKetThucXuLy, marked
  *provisional*: a step record's reported status at the same instant wins (the known quirk of systems
  that send 5, 6 and 8 as 9); 10 at NgayTra. A claimed end with no time for it keeps the receipt and
  everything else, and is flagged (``end_time_missing``): the end then comes from the step records, or
  the rules judge the dossier open;
- an optional time that cannot be read (``03/08/2026``) or lies outside 2000-2100 is dropped and the
  dossier flagged with what it lacks (:data:`OPTIONAL_TIMES`: ``due_time_unreadable``,
  ``end_time_unreadable``, ``supplement_time_unreadable``, ``step_time_unreadable``); the rules then
  count it as they do without that time. Only MaHoSo, the status and the time of the event itself
  (NgayTiepNhan, a step's ThoiDiemXuLy) refuse a record;
- status 1 is not a receipt (one status-1 event, counted nowhere); 3 is a refusal at the door (one
  status-3 event at NgayTuChoi, else NgayKetThucXuLy, else NgayTiepNhan);
- the snapshot's latest event is restated with the dossier attributes (DuocSoHoa, DuocTaiSuDung,
  DuocLayTuKhoDMQG, result files, fees, DuocThanhToanTrucTuyen) and the current NgayHenTra.

The unit: the one the MaHoSo prefix names (the portal's dossier codes begin with the receiving unit's
identifier), else DonViXuLy (a code, identifier or name within the caller's units), else madonvi
(:func:`attribute_unit`). Personal data (applicant name, contacts, identity numbers) is never mapped.

Step record -> one event: TrangThai at ThoiDiemXuLy with the step (NgayKetThucTheoQuyDinh,
NgayBatDau, NguoiXuLy, NoiDungXuLy). A record with NgayBatDau and no ThoiDiemXuLy is a step started
and still open (``step.open``, at NgayBatDau); the record of the same step (department and content, and
NgayBatDau) with its ThoiDiemXuLy closes it. Step records do not carry the procedure; the dossier's procedure
and unit come from its receipt, so steps use :data:`STEP_PROCEDURE`. A step record in status 2 is
provisional too: the receipt's facts (channel, procedure, due time) come from the snapshot.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import math
import re
from collections.abc import Callable, Container, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from shared.event_flags import (
    DUE_TIME_UNREADABLE,
    END_TIME_MISSING,
    END_TIME_UNREADABLE,
    PROCEDURE_MISSING,
    PROVISIONAL,
    SNAPSHOT_FLAGS,
    STEP_TIME_UNREADABLE,
    SUPPLEMENT_TIME_UNREADABLE,
)
from shared.events import MAX_DEPTH, Reason, Rejection, is_ascii_digits, nested_deeper_than, time_in_window
from shared.timeutil import VIETNAM
from shared.units import UnitTree

SNAPSHOT = "DongBoHoSoMC"
PROGRESS = "CapNhatTienDoHoSoMC"
SERVICES = (SNAPSHOT, PROGRESS)
# Look-ups systems make on the same URL before syncing (OpenCPS: is the dossier known? the procedure's name).
LOOKUP_DOSSIER = "TraCuuHoSo"
LOOKUP_PROCEDURE = "LayThuTuc"
LOOKUPS = (LOOKUP_DOSSIER, LOOKUP_PROCEDURE)
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
    """``yyyyMMddHHmmss`` in Vietnam local time, within the window of times the rules compute with;
    empty or missing is None (an optional value)."""
    if value is None:
        return None
    text = str(value).strip()
    if not text:
        return None
    if len(text) != 14 or not is_ascii_digits(text):
        return Rejection(Reason.BAD_TIMESTAMP, f"{name} must be yyyyMMddHHmmss (Vietnam time), not {value!r}", name)
    try:
        parsed = dt.datetime(int(text[0:4]), int(text[4:6]), int(text[6:8]), int(text[8:10]), int(text[10:12]),
                             int(text[12:14]), tzinfo=VIETNAM)
    except ValueError:
        return Rejection(Reason.BAD_TIMESTAMP, f"{name} is not a real date and time: {value!r}", name)
    return time_in_window(parsed, name, value)


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


# ------------------------------------------------------------------------------ personal data

# What the indicators never need: the applicant's name, contacts and identity numbers. Kept nowhere; a
# dead letter keeps the raw record with these blanked.
PERSONAL_FIELDS = frozenset({
    "ChuHoSo", "SoDienThoai", "Email", "Fax", "DiaChi", "DiaChiChuHoSo", "SoGiayToChuHoSo", "SoDinhDanh",
    "DinhDanhCHS", "MaDoiTuong", "NguoiUyQuyen", "EmailChuHoSo", "EmailNguoiUyQuyen", "SoDienThoaiChuHoSo",
    "SoDienThoaiNguoiUyQuyen", "NgaySinh", "TrichYeuHoSo", "ThongTinKhac", "ThongTinTra",
})
# Credentials a body may carry are blanked in dead letters too.
BLANKED_FIELDS = PERSONAL_FIELDS | {"session", "password", "token"}
BLANK = ""


def blank_personal(value: Any) -> Any:
    """A copy of ``value`` with every personal field (at any depth) blanked."""
    if isinstance(value, dict):
        return {k: (BLANK if k in BLANKED_FIELDS else blank_personal(v)) for k, v in value.items()}
    if isinstance(value, list):
        return [blank_personal(v) for v in value]
    return value


_PERSONAL_TEXT = re.compile(r'("(?:' + "|".join(sorted(BLANKED_FIELDS)) + r')"\s*:\s*)"(?:[^"\\]|\\.)*"')


def blank_personal_text(text: str) -> str:
    """The same for a body that is not JSON at all: string values of personal fields blanked."""
    return _PERSONAL_TEXT.sub(r'\1""', text)


# ----------------------------------------------------------------------------------- attributes

RESULT_FILE_FIELDS = ("DuongDanTepTinKetQua", "DuongDanTepTin", "TepDinhKem", "FileKetQua", "UrlKetQua")
FEE_AMOUNT_FIELDS = ("Gia", "SoTien", "MucPhi", "MucLePhi")
# DuocTaiSuDung: 1 reused from the citizen's digitised data, 2 reused from a result already issued.
REUSED_VALUES = frozenset({"1", "2", "true"})


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


def snapshot_attributes(dossier: dict, population_db_codes: Container[str] = ()) -> dict[str, Any]:
    """The dossier attributes a snapshot states; what it does not report is left out (not set false)."""
    out: dict[str, Any] = {"synced_to_portal": True}  # this very payload is the sync to the national portal
    documents = _items(dossier.get("TaiLieuNop"))
    if documents is not None:
        documents = [d for d in documents if not _flag(d.get("IsDeleted"))]  # a deleted attachment is no part
    whole = _flag(dossier.get("HoSoCoThanhPhanSoHoa"))
    if documents is not None or whole is not None:
        out["digitized"] = bool(whole) or any(_flag(d.get("DuocSoHoa")) for d in documents or ())
    if documents is not None:
        out["reused_digitized"] = any(_text(d.get("DuocTaiSuDung")).lower() in REUSED_VALUES for d in documents)
        out["from_data_store"] = any(_flag(d.get("DuocLayTuKhoDMQG")) for d in documents)
    vneid = _flag(dossier.get("TaiKhoanDuocXacThucVoiVNeID"))
    databases = _items(dossier.get("DSKetNoiCSDL"))
    if vneid is not None or databases is not None:
        linked = any(_text(d.get("MaCSDL")) in population_db_codes for d in databases or ())
        out["population_data"] = bool(vneid) or linked
    results = _items(dossier.get("DanhSachGiayToKetQua"))
    if results is not None:
        out["e_result"] = any(_text(r.get(f)) for r in results for f in RESULT_FILE_FIELDS)
    fees = _items(dossier.get("DanhSachLePhi"))
    if fees is not None:
        # Some systems list fee lines only once paid: whether the dossier bears fees is the catalogue's
        # to say (3.6's denominator); these lines say only that fee data is present.
        out["fee_data"] = bool(fees)
        amounts = [a for a in (_amount(f.get(k)) for f in fees for k in FEE_AMOUNT_FIELDS) if a is not None]
        out["fee_required"] = any(a > 0 for a in amounts)
    paid = _text(dossier.get("DuocThanhToanTrucTuyen"))
    if paid:
        out["paid_online"] = paid in ("1", "2")  # 1: paid online via the portal, 2: via the province's gateway
    applicant = _text(dossier.get("LoaiDoiTuong"))
    if applicant.isdigit():
        out["applicant_type"] = int(applicant)
    return out


# ------------------------------------------------------------------------------------- units


def attribute_unit(tree: UnitTree, allowed: tuple[str, ...] | None, dossier_code: str, processing_unit: str,
                   madonvi: str) -> str:
    """The unit a dossier belongs to (the text to validate as its unit code; "" when nothing names one).

    The receiving unit its MaHoSo prefix names (portal dossier codes begin with it), when known; else the
    unit DonViXuLy names (a code, an identifier or a name) within the caller's units; else madonvi.
    """
    found = tree.receiver_named_by(dossier_code)
    if found:
        return found
    if processing_unit:
        scope = allowed if allowed is not None else (tree.resolve(madonvi),) if tree.resolve(madonvi) else None
        found = tree.resolve(processing_unit)
        if found and (scope is None or tree.is_within(found, scope)):
            return found
        if scope is not None:
            found = tree.named_within(processing_unit, scope)
            if found:
                return found
    return tree.resolve(madonvi) or madonvi


# -------------------------------------------------------------------------------------- mapping

UNKNOWN_PROCEDURE = "(chưa rõ thủ tục)"
ENDING = (7, 8, 9, 10)
# The times a dossier can be kept without: one that cannot be read, or lies outside the window the rules
# compute with, is dropped and the dossier flagged, rather than the dossier lost over it. Any other time
# (NgayTiepNhan, a step's ThoiDiemXuLy) is the event's own and refuses its record.
OPTIONAL_TIMES = {
    "NgayHenTra": DUE_TIME_UNREADABLE,
    "NgayHenTraTruoc": DUE_TIME_UNREADABLE,
    "NgayHenTraMoi": DUE_TIME_UNREADABLE,
    "NgayKetThucXuLy": END_TIME_UNREADABLE,
    "NgayTra": END_TIME_UNREADABLE,
    "NgayTuChoi": END_TIME_UNREADABLE,
    "NgayBoSung": SUPPLEMENT_TIME_UNREADABLE,
    "NgayTiepNhanBoSung": SUPPLEMENT_TIME_UNREADABLE,
    "NgayKetThucTheoQuyDinh": STEP_TIME_UNREADABLE,
    "NgayBatDau": STEP_TIME_UNREADABLE,
}


def read_times(record: dict, names: tuple[str, ...], *, where: str = "", required: Container[str] = ()
               ) -> tuple[dict[str, dt.datetime | None], frozenset[str]] | Rejection:
    """The record's times by name, and the flags for the optional ones dropped as unreadable.

    A time not in :data:`OPTIONAL_TIMES`, or named in ``required``, that cannot be read refuses the record;
    ``where`` prefixes the field in the reason (``DanhSachHoSoBoSung[0].``).
    """
    times: dict[str, dt.datetime | None] = {}
    dropped: set[str] = set()
    for name in names:
        parsed = parse_portal_time(record.get(name), where + name)
        if isinstance(parsed, Rejection):
            flag = None if name in required else OPTIONAL_TIMES.get(name)
            if flag is None:
                return parsed
            dropped.add(flag)
            parsed = None
        times[name] = parsed
    return times, frozenset(dropped)


def map_snapshot(dossier: Any, unit_of: Callable[[str, str], str],
                 population_db_codes: Container[str] = ()) -> tuple[str | None, list[dict] | Rejection]:
    """A ``DongBoHoSoMC`` dossier -> canonical events (or the reason it cannot be kept at all).

    ``unit_of(MaHoSo, DonViXuLy)`` names the dossier's unit (:func:`attribute_unit`).
    """
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
    read = read_times(dossier, ("NgayTiepNhan", "NgayHenTra", "NgayKetThucXuLy", "NgayTra", "NgayTuChoi"))
    if isinstance(read, Rejection):
        return code, read
    times, dropped = read
    flags: dict[str, Any] = {flag: flag in dropped for flag in SNAPSHOT_FLAGS}  # all stated: a resend corrects
    procedure = _code(dossier, "MaTTHC")
    if isinstance(procedure, Rejection):
        if procedure.reason != Reason.MISSING_FIELD:
            return code, procedure
        procedure, flags[PROCEDURE_MISSING] = UNKNOWN_PROCEDURE, True
    unit = unit_of(code, _text(dossier.get("DonViXuLy")))
    if not unit:
        return code, Rejection(Reason.MISSING_FIELD, "no unit: give madonvi (or MaDinhDanhDV), or a MaHoSo that "
                               "begins with a known unit's identifier", "madonvi")
    received = times["NgayTiepNhan"]
    attributes = snapshot_attributes(dossier, population_db_codes)

    def make(status_: int, at: dt.datetime, **extra: Any) -> dict:
        return _event(code, unit, procedure, status_, at, **extra)

    # Status 1 (Mới đăng ký) is not a receipt, whatever dates come with it; 3 is a refusal at the door.
    if status == 1:
        return code, [make(1, received, attributes={**attributes, **flags})] if received else []
    if status == 3:
        refused = times["NgayTuChoi"] or times["NgayKetThucXuLy"] or received
        return code, [make(3, refused, attributes={**attributes, **flags})] if refused else []
    if received is None:
        return code, Rejection(Reason.MISSING_FIELD, f"NgayTiepNhan is required for a dossier in status {status}",
                               "NgayTiepNhan")

    supplements = []
    for position, entry in enumerate(_items(dossier.get("DanhSachHoSoBoSung")) or ()):
        read = read_times(entry, ("NgayBoSung", "NgayTiepNhanBoSung", "NgayHenTraTruoc", "NgayHenTraMoi"),
                          where=f"DanhSachHoSoBoSung[{position}].")
        if isinstance(read, Rejection):
            return code, read
        parsed_entry, dropped = read
        flags.update(dict.fromkeys(dropped, True))
        if parsed_entry["NgayBoSung"] is not None:  # an entry without its request time says nothing usable
            supplements.append(parsed_entry)
    supplements.sort(key=lambda s: s["NgayBoSung"])
    due_at_receipt = next((s["NgayHenTraTruoc"] for s in supplements if s["NgayHenTraTruoc"]), None)
    due_at_receipt = due_at_receipt or times["NgayHenTra"]

    events = [make(2, received, channel=channel, due_at=due_at_receipt)]
    for entry in supplements:
        events.append(make(5, entry["NgayBoSung"]))
        if entry["NgayTiepNhanBoSung"] is not None:
            events.append(make(4, entry["NgayTiepNhanBoSung"], due_at=entry["NgayHenTraMoi"]))
    if status in ENDING:
        # The claimed end is provisional: a step record's reported status at the same instant wins (the
        # systems that send 5, 6 and 8 as 9). With no time for it, the end comes from the step records, or
        # the dossier stays open for the rules, flagged.
        claimed = {PROVISIONAL: True}
        ended, returned = times["NgayKetThucXuLy"], times["NgayTra"] if status == 10 else None
        if ended is not None:
            events.append(make(9 if status == 10 else status, ended, attributes=claimed))
        if returned is not None:
            events.append(make(10, returned))
        flags[END_TIME_MISSING] = ended is None and returned is None

    # Restate the latest event with what the snapshot says about the dossier now.
    latest = max(enumerate(events), key=lambda pair: (pair[1]["occurred_at"], pair[0]))[1]
    latest_at = dt.datetime.fromisoformat(latest["occurred_at"])
    state_attributes = {**(latest.get("attributes") or {}), **attributes, **flags}
    extra = {k: latest[k] for k in ("channel",) if k in latest}
    state = make(latest["status"], latest_at, due_at=times["NgayHenTra"] or latest.get("due_at"),
                 attributes=state_attributes, **extra)
    if all(state["event_id"] != e["event_id"] for e in events):
        events.append(state)
    return code, events


def map_step(step: Any, unit_of: Callable[[str, str], str]) -> tuple[str | None, list[dict] | Rejection]:
    """A ``CapNhatTienDoHoSoMC`` step record -> one canonical event."""
    if not isinstance(step, dict):
        return None, Rejection(Reason.NOT_AN_OBJECT, "each element of data must be a JSON object")
    code = _code(step, "MaHoSo")
    if isinstance(code, Rejection):
        return None, code
    status = _small_int(step.get("TrangThai"), "TrangThai", 1, 10, Reason.BAD_STATUS, required=True)
    if isinstance(status, Rejection):
        return code, status
    read = read_times(step, ("ThoiDiemXuLy",))
    if isinstance(read, Rejection):
        return code, read
    at = read[0]["ThoiDiemXuLy"]
    # NgayBatDau is the time of a step still open (no ThoiDiemXuLy): then it cannot be done without.
    read = read_times(step, ("NgayBatDau", "NgayKetThucTheoQuyDinh"), required=("NgayBatDau",) if at is None else ())
    if isinstance(read, Rejection):
        return code, read
    times, dropped = read
    # A record with its start (NgayBatDau) and no processing time yet is a step started and still open.
    still_open = at is None and times["NgayBatDau"] is not None
    if still_open:
        at = times["NgayBatDau"]
    if at is None:
        return code, Rejection(Reason.MISSING_FIELD, "ThoiDiemXuLy (or, for a step still open, NgayBatDau) is "
                               "required", "ThoiDiemXuLy")
    unit = unit_of(code, "")
    if not unit:
        return code, Rejection(Reason.MISSING_FIELD, "no unit: give madonvi (or MaDinhDanhDV), or a MaHoSo that "
                               "begins with a known unit's identifier", "madonvi")
    handler = " - ".join(t for t in (_text(step.get("NguoiXuLy")), _text(step.get("ChucDanh"))) if t)
    name = " - ".join(t for t in (_text(step.get("PhongBanXuLy")), _text(step.get("NoiDungXuLy"))) if t)
    detail = {
        k: v
        for k, v in (
            ("name", name or None),
            ("handler", handler or None),
            ("due_at", _iso(times["NgayKetThucTheoQuyDinh"])),
            ("started_at", _iso(times["NgayBatDau"])),
            ("open", True if still_open else None),
        )
        if v is not None
    }
    # A step's receipt is claimed (the receipt's facts come from the snapshot); so is a step's 9, which
    # systems also make up for 5, 6 and 8 (a step reported at the same instant says which it was).
    attributes = {PROVISIONAL: True} if status in (2, 9) else {}
    attributes.update(dict.fromkeys(dropped, True))
    return code, [_event(code, unit, STEP_PROCEDURE, status, at, step=detail or None, attributes=attributes)]


# ------------------------------------------------------------------------------------ envelopes


@dataclass(frozen=True)
class Envelope:
    """A portal call, however it came: the JSON envelope, or a bare array with the rest in the query."""

    service: str
    madonvi: str
    data: Any
    session: str = ""


def _query_value(query: Mapping[str, str], *names: str) -> str:
    lowered = {k.lower(): v for k, v in query.items()}
    return next((lowered[n.lower()].strip() for n in names if lowered.get(n.lower(), "").strip()), "")


def _infer_service(data: Any) -> str | None:
    first = next((r for r in data if isinstance(r, dict)), None) if isinstance(data, list) else None
    if first is None:
        return None
    if "TrangThaiHoSo" in first or "NgayTiepNhan" in first:
        return SNAPSHOT
    if "ThoiDiemXuLy" in first or "TrangThai" in first:
        return PROGRESS
    return None


def read_envelope(payload: Any, *, query: Mapping[str, str] = {}, service: str | None = None) -> Envelope | Rejection:
    """The call's service, unit, records and session, from the body, the path (``service``) and the query.

    A provincial gateway relays a bare array, with the unit (``madonvi`` or ``MaDinhDanhDV``) and
    ``isUpdating`` in the query string; the service is then the path's, the query's, or the records' own.
    """
    if isinstance(payload, list):
        body: dict[str, Any] = {"data": payload}
    elif isinstance(payload, dict):
        body = payload
    else:
        return Rejection(PortalReason.BAD_PAYLOAD, "the body must be a JSON object with service, madonvi and data, "
                         "or an array of records")
    named = _text(body.get("service")) or service or _query_value(query, "service") or _infer_service(body.get("data"))
    if not named:
        return Rejection(PortalReason.UNKNOWN_SERVICE, f"service is required: one of {', '.join(SERVICES)}", "service")
    if service and named.lower() != service.lower():
        return Rejection(PortalReason.UNKNOWN_SERVICE, f"the body says service {named!r} but the path says "
                         f"{service!r}", "service")
    canonical = next((s for s in SERVICES + LOOKUPS if s.lower() == named.lower()), None)
    if canonical is None:
        return Rejection(PortalReason.UNKNOWN_SERVICE, f"service must be one of {', '.join(SERVICES)}, not {named!r}",
                         "service")
    madonvi = _text(body.get("madonvi")) or _query_value(query, "madonvi", "MaDinhDanhDV", "MaDonVi")
    return Envelope(canonical, madonvi, body.get("data"), _text(body.get("session")))


def map_payload(envelope: Envelope, tree: UnitTree, *, allowed: tuple[str, ...] | None = None,
                population_db_codes: Container[str] = ()) -> MappedPayload | Rejection:
    """A sync call's records -> mapped items (one per record), or why the call cannot be read at all.

    ``allowed``: the caller's units (None: any), within which DonViXuLy is looked up by name.
    """
    if envelope.service not in SERVICES:
        return Rejection(PortalReason.UNKNOWN_SERVICE, f"{envelope.service} carries no dossier records", "service")
    data = envelope.data
    if not isinstance(data, list):
        return Rejection(PortalReason.DATA_NOT_ARRAY, "data must be an array of records", "data")
    madonvi = envelope.madonvi
    if not madonvi and allowed is not None and len(allowed) == 1:
        madonvi = allowed[0]  # a key bound to one unit names it

    def unit_of(dossier_code: str, processing_unit: str) -> str:
        return attribute_unit(tree, allowed, dossier_code, processing_unit, madonvi)

    items = []
    for index, record in enumerate(data):
        if nested_deeper_than(record, MAX_DEPTH):
            items.append(MappedItem(index, None, (), Rejection(
                Reason.TOO_DEEP, f"a record may nest objects and arrays at most {MAX_DEPTH} levels deep")))
            continue
        if envelope.service == SNAPSHOT:
            code, mapped = map_snapshot(record, unit_of, population_db_codes)
        else:
            code, mapped = map_step(record, unit_of)
        if isinstance(mapped, Rejection):
            items.append(MappedItem(index, code, (), mapped))
        else:
            items.append(MappedItem(index, code, tuple(mapped)))
    return MappedPayload(envelope.service, tree.resolve(madonvi) or madonvi, items)
