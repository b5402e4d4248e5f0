"""The national portal's payloads -> canonical events: pure, no database."""

from __future__ import annotations

import dataclasses
import datetime as dt
import random

import orjson
import pytest

from services.indicators.engine import history_event
from services.indicators.rules.dossier import HistoryEvent, assess, derive_facts
from services.ingest.portal_mapping import (
    STEP_PROCEDURE,
    MappedPayload,
    map_payload,
    parse_portal_time,
    read_envelope,
    snapshot_attributes,
)
from shared.calendar import WorkingCalendar
from shared.event_flags import PROVISIONAL, SNAPSHOT_FLAGS
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
    return [history_event(seq, validate_event(body, "s")) for seq, body in enumerate(stored.values())]


def canonical_history(story: Story, attributes: dict) -> list[HistoryEvent]:
    return [history_event(seq, validate_event(body, "s"))
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
    history = [history_event(seq, validate_event(b, "s")) for seq, b in enumerate(steps + snaps)]
    facts = derive_facts(story.code, history, calendar)
    assert (facts.channel, facts.procedure_code, facts.due_at_received) == (2, "1.009", vn(2026, 8, 7, 17))
    assert facts.steps == 1


# ------------------------------------------------------------------- real systems' habits (clients.md)


def test_envelope_from_the_query_string_for_a_bare_array():
    record = sample_stories()[0].snapshot_at(vn(2026, 8, 3, 9))
    envelope = read_envelope([record], query={"MaDinhDanhDV": "000.00.07.H44", "isUpdating": "True"},
                             service="DongBoHoSoMC")
    assert (envelope.service, envelope.madonvi, envelope.data) == ("DongBoHoSoMC", "000.00.07.H44", [record])
    # No service anywhere: the records say which (a snapshot has TrangThaiHoSo, a step ThoiDiemXuLy).
    assert read_envelope([record], query={"madonvi": "H44.07"}).service == "DongBoHoSoMC"
    assert read_envelope([{"MaHoSo": "X", "TrangThai": "4", "ThoiDiemXuLy": "20260803090000"}]).service == \
        "CapNhatTienDoHoSoMC"
    assert read_envelope({"service": "TraCuuHoSo", "MaHoSo": "X", "session": "s"}).session == "s"
    # The identifier names the unit: events carry our code.
    [item] = map_payload(envelope, TREE).items
    assert {e["unit_code"] for e in item.events} == {"H44.07"}


def test_value_habits_null_numbers_and_booleans():
    habits = {"MaHoSo": "V-1", "MaTTHC": "1.1", "TrangThaiHoSo": 4, "KenhThucHien": 2, "NgayTiepNhan": 20260803080000,
              "NgayHenTra": None, "NgayKetThucXuLy": None, "NgayTra": None, "HoSoCoThanhPhanSoHoa": True,
              "TaiLieuNop": [{"DuocSoHoa": 1, "DuocTaiSuDung": 2, "DuocLayTuKhoDMQG": False, "IsDeleted": 0}],
              "DanhSachLePhi": None, "DanhSachHoSoBoSung": None, "DuocThanhToanTrucTuyen": None}
    [item] = mapped(snapshot_call("H44.07", [habits])).items
    receipt, state = item.events
    assert (receipt["status"], receipt["channel"], receipt["occurred_at"]) == (2, 2, vn(2026, 8, 3, 8).isoformat())
    assert state["attributes"] == {"synced_to_portal": True, "digitized": True, "reused_digitized": True,
                                   "from_data_store": False, **dict.fromkeys(SNAPSHOT_FLAGS, False)}


def test_reuse_deleted_attachments_vneid_and_population_databases():
    docs = [{"DuocTaiSuDung": "1", "IsDeleted": "True"}, {"DuocTaiSuDung": "0", "IsDeleted": "False", "DuocSoHoa": "1"}]
    assert snapshot_attributes({"TaiLieuNop": docs})["reused_digitized"] is False  # the reused one was deleted
    assert snapshot_attributes({"TaiLieuNop": [{"DuocTaiSuDung": "2"}]})["reused_digitized"] is True
    assert snapshot_attributes({"TaiKhoanDuocXacThucVoiVNeID": "1"})["population_data"] is True
    linked = {"TaiKhoanDuocXacThucVoiVNeID": "0", "DSKetNoiCSDL": [{"MaCSDL": "7"}]}
    assert snapshot_attributes(linked)["population_data"] is False  # 7 is not configured as the population DB
    assert snapshot_attributes(linked, population_db_codes={"7"})["population_data"] is True
    assert "population_data" not in snapshot_attributes({})
    assert snapshot_attributes({"LoaiDoiTuong": "2"})["applicant_type"] == 2


def test_status_1_is_not_a_receipt_and_3_is_a_refusal_at_the_door():
    base = {"MaHoSo": "S-1", "MaTTHC": "1.1", "NgayTiepNhan": "20260803080000", "NgayHenTra": ""}
    [submitted] = mapped(snapshot_call("H44.07", [{**base, "TrangThaiHoSo": "1"}])).items
    assert [e["status"] for e in submitted.events] == [1]
    [refused] = mapped(snapshot_call("H44.07", [{**base, "TrangThaiHoSo": "3", "NgayTuChoi": "20260803100000"}])).items
    assert [(e["status"], e["occurred_at"]) for e in refused.events] == [(3, vn(2026, 8, 3, 10).isoformat())]


def test_an_end_without_its_time_keeps_the_dossier_flagged(calendar):
    base = {"MaHoSo": "E-1", "MaTTHC": "1.1", "NgayTiepNhan": "20260803080000", "NgayHenTra": "20260810170000"}
    [item] = mapped(snapshot_call("H44.07", [{**base, "TrangThaiHoSo": "10", "NgayTra": "", "NgayKetThucXuLy": ""}])).items
    assert {e["status"] for e in item.events} == {2} and item.events[-1]["attributes"]["end_time_missing"] is True
    # 10 with only NgayKetThucXuLy: the end is known, the return is not.
    [item] = mapped(snapshot_call("H44.07", [{**base, "TrangThaiHoSo": "10", "NgayKetThucXuLy": "20260805100000"}])).items
    assert [e["status"] for e in item.events][:2] == [2, 9]
    assert item.events[-1]["attributes"]["end_time_missing"] is False
    # No MaTTHC: kept under a placeholder procedure, flagged.
    [item] = mapped(snapshot_call("H44.07", [{**base, "MaTTHC": "", "TrangThaiHoSo": "2"}])).items
    assert item.events[0]["procedure_code"] == "(chưa rõ thủ tục)"
    assert item.events[-1]["attributes"]["procedure_missing"] is True


def test_a_made_up_9_step_yields_only_to_a_collapsed_status_at_the_same_instant(calendar):
    def history(*steps):
        snapshot = events_of(snapshot_call("H44.07", [{"MaHoSo": "Q-1", "MaTTHC": "1.1", "TrangThaiHoSo": "4",
                                                        "NgayTiepNhan": "20260803080000"}]))
        records = [{"MaHoSo": "Q-1", "TrangThai": s, "ThoiDiemXuLy": t} for s, t in steps]
        bodies = snapshot + events_of(progress_call("H44.07", records))
        return [history_event(seq, validate_event(b, "s")) for seq, b in enumerate(bodies)]

    collapsed = derive_facts("Q-1", history(("5", "20260804090000"), ("9", "20260804090000")), calendar)
    assert (collapsed.ended_at, collapsed.supplement_count) == (None, 1)
    finished = derive_facts("Q-1", history(("4", "20260808100000"), ("9", "20260808100000")), calendar)
    assert finished.ended_at == vn(2026, 8, 8, 10)


def test_unit_attribution_prefix_then_processing_unit_then_madonvi():
    tree = UnitTree([Unit("H44", "UBND tỉnh", "PROVINCE", identifier="000.00.00.H44"),
                     Unit("H44.07", "Sở Công Thương", "DEPARTMENT", "H44", identifier="000.00.07.H44"),
                     Unit("H44.100", "UBND Phường Việt Trì", "COMMUNE", "H44", identifier="000.20.01.H44"),
                     Unit("H45", "UBND tỉnh khác", "PROVINCE"),
                     Unit("H45.07", "Sở Công Thương", "DEPARTMENT", "H45")])
    from services.ingest.portal_mapping import attribute_unit

    assert attribute_unit(tree, ("H44",), "000.20.01.H44-260805-0002", "Sở Công Thương", "000.00.00.H44") == "H44.100"
    assert attribute_unit(tree, ("H44",), "HS-1", "sở  công thương", "000.00.00.H44") == "H44.07"  # by name, in H44
    assert attribute_unit(tree, ("H45",), "HS-1", "Sở Công Thương", "H45") == "H45.07"
    assert attribute_unit(tree, ("H44",), "HS-1", "Phòng không có", "000.00.00.H44") == "H44"
    assert attribute_unit(tree, None, "HS-1", "", "H99") == "H99"  # unknown: refused downstream as unknown_unit
    assert tree.resolve("000.00.07.H44") == "H44.07" and tree.resolve("H44.07") == "H44.07"


def test_units_file_carries_identifiers():
    from shared.units import load_units_text

    units = load_units_text("code,name,level,parent,identifier\nH44,UBND tỉnh,PROVINCE,,000.00.00.H44\n"
                            "H44.07,Sở Công Thương,DEPARTMENT,H44,000.00.07.H44\nH44.08,Sở GD,DEPARTMENT,H44,\n")
    assert [(u.code, u.identifier) for u in units] == [("H44", "000.00.00.H44"), ("H44.07", "000.00.07.H44"),
                                                       ("H44.08", None)]
    json_units = load_units_text('[{"code": "H44", "name": "x", "level": "PROVINCE", "ma_dinh_danh": "000.00.00.H44"}]')
    assert json_units[0].identifier == "000.00.00.H44"


def test_personal_data_blanked_for_dead_letters():
    from services.ingest.portal_mapping import blank_personal, blank_personal_text

    record = {"MaHoSo": "P-1", "ChuHoSo": "Trần Thị Bình", "SoDienThoai": "0912", "session": "secret",
              "DinhDanhCHS": [{"SoDinhDanh": "001"}], "TaiLieuNop": [{"TenTepDinhKem": "a"}]}
    assert blank_personal(record) == {"MaHoSo": "P-1", "ChuHoSo": "", "SoDienThoai": "", "session": "",
                                      "DinhDanhCHS": "", "TaiLieuNop": [{"TenTepDinhKem": "a"}]}
    assert blank_personal_text('{"ChuHoSo": "Trần \\"Bình\\"", "MaHoSo": "P-1", "Email":"a@b"') == \
        '{"ChuHoSo": "", "MaHoSo": "P-1", "Email":""'


def test_sessions_are_bound_to_their_key_and_expire():
    from shared.auth import KeyRing
    from shared.settings import ApiKey

    ring = KeyRing({"k1": ApiKey(role="source", source="s1", units=["H44"]), "k2": ApiKey(role="reader")},
                   session_secret=b"server-secret")
    token = ring.issue_session("k1", 60, now=1000)
    assert ring.lookup_session(token, now=1059).source == "s1"
    assert ring.lookup_session(token, now=1061) == "expired"
    assert ring.lookup_session(token.replace("dvcs1.", "dvcs1.0"), now=1000) is None
    assert ring.issue_session("unknown", 60) is None
    other = KeyRing({"k1-rotated": ApiKey(role="source", source="s1", units=["H44"])}, session_secret=b"server-secret")
    assert other.lookup_session(token, now=1000) is None  # the key is gone: so are its sessions


def test_a_session_cannot_be_forged_from_a_keys_hash():
    """Configured keys may be hashes anyone reading the configuration sees: a session is signed with the
    server's secret too, so the hash alone (or another deployment's secret) forges nothing."""
    import hashlib
    import hmac

    from shared.auth import SESSION_PREFIX, KeyRing, hashed_key
    from shared.settings import ApiKey

    spec = ApiKey(role="source", source="s1", units=["H44"])
    ring = KeyRing({hashed_key("k1"): spec}, session_secret=b"server-secret")
    genuine = ring.issue_session("k1", 60, now=1000)
    assert ring.lookup_session(genuine, now=1000).source == "s1"
    payload = genuine.rpartition(".")[0]
    digest = hashlib.sha256(b"k1").digest()
    forged = f"{payload}.{hmac.new(digest, payload.encode(), hashlib.sha256).hexdigest()}"
    assert forged.startswith(SESSION_PREFIX) and forged != genuine
    assert ring.lookup_session(forged, now=1000) is None
    elsewhere = KeyRing({hashed_key("k1"): spec}, session_secret=b"another-secret")
    assert elsewhere.lookup_session(genuine, now=1000) is None
    assert KeyRing({hashed_key("k1"): spec}).issue_session("k1", 60) is None  # no secret: no sessions


def test_a_step_record_without_its_processing_time_is_a_step_still_open(calendar):
    """QuaTrinhXuLy with NgayBatDau and no ThoiDiemXuLy: started and still open (step.open), at its start;
    the record of the same step with its ThoiDiemXuLy closes it, and an open step past its deadline
    (NgayKetThucTheoQuyDinh) counts as an overdue step with no further record."""
    started = {"MaHoSo": "HS-OPEN", "NguoiXuLy": "Lê Văn C", "PhongBanXuLy": "Phòng Kinh tế",
               "NoiDungXuLy": "Thẩm định", "TrangThai": "4", "ThoiDiemXuLy": "",
               "NgayBatDau": "20260804090000", "NgayKetThucTheoQuyDinh": "20260806170000"}
    [opening] = events_of(progress_call("H44.03", [started]))
    assert opening["occurred_at"] == vn(2026, 8, 4, 9).isoformat()
    assert opening["step"] == {"name": "Phòng Kinh tế - Thẩm định", "handler": "Lê Văn C", "open": True,
                               "started_at": vn(2026, 8, 4, 9).isoformat(),
                               "due_at": vn(2026, 8, 6, 17).isoformat()}
    missing = {**started, "NgayBatDau": ""}
    [item] = mapped(progress_call("H44.03", [missing])).items
    assert item.rejection is not None and item.rejection.field == "ThoiDiemXuLy"

    receipt = {"event_id": "r", "dossier_code": "HS-OPEN", "unit_code": "H44.03", "procedure_code": "P",
               "status": 2, "occurred_at": vn(2026, 8, 3, 8).isoformat(), "due_at": vn(2026, 8, 28).isoformat()}
    history = [history_event(0, validate_event(receipt, "s")),
               history_event(1, validate_event(opening, "s"))]
    facts = derive_facts("HS-OPEN", history, calendar)
    assert facts.open_step_deadlines == (vn(2026, 8, 6, 17),)

    finished = {**started, "ThoiDiemXuLy": "20260807100000", "NoiDungXuLy": "Thẩm định xong"}
    [closing] = events_of(progress_call("H44.03", [finished]))
    history.append(history_event(2, validate_event(closing, "s")))
    facts = derive_facts("HS-OPEN", history, calendar)
    assert (facts.steps, facts.overdue_steps, facts.open_step_deadlines) == (1, 1, ())  # closed a day late


# ------------------------------------------------------------------------ optional times unreadable

RECEIVED = {"MaHoSo": "T-1", "MaTTHC": "1.1", "TrangThaiHoSo": "10", "NgayTiepNhan": "20260803080000",
            "NgayHenTra": "20260810170000", "NgayKetThucXuLy": "20260805100000", "NgayTra": "20260805150000",
            "DanhSachHoSoBoSung": [{"NgayBoSung": "20260804090000", "NgayTiepNhanBoSung": "20260804150000",
                                    "NgayHenTraTruoc": "20260810170000", "NgayHenTraMoi": "20260811170000"}]}
SUPPLEMENT_TIMES = ("NgayBoSung", "NgayTiepNhanBoSung", "NgayHenTraTruoc", "NgayHenTraMoi")
UNREADABLE = ["03/08/2026", "2026-08-03T08:00:00", "20260832080000", "99991231235959", "19991231235959"]


def _facts_of(events: list[dict], calendar):
    history = [history_event(seq, validate_event(body, "s")) for seq, body in enumerate(events)]
    return derive_facts(events[0]["dossier_code"], history, calendar)


@pytest.mark.parametrize("value", UNREADABLE)
@pytest.mark.parametrize(
    ("field", "flag", "status", "expect"),
    [
        # the field, the flag the dossier carries, the status sent, and what the rules then know
        ("NgayHenTra", "due_time_unreadable", "2", {"due_at_received": vn(2026, 8, 10, 17)}),  # NgayHenTraTruoc
        ("NgayHenTraTruoc", "due_time_unreadable", "2", {"due_at_received": None, "due_at_latest": None}),
        ("NgayHenTraMoi", "due_time_unreadable", "2", {"due_at_latest": vn(2026, 8, 10, 17)}),
        ("NgayKetThucXuLy", "end_time_unreadable", "10", {"ended_at": vn(2026, 8, 5, 15), "end_status": 10}),
        ("NgayTra", "end_time_unreadable", "10", {"ended_at": vn(2026, 8, 5, 10), "end_status": 9}),
        ("NgayKetThucXuLy", "end_time_unreadable", "9", {"ended_at": None}),
        ("NgayBoSung", "supplement_time_unreadable", "2", {"supplement_count": 0}),
        ("NgayTiepNhanBoSung", "supplement_time_unreadable", "2",
         {"supplement_count": 1, "outstanding_supplement_at": vn(2026, 8, 4, 9)}),
    ],
)
def test_an_unreadable_optional_time_is_dropped_and_the_dossier_kept_flagged(calendar, field, flag, status,
                                                                             expect, value):
    record = {**RECEIVED, "TrangThaiHoSo": status, "DanhSachHoSoBoSung": [dict(RECEIVED["DanhSachHoSoBoSung"][0])]}
    if field == "NgayHenTraTruoc":  # nothing else to fall back on: no due time at all
        record["NgayHenTra"] = record["DanhSachHoSoBoSung"][0]["NgayHenTraMoi"] = ""
    if field in SUPPLEMENT_TIMES:
        record["DanhSachHoSoBoSung"][0][field] = value
    else:
        record[field] = value
    [item] = mapped(snapshot_call("H44.07", [record])).items
    assert item.rejection is None, item.rejection
    assert all(isinstance(validate_event(e, "s"), DossierEvent) for e in item.events)
    assert f'"{value}"' not in orjson.dumps(item.events).decode()  # the unreadable value is dropped, not carried along
    facts = _facts_of(list(item.events), calendar)
    assert facts.received_at == vn(2026, 8, 3, 8)
    assert facts.attributes[flag] is True
    assert {k: getattr(facts, k) for k in expect} == expect
    # The same record with every time readable carries no such flag.
    [clean] = mapped(snapshot_call("H44.07", [{**RECEIVED, "TrangThaiHoSo": status}])).items
    assert not any(v for e in clean.events for k, v in e.get("attributes", {}).items() if k.endswith("_unreadable"))
    assert flag not in _facts_of(list(clean.events), calendar).attributes
    # Sent again corrected, the dossier is no longer flagged: the snapshot states its flags false.
    assert flag not in _facts_of(list(item.events) + list(clean.events), calendar).attributes


@pytest.mark.parametrize("value", UNREADABLE)
def test_an_unreadable_time_of_the_event_itself_still_refuses_its_record(value):
    reasons = {"03/08/2026": "bad_timestamp", "2026-08-03T08:00:00": "bad_timestamp", "20260832080000": "bad_timestamp"}
    reason = reasons.get(value, "out_of_range_time")
    records = [{**RECEIVED, "NgayTiepNhan": value}, {**RECEIVED, "TrangThaiHoSo": "3", "NgayTiepNhan": value}]
    for item in mapped(snapshot_call("H44.07", records)).items:
        assert (item.rejection.reason, item.rejection.field) == (reason, "NgayTiepNhan")
    step = {"MaHoSo": "T-1", "TrangThai": "4", "ThoiDiemXuLy": "20260804090000", "NgayBatDau": "20260803090000",
            "NgayKetThucTheoQuyDinh": "20260806170000"}
    items = mapped(progress_call("H44.07", [{**step, "ThoiDiemXuLy": value},
                                            {**step, "ThoiDiemXuLy": "", "NgayBatDau": value}])).items
    assert [(i.rejection.reason, i.rejection.field) for i in items] == [(reason, "ThoiDiemXuLy"),
                                                                        (reason, "NgayBatDau")]


@pytest.mark.parametrize("value", UNREADABLE)
@pytest.mark.parametrize("field", ["NgayKetThucTheoQuyDinh", "NgayBatDau"])
def test_an_unreadable_step_time_is_dropped_and_the_step_kept_flagged(field, value):
    step = {"MaHoSo": "T-1", "TrangThai": "4", "ThoiDiemXuLy": "20260804090000", "NgayBatDau": "20260803090000",
            "NgayKetThucTheoQuyDinh": "20260806170000", "PhongBanXuLy": "Phòng Kinh tế"}
    [event] = events_of(progress_call("H44.07", [{**step, field: value}]))
    assert event["occurred_at"] == vn(2026, 8, 4, 9).isoformat()
    assert event["attributes"] == {"step_time_unreadable": True}
    kept = {"NgayKetThucTheoQuyDinh": ("due_at", vn(2026, 8, 6, 17)), "NgayBatDau": ("started_at", vn(2026, 8, 3, 9))}
    other_key, other_time = next(v for k, v in kept.items() if k != field)
    assert event["step"] == {"name": "Phòng Kinh tế", other_key: other_time.isoformat()}
    assert isinstance(validate_event(event, "s"), DossierEvent)


def test_a_refusal_or_submission_with_an_unreadable_time_is_kept_flagged():
    base = {"MaHoSo": "S-1", "MaTTHC": "1.1", "NgayTiepNhan": "20260803080000", "NgayHenTra": "31/12/2026"}
    [refused] = mapped(snapshot_call("H44.07", [{**base, "TrangThaiHoSo": "3", "NgayTuChoi": "3/8/2026",
                                                 "NgayKetThucXuLy": "20260803100000"}])).items
    assert [(e["status"], e["occurred_at"]) for e in refused.events] == [(3, vn(2026, 8, 3, 10).isoformat())]
    flags = refused.events[0]["attributes"]
    assert (flags["end_time_unreadable"], flags["due_time_unreadable"]) == (True, True)
    [submitted] = mapped(snapshot_call("H44.07", [{**base, "TrangThaiHoSo": "1"}])).items
    assert [e["status"] for e in submitted.events] == [1] and submitted.events[0]["attributes"]["due_time_unreadable"]
