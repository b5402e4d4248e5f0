"""The national portal's payloads -> canonical events: pure, no database."""

from __future__ import annotations

import dataclasses
import datetime as dt
import random

import pytest

from services.indicators.engine import history_event
from services.indicators.rules.dossier import PROVISIONAL, HistoryEvent, assess, derive_facts
from services.ingest.portal_mapping import (
    STEP_PROCEDURE,
    MappedPayload,
    map_payload,
    parse_portal_time,
    read_envelope,
    snapshot_attributes,
)
from shared.calendar import WorkingCalendar
from shared.events import DossierEvent, Rejection, validate_event
from shared.settings import CalendarSettings
from shared.timeutil import VIETNAM
from shared.units import Unit, UnitTree
from tests.support.portal import (
    Story,
    StepRecord,
    final_attributes,
    progress_call,
    sample_stories,
    snapshot_call,
    vn,
)

TREE = UnitTree([Unit("H44", "UBND tỉnh Phú Thọ", "PROVINCE"),
                 Unit("H44.03", "Ban quản lý các khu công nghiệp", "DEPARTMENT", "H44"),
                 Unit("H44.07", "Sở Công Thương - Tỉnh Phú Thọ", "DEPARTMENT", "H44", identifier="000.00.07.H44")])


def map_call(payload, *, service=None, query=None, allowed=None):
    envelope = read_envelope(payload, query=query or {}, service=service)
    return envelope if isinstance(envelope, Rejection) else map_payload(envelope, TREE, allowed=allowed)


@pytest.fixture(scope="module")
def calendar() -> WorkingCalendar:
    return WorkingCalendar.from_settings(CalendarSettings(first_year=2026, last_year=2027))


def mapped(payload: dict) -> MappedPayload:
    result = map_call(payload)
    assert isinstance(result, MappedPayload), result
    return result


def events_of(payload: dict) -> list[dict]:
    out = []
    for item in mapped(payload).items:
        assert item.rejection is None, item.rejection
        out.extend(item.events)
    return out


# -------------------------------------------------------------------------------------- values


def test_portal_time_is_vietnam_local():
    assert parse_portal_time("20260803081530", "t") == dt.datetime(2026, 8, 3, 8, 15, 30, tzinfo=VIETNAM)
    assert parse_portal_time("20260803081530", "t").utcoffset() == dt.timedelta(hours=7)
    assert parse_portal_time("", "t") is None
    assert parse_portal_time(None, "t") is None
    for bad in ("2026-08-03 08:15", "202608030815", "20261303081530", "20260230081530", "2026080308153x"):
        rejection = parse_portal_time(bad, "NgayTiepNhan")
        assert isinstance(rejection, Rejection) and rejection.reason == "bad_timestamp", bad
        assert rejection.field == "NgayTiepNhan"


def test_snapshot_attributes_from_attachments_fees_and_payment():
    story = sample_stories()[0]
    attributes = snapshot_attributes(story.snapshot_at(vn(2026, 8, 31)))
    assert attributes == {
        "synced_to_portal": True,
        "digitized": True,
        "reused_digitized": True,
        "from_data_store": True,
        "e_result": True,
        "fee_data": True,
        "fee_required": True,
        "paid_online": True,
    }
    # Not reported (missing or empty strings): left out, never turned into false.
    assert snapshot_attributes({"HoSoCoThanhPhanSoHoa": "", "DuocThanhToanTrucTuyen": ""}) == {"synced_to_portal": True}
    assert snapshot_attributes({"TaiLieuNop": [{"DuocSoHoa": "0"}], "DanhSachLePhi": [{"Gia": "0"}],
                                "DanhSachGiayToKetQua": [{"TenGiayTo": "x"}], "DuocThanhToanTrucTuyen": "0"}) == {
        "synced_to_portal": True, "digitized": False, "reused_digitized": False, "from_data_store": False,
        "e_result": False, "fee_data": True, "fee_required": False, "paid_online": False}


# ------------------------------------------------------------------------------------ snapshots


def test_resent_snapshot_maps_to_the_same_event_ids():
    story = sample_stories()[1]
    now = vn(2026, 8, 5, 12)
    first = events_of(snapshot_call("H44.03", [story.snapshot_at(now)]))
    again = events_of(snapshot_call("H44.03", [story.snapshot_at(now)]))
    assert [e["event_id"] for e in first] == [e["event_id"] for e in again]
    assert first == again
    assert all(e["event_id"].startswith(f"dvcqg:{story.code}:") for e in first)
    assert len({e["event_id"] for e in first}) == len(first)


def test_changed_snapshot_keeps_history_and_adds_only_new_identities():
    story = sample_stories()[1]
    before = {e["event_id"]: e for e in events_of(snapshot_call("H44.03", [story.snapshot_at(vn(2026, 8, 5, 12))]))}
    after = {e["event_id"]: e for e in events_of(snapshot_call("H44.03", [story.snapshot_at(vn(2026, 8, 20))]))}
    # Same id -> same body (never a conflict); the receipt and the supplement request are shared.
    for event_id in before.keys() & after.keys():
        assert before[event_id] == after[event_id]
    shared = {(e["status"], e["occurred_at"]) for i, e in before.items() if i in after}
    assert (2, vn(2026, 8, 4, 9).isoformat()) in shared
    assert (5, vn(2026, 8, 5, 9).isoformat()) in shared
    receipt = next(e for e in after.values() if e["status"] == 2 and "attributes" not in e)
    # Due time as it was at receipt (NgayHenTraTruoc), the new one kept on the supplement's return.
    assert receipt["due_at"] == vn(2026, 8, 10, 17).isoformat()
    assert receipt["channel"] == 1 and receipt["procedure_code"] == "1.005678" and receipt["unit_code"] == "H44.03"
    back = next(e for e in after.values() if e["status"] == 4)
    assert back["occurred_at"] == vn(2026, 8, 6, 9).isoformat() and back["due_at"] == vn(2026, 8, 14, 17).isoformat()
    ends = [e for e in after.values() if e["status"] == 9]
    assert ends and all(e["attributes"][PROVISIONAL] is True for e in ends)
    returned = [e for e in after.values() if e["status"] == 10]
    assert {e["occurred_at"] for e in returned} == {vn(2026, 8, 18, 8).isoformat()}
    # Every mapped event is a valid canonical event.
    for event in after.values():
        assert isinstance(validate_event(event, "s"), DossierEvent)


def test_processing_unit_used_when_known_else_madonvi():
    story = sample_stories()[0]
    known = events_of(snapshot_call("H44", [story.snapshot_at(vn(2026, 8, 3, 9), unit="H44.07")]))
    unknown = events_of(snapshot_call("H44", [story.snapshot_at(vn(2026, 8, 3, 9), unit="Sở Công Thương")]))
    assert {e["unit_code"] for e in known} == {"H44.07"}
    assert {e["unit_code"] for e in unknown} == {"H44"}


def test_not_received_snapshot_records_nothing():
    record = {"MaHoSo": "X1", "MaTTHC": "1.1", "TrangThaiHoSo": "1", "NgayTiepNhan": "", "KenhThucHien": "2"}
    [item] = mapped(snapshot_call("H44.03", [record])).items
    assert item.rejection is None and item.events == ()


# ------------------------------------------------------------------------------------------ steps


def test_step_record_maps_to_one_event_with_its_step():
    step = {"MaHoSo": "HS-9", "NguoiXuLy": "Lê Văn C", "ChucDanh": "Chuyên viên", "ThoiDiemXuLy": "20260805100000",
            "PhongBanXuLy": "Phòng Kinh tế", "NoiDungXuLy": "Thẩm định", "TrangThai": "4",
            "NgayBatDau": "20260804090000", "NgayKetThucTheoQuyDinh": ""}
    [event] = events_of(progress_call("H44.03", [step]))
    assert event["status"] == 4 and event["unit_code"] == "H44.03" and event["procedure_code"] == STEP_PROCEDURE
    assert event["occurred_at"] == vn(2026, 8, 5, 10).isoformat()
    assert event["step"] == {"name": "Phòng Kinh tế - Thẩm định", "handler": "Lê Văn C - Chuyên viên",
                             "started_at": vn(2026, 8, 4, 9).isoformat()}
    assert "attributes" not in event
    [again] = events_of(progress_call("H44.03", [dict(step)]))
    assert again["event_id"] == event["event_id"]


# ------------------------------------------------------------------------------------- malformed


def test_malformed_records_refused_one_by_one_good_ones_kept():
    good = sample_stories()[0].snapshot_at(vn(2026, 8, 3, 9))
    bad_date = {**good, "MaHoSo": "BAD-DATE", "NgayTiepNhan": "03/08/2026"}
    bad_status = {**good, "MaHoSo": "BAD-STATUS", "TrangThaiHoSo": "11"}
    no_code = {**good, "MaHoSo": ""}
    ended_without_time = {**good, "MaHoSo": "NO-END", "TrangThaiHoSo": "9", "NgayKetThucXuLy": ""}
    items = mapped(snapshot_call("H44.03", [bad_date, good, bad_status, no_code, "not an object",
                                            ended_without_time])).items
    outcome = [(i.index, i.dossier_code, i.rejection.reason if i.rejection else None, i.rejection and i.rejection.field)
               for i in items]
    assert outcome == [
        (0, "BAD-DATE", "bad_timestamp", "NgayTiepNhan"),
        (1, good["MaHoSo"], None, None),
        (2, "BAD-STATUS", "bad_status", "TrangThaiHoSo"),
        (3, None, "missing_field", "MaHoSo"),
        (4, None, "not_an_object", None),
        (5, "NO-END", None, None),  # kept: the receipt and all else, flagged
    ]
    assert items[1].events
    assert items[5].events[-1]["attributes"]["end_time_missing"] is True
    assert {e["status"] for e in items[5].events} == {2}
    steps = mapped(progress_call("H44.03", [{"MaHoSo": "S1", "TrangThai": "12", "ThoiDiemXuLy": "20260805100000"},
                                            {"MaHoSo": "S2", "TrangThai": "4", "ThoiDiemXuLy": ""},
                                            {"MaHoSo": "S3", "TrangThai": "4", "ThoiDiemXuLy": "20260805100000"}])).items
    assert [i.rejection.reason if i.rejection else None for i in steps] == ["bad_status", "missing_field", None]


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        ({"service": "DongBoHoSoMC", "madonvi": "H44.03", "data": {"MaHoSo": "X"}}, "data_not_array"),
        ({"service": "DongBoHoSoMC", "madonvi": "H44.03", "data": "[]"}, "data_not_array"),
        ({"service": "DongBoHoSoMC", "madonvi": "H44.03"}, "data_not_array"),
        ({"service": "XoaHoSo", "madonvi": "H44.03", "data": []}, "unknown_service"),
        ([{"MaHoSo": "X"}], "unknown_service"),  # a bare array whose records say neither service
        ("DongBoHoSoMC", "bad_payload"),
    ],
)
def test_unreadable_payloads(payload, reason):
    result = map_call(payload)
    assert isinstance(result, Rejection) and result.reason == reason


def test_path_service_must_agree_with_body():
    assert isinstance(map_call(snapshot_call("H44.03", []), service="CapNhatTienDoHoSoMC"), Rejection)
    body = {"madonvi": "H44.03", "data": []}
    assert map_call(body, service="CapNhatTienDoHoSoMC").service == "CapNhatTienDoHoSoMC"


# ------------------------------------------------------------------- same facts as canonical events


def portal_history(story: Story, rng: random.Random) -> list[HistoryEvent]:
    """What the system pushes: a snapshot after every change (some re-sent twice), step records
    shuffled into separate calls; returned as the dossier's stored history (duplicates removed)."""
    calls = [snapshot_call("H44.03", [story.snapshot_at(moment)]) for moment in story.moments()]
    calls += [snapshot_call("H44.03", [story.snapshot_at(rng.choice(story.moments()))]) for _ in range(2)]
    calls += [progress_call("H44.03", [step]) for step in story.step_records()]
    rng.shuffle(calls)
    stored: dict[str, dict] = {}
    for call in calls:
        for event in events_of(call):
            previous = stored.setdefault(event["event_id"], event)
            assert previous == event  # never a conflict
    return [history_event(seq, validate_event(body, "s").body()) for seq, body in enumerate(stored.values())]


def canonical_history(story: Story, attributes: dict) -> list[HistoryEvent]:
    return [history_event(seq, validate_event(body, "s").body())
            for seq, body in enumerate(story.canonical("H44.03", attributes))]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_portal_history_gives_the_same_facts_as_canonical_events(calendar, seed):
    rng = random.Random(seed)
    for story in sample_stories():
        final = final_attributes(story)
        portal = derive_facts(story.code, portal_history(story, rng), calendar)
        canonical = derive_facts(story.code, canonical_history(story, final), calendar)
        ignore = {"unit_code", "current_status"}
        assert {k: v for k, v in dataclasses.asdict(portal).items() if k not in ignore} == {
            k: v for k, v in dataclasses.asdict(canonical).items() if k not in ignore}, story.code
        assert assess(portal, calendar) == assess(canonical, calendar), story.code


def test_step_status_wins_over_a_snapshot_claiming_9(calendar):
    quirk = next(s for s in sample_stories() if s.code.endswith("005"))
    facts = derive_facts(quirk.code, portal_history(quirk, random.Random(7)), calendar)
    assert facts.ended_at is None and facts.end_status is None
    assert facts.supplement_count == 1 and facts.outstanding_supplement_at == vn(2026, 8, 11, 9)
    assert PROVISIONAL not in facts.attributes
    # Without the step record, the snapshot's claim is all we know: the dossier ended.
    alone = [e for e in portal_history(quirk, random.Random(7)) if e.procedure_code != STEP_PROCEDURE]
    assert derive_facts(quirk.code, alone, calendar).end_status == 9


def test_receipt_facts_come_from_the_snapshot_not_a_step_record(calendar):
    story = Story("HS-R", "1.009", vn(2026, 8, 3, 8), vn(2026, 8, 7, 17), channel=2,
                  steps=[StepRecord(2, vn(2026, 8, 3, 8), due=vn(2026, 8, 3, 17))])
    steps = events_of(progress_call("H44.03", story.step_records()))
    snaps = events_of(snapshot_call("H44.03", [story.snapshot_at(vn(2026, 8, 3, 8))]))
    history = [history_event(seq, validate_event(b, "s").body()) for seq, b in enumerate(steps + snaps)]
    facts = derive_facts(story.code, history, calendar)
    assert (facts.channel, facts.procedure_code, facts.due_at_received) == (2, "1.009", vn(2026, 8, 7, 17))
    assert facts.steps == 1
