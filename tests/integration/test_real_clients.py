"""Three real one-stop-shop systems connect unchanged (clients.md): their calls, rebuilt from their public
code by tests/support/clients.py, go through the real HTTP API and the real PostgreSQL, and the counters
they leave are checked against the rules (indicators.md §3)."""

from __future__ import annotations

import copy
import dataclasses

import pytest_asyncio

from services.indicators.rules.dossier import PROVISIONAL  # noqa: F401 (the rule the TD flow leans on)
from shared.auth import KeyRing
from shared.db.raw import driver_connection
from shared.settings import ApiKey
from tests.conftest import ADMIN_KEY, READER_KEY, auth, drain
from tests.support.clients import (
    Application,
    HaGiangAdmissions,
    OpenCPS,
    OpenCPSDossier,
    PublishQueue,
    TDAttachment,
    TDDossier,
    TDHistoryRow,
    ThanhHoaTD,
)
from tests.support.portal import vn

OPENCPS_KEY = "opencps-h44-key"
OPENCPS_OLD_KEY = "opencps-old-h44-key"
TD_KEY = "td-h44-key"
HAGIANG_KEY = "tuyensinh-h44-08-key"

# Electronic identifiers (mã định danh) for a few units of the test tree, loaded by PUT /v1/units.
IDENTIFIERS = {"H44": "000.00.00.H44", "H44.07": "000.00.07.H44", "H44.08": "000.00.08.H44",
               "H44.100": "000.20.01.H44"}


@pytest_asyncio.fixture
async def client(app_client):
    runtime = app_client.app.state.runtime
    units = [{**runtime.units.units[code].as_dict(), "identifier": identifier} for code, identifier in IDENTIFIERS.items()]
    response = await app_client.put("/v1/units", json=units, headers=auth(ADMIN_KEY))
    assert response.status_code == 200, response.text
    assert runtime.units.resolve("000.20.01.H44") == "H44.100"
    app_client.app.state.keyring = KeyRing({
        **runtime.settings.api_keys,
        OPENCPS_KEY: ApiKey(role="source", source="opencps-h44", units=["H44"]),
        OPENCPS_OLD_KEY: ApiKey(role="source", source="opencps-old-h44", units=["H44"], portal_ok_code="00"),
        TD_KEY: ApiKey(role="source", source="td-h44", units=["H44"]),
        HAGIANG_KEY: ApiKey(role="source", source="tuyensinh-h44", units=["H44.08"]),
    }, session_secret=app_client.app.state.keyring.session_secret)
    try:
        yield app_client
    finally:
        async with runtime.engine.begin() as conn:
            await (await driver_connection(conn)).execute("UPDATE units SET identifier = NULL")
        await runtime.reload_units()


async def score(client, unit: str, period: str = "2026-08") -> dict:
    response = await client.get(f"/v1/scores/{unit}", params={"period": period}, headers=auth(READER_KEY))
    assert response.status_code == 200, response.text
    body = response.json()
    body["components"] = {c["id"]: c for g in body["groups"] for c in g["components"]}
    return body


def ratio(body: dict, component: str) -> tuple[int, int]:
    c = body["components"][component]
    return c["numerator"], c["denominator"]


async def dossiers(client, unit: str, flag: str) -> dict[str, dict]:
    response = await client.get(f"/v1/units/{unit}/dossiers", params={"period": "2026-08", "flag": flag},
                                headers=auth(READER_KEY))
    assert response.status_code == 200, response.text
    return {d["dossier_code"]: d for d in response.json()["items"]}


async def fetch(runtime, query: str, *args):
    async with runtime.engine.connect() as conn:
        return await (await driver_connection(conn)).fetch(query, *args)


# ------------------------------------------------------------------------------------------ OpenCPS


def opencps_life(no: str, agency: str, procedure: str, states: list[tuple[str, object, dict]], **base) -> list:
    """The dossier as it stands at each queued action: (status, action time, changed fields)."""
    dossier = OpenCPSDossier(no, procedure, agency, status="", **base)
    out = []
    for status, at, changes in states:
        dossier = dataclasses.replace(dossier, status=status, action_date=at, **changes)
        out.append(copy.deepcopy(dossier))
    return out


async def test_opencps_login_snapshot_then_step_through_its_publish_queue(client):
    runtime = client.app.state.runtime
    opencps = OpenCPS(client, username="opencps-phutho", password=OPENCPS_KEY, madonvi="000.00.00.H44")
    queue = PublishQueue(opencps)
    # A: Sở Công Thương's dossier (named by its MaHoSo), a supplement known only from the step records.
    a = opencps_life("000.00.07.H44-260803-0001", "Sở Công Thương", "1.001234", [
        ("2", vn(2026, 8, 3, 8), {}),
        ("4", vn(2026, 8, 3, 14), {}),
        ("5", vn(2026, 8, 4, 9), {"action_note": "Yêu cầu bổ sung"}),
        ("4", vn(2026, 8, 5, 9), {}),
        ("9", vn(2026, 8, 6, 10), {"release_date": vn(2026, 8, 6, 10)}),
        ("10", vn(2026, 8, 6, 15), {"finish_date": vn(2026, 8, 6, 15)}),
    ], receive_date=vn(2026, 8, 3, 8), due_date=vn(2026, 8, 7, 17))
    # B: a commune's dossier sent under the province's madonvi; finished after its due time.
    b = opencps_life("000.20.01.H44-260805-0002", "UBND Phường Việt Trì", "2.000111", [
        ("2", vn(2026, 8, 5, 8), {}),
        ("9", vn(2026, 8, 12, 10), {"release_date": vn(2026, 8, 12, 10)}),
    ], receive_date=vn(2026, 8, 5, 8), due_date=vn(2026, 8, 8, 17))
    # C: a dossier code without an identifier: its unit is the agency DonViXuLy names, within the key's units.
    c = opencps_life("HS-C-0003", "Sở Công Thương - Tỉnh Phú Thọ", "1.001234", [("2", vn(2026, 8, 10, 8), {})],
                     receive_date=vn(2026, 8, 10, 8), due_date=vn(2026, 8, 12, 17))
    # D: a procedure with no DVCQG mapping (MaTTHC "") and no due date: kept, and flagged.
    d = opencps_life("000.00.07.H44-260811-0004", "Sở Công Thương", "", [("2", vn(2026, 8, 11, 8), {})],
                     receive_date=vn(2026, 8, 11, 8), due_date=None)
    for entry in [*a, *b, *c, *d]:
        queue.enqueue(entry)
    # The link drops as A's supplement request is sent: that entry fails, and the scheduler marks A's later
    # entries failed without sending them.
    opencps.fail_once(lambda path, body: body.get("service") == "DongBoHoSoMC" and body["data"][0]["TrangThaiHoSo"] == "5")
    await queue.run()
    assert queue.statuses() == ["acked", "acked", "error", "error", "error", "error", "acked", "acked", "acked", "acked"]
    assert queue.requeue_failed() == 4  # an operator puts them back; nothing retries by itself
    await queue.run()
    assert set(queue.statuses()) == {"acked"}

    # What it sent: a login before every call, its look-ups, and snapshot-then-step per entry.
    snapshots = [c for c in opencps.calls if isinstance(c.body, dict) and c.body.get("service") == "DongBoHoSoMC"]
    steps = [c for c in opencps.calls if isinstance(c.body, dict) and c.body.get("service") == "CapNhatTienDoHoSoMC"]
    assert len(snapshots) == 11 and len(steps) == 10  # 10 entries; A's "5" snapshot twice (failed once)
    assert all(c.reply["error_code"] == 0 for c in snapshots + steps if c.status)
    assert all("Authorization" not in c.body and c.body["session"].startswith("dvcs1.") for c in snapshots + steps)
    # An access token, then one login per syncData (snapshot, step); the failed attempt logged in twice.
    assert opencps.logins == 3 * 10 + 2
    # The look-up: a dossier already synced is answered as known, so later entries say isUpdating True.
    assert [s.body["isUpdating"] for s in snapshots[:2]] == ["False", "True"]

    await drain(runtime)
    department, commune = await score(client, "H44.07"), await score(client, "H44.100")
    counters = department["counters"]
    assert counters["received"] == 3  # A, C (DonViXuLy by name), D (no procedure code)
    assert counters["supplement_requests"] == 1 and counters["dossiers_with_1_supplement"] == 1
    # A: ended 6/8 10:00, minus 24 h in 5, is before the day it was due (7/8): early
    assert counters["completed"] == 1 and counters["completed_early"] == 1
    # A on time; D on time (no due time, no legal time: flagged); C open past its due time at 31/8.
    assert ratio(department, "2.1") == (2, 3)
    assert (commune["counters"]["received"], commune["counters"]["completed_late"]) == (1, 1)
    assert ratio(commune, "2.1") == (0, 1)
    gaps = await dossiers(client, "H44.07", "input_gaps")
    assert set(gaps) == {"000.00.07.H44-260811-0004"}
    assert set(gaps["000.00.07.H44-260811-0004"]["flags"]) == {"procedure_missing", "no_deadline_flagged"}
    owners = {r["dossier_code"]: r["unit_code"] for r in await fetch(runtime, "SELECT dossier_code, unit_code FROM dossiers")}
    assert owners == {"000.00.07.H44-260803-0001": "H44.07", "000.20.01.H44-260805-0002": "H44.100",
                      "HS-C-0003": "H44.07", "000.00.07.H44-260811-0004": "H44.07"}


async def test_older_opencps_compares_error_code_with_00(client):
    """Older OpenCPS versions send the step only when the snapshot's error_code reads "00": a key
    configured with ``portal_ok_code: "00"`` answers kept calls that way."""
    opencps = OpenCPS(client, username="opencps", password=OPENCPS_OLD_KEY, madonvi="000.00.00.H44", ok_code="00")
    [dossier] = opencps_life("000.00.07.H44-260803-0009", "Sở Công Thương", "1.001234",
                             [("4", vn(2026, 8, 3, 9), {})], receive_date=vn(2026, 8, 3, 8), due_date=vn(2026, 8, 9, 17))
    result = await opencps.sync_dossier_and_status(dossier)
    assert result["error_code"] == "00"
    assert [c.body.get("service") for c in opencps.calls if "login" not in c.path] == [
        "TraCuuHoSo", "LayThuTuc", "DongBoHoSoMC", "CapNhatTienDoHoSoMC"]


async def test_login_sessions_expire_and_bind_the_key(client):
    login = await client.post("/v1/dvcqg/login", json={"username": "x", "password": OPENCPS_KEY},
                              headers={"dstcode": "000.00.00.H44"})
    assert login.status_code == 200 and login.json()["error_code"] == 0
    session = login.json()["session"]
    assert login.json()["expires_in"] == client.app.state.runtime.settings.portal.session_seconds
    assert (await client.post("/v1/dvcqg/login", json={"username": "x", "password": "nope"})).json()["error_code"] == 4
    assert (await client.post("/v1/dvcqg/login", json={"username": "x", "password": READER_KEY})).status_code == 403
    keyring = client.app.state.keyring
    expired = keyring.issue_session(OPENCPS_KEY, 60, now=0)
    call = {"service": "DongBoHoSoMC", "madonvi": "000.00.00.H44", "data": []}
    reply = await client.post("/v1/dvcqg", json={**call, "session": expired})
    assert (reply.status_code, reply.json()["reason"]) == (401, "session_expired")
    forged = session[:-4] + ("0000" if not session.endswith("0000") else "1111")
    assert (await client.post("/v1/dvcqg", json={**call, "session": forged})).json()["reason"] == "bad_api_key"
    assert (await client.post("/v1/dvcqg", json={**call, "session": session})).json()["error_code"] == 0
    # Bound to the key's units: H44.08's key may not sync for the province.
    hagiang = keyring.issue_session(HAGIANG_KEY, 60)
    reply = await client.post("/v1/dvcqg", json={**call, "session": hagiang})
    assert (reply.status_code, reply.json()["reason"]) == (403, "unit_not_allowed")
    # A key taken out of the ring takes its sessions with it.
    client.app.state.keyring = KeyRing(dict(client.app.state.runtime.settings.api_keys),
                                       session_secret=keyring.session_secret)
    assert (await client.post("/v1/dvcqg", json={**call, "session": session})).status_code == 401


# ------------------------------------------------------------------------------------ TD (Thanh Hóa)


def td_client(client) -> ThanhHoaTD:
    base = f"madonvi=000.00.00.H44&token={TD_KEY}"
    return ThanhHoaTD(client, url_create=f"/v1/dvcqg/DongBoHoSoMC?{base}&isUpdating=False",
                      url_update=f"/v1/dvcqg/DongBoHoSoMC?{base}&isUpdating=True",
                      url_steps=f"/v1/dvcqg/CapNhatTienDoHoSoMC?{base}")


async def test_td_bare_arrays_through_the_gateway_with_5_6_8_sent_as_9(client):
    runtime = client.app.state.runtime
    td = td_client(client)
    # T1: online, a supplement (sent as 9 with no end time, plus a made-up 9 step), returned, finished, paid.
    t1 = TDDossier("000.00.07.H44-260803-1001", "1.001234", "Sở Công Thương", "000.00.07.H44", "2",
                   received=vn(2026, 8, 3, 8), due=vn(2026, 8, 10, 17), status="4",
                   history=[TDHistoryRow(vn(2026, 8, 3, 10), "", step_due=vn(2026, 8, 4, 17))],
                   attachments=[TDAttachment("don-de-nghi", digitisation="2", deleted=True),
                                TDAttachment("giay-phep-cu", digitisation="1")])
    # T2: waiting for the applicant to pay (6, sent as 9); its fee is not paid, so no fee line is sent.
    t2 = TDDossier("000.00.07.H44-260805-1002", "1.001234", "Sở Công Thương", "000.00.07.H44", "1",
                   received=vn(2026, 8, 5, 8), due=vn(2026, 8, 7, 17), status="4",
                   history=[TDHistoryRow(vn(2026, 8, 5, 9), "")])
    # T3: a commune's dossier; TD gives it a code under the commune's identifier, the call says the province.
    t3 = TDDossier("000.20.01.H44-260807-54321", "2.000111", "UBND Phường Việt Trì", "000.20.01.H44", "2",
                   received=vn(2026, 8, 7, 8), due=vn(2026, 8, 14, 17), status="4",
                   history=[TDHistoryRow(vn(2026, 8, 7, 9), "")],
                   attachments=[TDAttachment("so-ho-khau", digitisation="3")])
    assert await td.run([t1, t2, t3]) == ["synced", "synced", "synced"]

    # 4/8: T1's supplement request; the step chunk is lost in transit (rows stay unsent).
    t1.status, t1.supplement_requested, t1.synced = "5", vn(2026, 8, 4, 9), False
    t1.history.append(TDHistoryRow(vn(2026, 8, 4, 9), "5", action="Yêu cầu bổ sung"))
    # 6/8: T2 waits for the applicant to pay.
    t2.status, t2.supplement_requested, t2.synced = "6", vn(2026, 8, 6, 9), False
    t2.history.append(TDHistoryRow(vn(2026, 8, 6, 9), "6", action="Yêu cầu nộp phí"))
    td.fail_once(lambda path, body: "CapNhatTienDo" in path and body[0]["MaHoSo"] == t1.code)
    await td.run([t1, t2, t3])
    await drain(runtime)
    # Meanwhile T1 is known to be in 9 with no end time: kept open, flagged.
    gaps = await dossiers(client, "H44.07", "input_gaps")
    assert gaps[t1.code]["flags"] == ["end_time_missing"] and gaps[t1.code]["ended_at"] is None

    # 6/8: T1's supplement comes back; the unsent rows go with the next push.
    t1.status, t1.synced = "4", False
    t1.history.append(TDHistoryRow(vn(2026, 8, 6, 9), "4", action="Tiếp nhận bổ sung"))
    # 8/8: T1 finished (an empty-status row at the same instant, as the system writes it), 15:00 returned, paid.
    await td.run([t1, t2, t3])
    t1.status, t1.ended, t1.synced = "9", vn(2026, 8, 8, 10), False
    t1.history.append(TDHistoryRow(vn(2026, 8, 8, 10), "", action="Kết thúc xử lý"))
    await td.run([t1, t2, t3])
    t1.status, t1.returned, t1.paid_fees, t1.result_files, t1.synced = "10", vn(2026, 8, 8, 15), [50000], ["gp.pdf"], False
    t3.status, t3.ended, t3.returned, t3.synced = "10", vn(2026, 8, 12, 9), vn(2026, 8, 12, 15), False
    t3.history.append(TDHistoryRow(vn(2026, 8, 12, 9), "9", action="Duyệt"))
    await td.run([t1, t2, t3])
    # The next scheduled run: nothing changed, nothing is sent.
    sent = len(td.calls)
    assert await td.run([t1, t2, t3]) == ["already synced"] * 3 and len(td.calls) == sent

    # Every snapshot was a bare one-element array, every step chunk at most 10, every reply read as kept.
    for call in td.calls:
        assert isinstance(call.body, list)
        if call.status:
            assert str(call.reply["error_code"]) == "0" and "thành công" in call.reply["message"].lower()
    assert max(len(c.body) for c in td.calls_to("CapNhatTienDo")) <= 10
    assert [c.body[0]["TrangThaiHoSo"] for c in td.calls_to("DongBoHoSoMC") if c.body[0]["MaHoSo"] == t1.code] == [
        "4", "9", "4", "9", "10"]

    await drain(runtime)
    department, commune = await score(client, "H44.07"), await score(client, "H44.100")
    counters = department["counters"]
    assert counters["received"] == 2 and counters["received_online"] == 1
    # T1: one supplement (from the step rows), 48 h in it; ended 8/8 10:00 -> 6/8 10:00 <= due 10/8: on time.
    # T2: its 6 (sent as 9, with a made-up 9 step) is not an end: open, past due at 31/8.
    assert counters["supplement_requests"] == 1 and counters["completed"] == 1
    assert ratio(department, "2.1") == (1, 2)
    assert ratio(department, "4.4") == (0, 2)  # T1's reused attachment was deleted; T2 has none
    assert ratio(department, "3.6") == (1, 1)  # dossiers saying they bear fees: only T1, once paid
    assert ratio(commune, "2.1") == (1, 1) and ratio(commune, "4.4") == (1, 1)  # DuocTaiSuDung "2" is reuse
    facts = {r["dossier_code"]: r for r in await fetch(
        runtime, "SELECT dossier_code, unit_code, status, ended_at, supplement_count, attributes FROM dossiers")}
    assert facts[t2.code]["ended_at"] is None and facts[t2.code]["status"] == 6
    assert facts[t1.code]["ended_at"] == vn(2026, 8, 8, 10) and facts[t1.code]["supplement_count"] == 1
    assert facts[t3.code]["unit_code"] == "H44.100"
    # T1's end is known now; T2 is still in "9" with no end time, and the drill-down says so.
    gaps = await dossiers(client, "H44.07", "input_gaps")
    assert {code: d["flags"] for code, d in gaps.items()} == {t2.code: ["end_time_missing"]}


async def test_td_fee_bearing_procedures_from_the_catalogue(client):
    """3.6's denominator from the catalogue (policy fee_bearing = catalogue): TD lists fee lines only once
    paid, so an unpaid dossier of a fee-bearing procedure says nothing of fees."""
    runtime = client.app.state.runtime
    catalogue = [{"procedure_code": "1.001234", "unit_code": "H44.07", "name": "Cấp giấy phép", "fee_required": True,
                  "valid_from": "2026-01-01T00:00:00+07:00"}]
    assert (await client.put("/v1/catalog/procedures", json=catalogue, headers=auth(ADMIN_KEY))).status_code == 200
    policy = runtime.settings.policy
    saved = policy.fee_bearing
    policy.fee_bearing = "catalogue"
    try:
        td = td_client(client)
        paid = TDDossier("000.00.07.H44-260803-2001", "1.001234", "Sở Công Thương", "000.00.07.H44", "2",
                         received=vn(2026, 8, 3, 8), due=vn(2026, 8, 10, 17), status="4", paid_fees=[50000],
                         history=[TDHistoryRow(vn(2026, 8, 3, 9), "")])
        unpaid = dataclasses.replace(paid, code="000.00.07.H44-260803-2002", paid_fees=[],
                                     history=[TDHistoryRow(vn(2026, 8, 3, 9), "")])
        assert await td.run([paid, unpaid]) == ["synced", "synced"]
        await drain(runtime)
        assert ratio(await score(client, "H44.07"), "3.6") == (1, 2)
    finally:
        policy.fee_bearing = saved


# --------------------------------------------------------------------------------- Hà Giang admissions


async def test_hagiang_bare_list_with_the_unit_in_the_query_string(client):
    runtime = client.app.state.runtime
    hg = HaGiangAdmissions(client, url=f"/v1/dvcqg/DongBoHoSoMC?token={HAGIANG_KEY}", unit_identifier="000.00.08.H44")
    school = "Trường THPT Chuyên Hùng Vương"
    a1 = Application("TS10-2026-000101", "3.000181.000.00.00.H22", vn(2026, 8, 3, 8), school, files=["hoc-ba.pdf"],
                     result_files=["trung-tuyen.pdf"])
    a2 = Application("TS10-2026-000102", "3.000181.000.00.00.H22", vn(2026, 8, 4, 8), school)
    a3 = Application("TS1-2026-000103", "TS_lop1.000.00.00.H22", vn(2026, 8, 5, 8), school)
    a4 = Application("TS1-2026-000104", "TS_lop1.000.00.00.H22", vn(2026, 8, 6, 8), school)
    for application in (a1, a2):
        await hg.received(application)
    await hg.result_returned(a1)  # "10" with no NgayTra, no NgayKetThucXuLy
    await hg.supplement_requested(a2)  # back to "1", NgayTiepNhan still the creation time
    await hg.refused(a3)  # "3": never received
    await hg.sync([(a4, "1")], False)  # submitted only
    await hg.sync([(a1, "10"), (a2, "1")], True)  # a batch re-sent: nothing new
    assert [c.status for c in hg.calls] == [200] * 7
    assert all("MaDinhDanhDV=000.00.08.H44" in c.path and isinstance(c.body, list) for c in hg.calls)

    await drain(runtime)
    unit = await score(client, "H44.08")
    counters = unit["counters"]
    assert counters["received"] == 2 and counters.get("completed", 0) == 0  # status 1 is not a receipt
    assert counters["received_in_person"] == 2  # no KenhThucHien: in person, as the portal counts it
    assert ratio(unit, "2.1") == (2, 2)  # no due time, no legal time: on time, flagged
    gaps = await dossiers(client, "H44.08", "input_gaps")
    assert gaps[a1.code]["flags"] == ["end_time_missing", "no_deadline_flagged"]
    assert gaps[a2.code]["flags"] == ["no_deadline_flagged"]
    assert ratio(unit, "4.1") == (1, 2)  # a1's result file

    # A record that cannot be kept is dead-lettered with the applicant's data blanked; none is stored anywhere.
    bad = hg.record(a4, "12")
    response = await client.post(f"/v1/dvcqg/DongBoHoSoMC?token={HAGIANG_KEY}&MaDinhDanhDV=000.00.08.H44", json=[bad])
    assert (response.status_code, response.json()["results"][0]["reason"]) == (422, "bad_status")
    [letter] = await fetch(runtime, "SELECT raw FROM dead_letters WHERE reason = 'bad_status'")
    assert '"ChuHoSo":""' in letter["raw"] and '"MaDoiTuong":""' in letter["raw"] and "TS1-2026-000104" in letter["raw"]
    for table, column in (("events", "body::text"), ("dead_letters", "raw"), ("dossiers", "attributes::text")):
        rows = await fetch(runtime, f"SELECT count(*) AS n FROM {table} WHERE {column} LIKE '%' || $1 || '%' "
                                    f"OR {column} LIKE '%' || $2 || '%'", a1.applicant, a1.id_number)
        assert rows[0]["n"] == 0, table
