"""Three real one-stop-shop systems' portal sync, rebuilt call by call from their public code (clients.md).

Each client builds its requests the way its code does (field by field, value habits included), runs
its own flow (login first, snapshot then step, chunks, resends, queues) and reads our replies the way
its code reads the portal's. They talk to dvc766 over HTTP through an ``httpx.AsyncClient`` and record
every call (``calls``: path, body, reply) so tests can say what was replayed.

- :class:`OpenCPS`: OpenCPS v2 (DVCQGIntegrationActionImpl, PublishEventHSKMScheduler).
- :class:`ThanhHoaTD`: TD DichVuCongApi (SyncLocalDataToDVCQGService) behind a provincial gateway.
- :class:`HaGiangAdmissions`: a provincial school-admissions system (OnegateController).
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from typing import Any

import httpx

from shared.timeutil import VIETNAM


def stamp(value: dt.datetime | None) -> str:
    return value.astimezone(VIETNAM).strftime("%Y%m%d%H%M%S") if value else ""


@dataclass
class Call:
    path: str
    body: Any
    status: int
    reply: Any


class ClientBase:
    def __init__(self, http: httpx.AsyncClient) -> None:
        self.http = http
        self.calls: list[Call] = []
        # One-shot failures in transit (a network error, no reply at all): the first request each
        # predicate matches fails.
        self.failures: list[Any] = []

    def fail_once(self, predicate) -> None:
        self.failures.append(predicate)

    async def _send(self, path: str, body: Any, headers: dict[str, str]) -> httpx.Response:
        for predicate in self.failures:
            if predicate(path, body):
                self.failures.remove(predicate)
                self.calls.append(Call(path, body, 0, None))
                raise httpx.ConnectError("connection reset (simulated)")
        response = await self.http.post(path, content=json.dumps(body, ensure_ascii=False).encode(), headers=headers)
        try:
            reply = response.json()
        except ValueError:
            reply = response.text
        self.calls.append(Call(path, body, response.status_code, reply))
        return response

    def calls_to(self, fragment: str) -> list[Call]:
        return [c for c in self.calls if fragment in c.path]


# ------------------------------------------------------------------------------------------ OpenCPS


@dataclass
class OpenCPSDossier:
    """What OpenCPS reads from its Dossier and DossierAction rows when it syncs a dossier."""

    dossier_no: str  # getDossierNo(): MaHoSo
    service_code_dvcqg: str  # from ServiceInfoMapping ("" when the procedure is not mapped)
    gov_agency_name: str  # getGovAgencyName(): DonViXuLy
    receive_date: dt.datetime | None
    due_date: dt.datetime | None
    status: str  # from the DossierStatusMapping table: the portal's code
    finish_date: dt.datetime | None = None  # NgayTra
    release_date: dt.datetime | None = None  # NgayKetThucXuLy
    via_postal: int = 0
    contact_name: str = "Nguyễn Thị Hoa"
    contact_email: str = "hoa@example.vn"
    contact_tel: str = "0912345678"
    note: str = "Đề nghị cấp giấy phép"
    business: bool = False
    action_user: str = "Trần Văn Minh"  # the current DossierAction
    action_date: dt.datetime | None = None
    action_note: str = "Chuyển xử lý"


class OpenCPS(ClientBase):
    """OpenCPS v2: log in, look the dossier up (TraCuuHoSo), send its snapshot (with the procedure's name
    from LayThuTuc), and the current action's step only when the snapshot's error_code is the expected
    one. ``ok_code``: "0" (PublishEventHSKMScheduler's comparison) or "00" (older versions)."""

    def __init__(self, http: httpx.AsyncClient, *, username: str, password: str, madonvi: str,
                 dstcode: str = "000.00.00.H44", auth_endpoint: str = "/v1/dvcqg/login",
                 integration_endpoint: str = "/v1/dvcqg", ok_code: str = "0") -> None:
        super().__init__(http)
        self.username, self.password, self.madonvi, self.dstcode = username, password, madonvi, dstcode
        self.auth_endpoint, self.integration_endpoint, self.ok_code = auth_endpoint, integration_endpoint, ok_code
        self.logins = 0

    def _headers(self) -> dict[str, str]:
        return {"Accept": "application/json", "Content-Type": "application/json", "Charset": "utf-8",
                "dstcode": self.dstcode}

    async def _post(self, path: str, body: dict) -> dict:
        response = await self._send(path, body, self._headers())
        if response.status_code >= 400:  # HttpURLConnection.getInputStream() throws: the body is never read
            raise httpx.HTTPStatusError("HTTP error", request=response.request, response=response)
        return response.json()

    async def access_token(self) -> str:
        """getAccessToken: a login per call; the session only when error_code is 0 (read as an int)."""
        self.logins += 1
        try:
            result = await self._post(self.auth_endpoint, {"username": self.username, "password": self.password})
        except httpx.HTTPError:
            return ""
        if "session" in result and "error_code" in result and int(result["error_code"]) == 0:
            return str(result["session"])
        return ""

    async def sharing_data(self, token: str, data: dict) -> dict:
        body = {"session": token, "madonvi": self.madonvi, **data}
        try:
            return await self._post(self.integration_endpoint, body)
        except httpx.HTTPError:
            return {}

    async def sync_data(self, data: dict) -> dict:
        """syncData: logs in again, then posts session + madonvi + the call's keys."""
        token = await self.access_token()
        if not token:
            return {}
        return await self.sharing_data(token, data)

    async def snapshot(self, dossier: OpenCPSDossier, token: str) -> dict:
        info = await self.sharing_data(token, {"service": "LayThuTuc", "MaTTHC": dossier.service_code_dvcqg})
        name = field_code = field_name = ""
        if info.get("result"):
            first = info["result"][0]
            name = first["TENTTHC"]
            field_code = first["LINHVUCTHUCHIEN"][0]["MALINHVUC"]
            field_name = first["LINHVUCTHUCHIEN"][0]["TENLINHVUC"]
        return {
            "MaHoSo": dossier.dossier_no,
            "MaTTHC": dossier.service_code_dvcqg,
            "TenTTHC": name,
            "MaLinhVuc": field_code,
            "TenLinhVuc": field_name,
            "ChuHoSo": dossier.contact_name,
            "LoaiDoiTuong": "2" if dossier.business else "1",
            "MaDoiTuong": "",
            "ThongTinKhac": "",
            "Email": dossier.contact_email,
            "Fax": dossier.contact_tel,
            "SoDienThoai": dossier.contact_tel,
            "TrichYeuHoSo": dossier.note,
            "NgayTiepNhan": stamp(dossier.receive_date),
            "NgayHenTra": stamp(dossier.due_date),
            "TrangThaiHoSo": dossier.status,
            "NgayTra": stamp(dossier.finish_date),
            "ThongTinTra": "",
            "HinhThuc": "1" if dossier.via_postal not in (0, 1) else "0",
            "NgayKetThucXuLy": stamp(dossier.release_date),
            "DonViXuLy": dossier.gov_agency_name,
            "GhiChu": dossier.note,
            "TaiLieuNop": [],
            "DanhSachLePhi": [],
            "DanhSachTepDinhKemKhac": [],
            "DanhSachHoSoBoSung": [],
            "DanhSachGiayToKetQua": [],
        }

    @staticmethod
    def step(dossier: OpenCPSDossier) -> dict:
        return {
            "MaHoSo": dossier.dossier_no,
            "NguoiXuLy": dossier.action_user,
            "ChucDanh": "",
            "ThoiDiemXuLy": stamp(dossier.action_date),
            "PhongBanXuLy": "",
            "NoiDungXuLy": dossier.action_note,
            "TrangThai": dossier.status,
            "NgayBatDau": "",
            "NgayKetThucTheoQuyDinh": "",
        }

    async def sync_dossier_and_status(self, dossier: OpenCPSDossier) -> dict:
        token = await self.access_token()
        if not token:
            return {}
        found = await self.sharing_data(token, {"service": "TraCuuHoSo", "MaHoSo": dossier.dossier_no})
        body = {"isUpdating": "True" if found.get("result") else "False", "data": [await self.snapshot(dossier, token)],
                "service": "DongBoHoSoMC"}
        result = await self.sync_data(body)
        if "error_code" in result and str(result["error_code"]) == self.ok_code:
            result = await self.sync_data({"service": "CapNhatTienDoHoSoMC", "data": [self.step(dossier)]})
        return result


@dataclass
class QueueEntry:
    dossier: OpenCPSDossier  # the dossier as it was when the entry was queued
    status: str = "waiting"  # waiting, sent, acked, error


class PublishQueue:
    """PublishEventHSKMScheduler: a dossier's queue entries in creation order; an entry is acknowledged
    when the reply's error_code reads "0"; once one fails, the dossier's later entries are marked failed
    without being sent. Nothing retries: an operator puts failed entries back to waiting."""

    def __init__(self, client: OpenCPS) -> None:
        self.client = client
        self.entries: dict[str, list[QueueEntry]] = {}

    def enqueue(self, dossier: OpenCPSDossier) -> None:
        self.entries.setdefault(dossier.dossier_no, []).append(QueueEntry(dossier))

    async def run(self) -> None:
        for entries in self.entries.values():
            failed = False
            for entry in entries:
                if entry.status == "acked":
                    continue
                if entry.status == "error":
                    failed = True
                    continue
                if failed:
                    entry.status = "error"
                    continue
                try:
                    result = await self.client.sync_dossier_and_status(entry.dossier)
                    ok = "error_code" in result and str(result["error_code"]) == "0"
                except httpx.HTTPError:
                    ok = False
                entry.status = "acked" if ok else "error"
                failed = not ok

    def requeue_failed(self) -> int:
        count = 0
        for entries in self.entries.values():
            for entry in entries:
                if entry.status == "error":
                    entry.status, count = "waiting", count + 1
        return count

    def statuses(self) -> list[str]:
        return [e.status for entries in self.entries.values() for e in entries]


# --------------------------------------------------------------------------------------- TD (Thanh Hóa)


@dataclass
class TDHistoryRow:
    """A QuaTrinhXuLyHoSos row: ThoiGian, TrangThai ("" in many rows), TenNguoiGui, ThaoTac, NgayHetHanBuocXuLy."""

    at: dt.datetime
    status: str
    handler: str = "Lê Thị Lan"
    action: str = "Chuyển xử lý"
    step_due: dt.datetime | None = None
    synced: bool = False


@dataclass
class TDAttachment:
    name: str
    digitisation: str = "1"  # TrangThaiSoHoa: 2 -> DuocTaiSuDung "1", 3 -> "2", else "0"
    from_store: str | None = None
    deleted: bool = False


@dataclass
class TDDossier:
    code: str
    procedure: str
    group_name: str  # Groups.GroupName: DonViXuLy
    unit_identifier: str  # Groups.MaDinhDanh
    channel: str
    received: dt.datetime
    due: dt.datetime | None
    status: str  # the system's own status id (1-10)
    returned: dt.datetime | None = None
    ended: dt.datetime | None = None
    supplement_requested: dt.datetime | None = None  # NgayYeuCauBoSung
    refused: dt.datetime | None = None
    history: list[TDHistoryRow] = field(default_factory=list)
    attachments: list[TDAttachment] = field(default_factory=list)
    paid_fees: list[int] = field(default_factory=list)  # only requests already paid (TrangThai 'Đã thanh toán')
    result_files: list[str] = field(default_factory=list)
    applicant_id: str = "001086001234"
    applicant: str = "Phạm Văn Đức"
    phone: str = "0987654321"
    synced: bool = False  # TrangThaiDongBoDVC: set back to unsynced whenever the dossier changes


class ThanhHoaTD(ClientBase):
    """TD DichVuCongApi's sync, posted (no auth header, no envelope) to proxy URLs the province's gateway
    relays to dvc766 with the envelope in the query string; the URLs are the configuration."""

    def __init__(self, http: httpx.AsyncClient, *, url_create: str, url_update: str, url_steps: str) -> None:
        super().__init__(http)
        self.url_create, self.url_update, self.url_steps = url_create, url_update, url_steps

    async def _request(self, path: str, body: Any) -> str:
        response = await self._send(path, body, {"Accept": "application/json", "Content-Type": "application/json"})
        return response.text

    async def _request_json(self, path: str, body: Any) -> dict:
        text = await self._request(path, body)
        reply = json.loads(text)
        # Newtonsoft reads error_code into a string property: 0 becomes "0".
        return {"error_code": None if reply.get("error_code") is None else str(reply["error_code"]),
                "message": reply.get("message") or ""}

    @staticmethod
    def snapshot(d: TDDossier) -> dict:
        status = "9" if d.status in ("5", "6", "8") else d.status
        documents = [{
            "TenTepDinhKem": a.name, "IsDeleted": 1 if a.deleted else 0, "MaThanhPhanHoSo": "",
            "DuongDanTaiTepTin": f"https://dvc.thanhhoa.gov.vn/files/{a.name}.pdf", "DuocSoHoa": "1",
            "DuocTaiSuDung": {"2": "1", "3": "2"}.get(a.digitisation, "0"),
            "DuocLayTuKhoDMQG": "0" if a.from_store in (None, "0") else "1",
        } for a in d.attachments]
        fees = [{"TenPhiLePhi": d.code, "MaPhiLePhi": "1", "HinhThucThu": "1", "Gia": amount, "LoaiPhiLePhi": "1"}
                for amount in d.paid_fees]
        return {
            "MaHoSo": d.code,
            "MaTTHC": d.procedure,
            "TenTTHC": "Thủ tục " + d.procedure,
            "MaLinhVuc": None,
            "TenLinhVuc": None,
            "KenhThucHien": d.channel,
            "ChuHoSo": d.applicant,
            "LoaiDoiTuong": "1",
            "MaDoiTuong": None,
            "SoDienThoai": d.phone,
            "TrichYeuHoSo": "Dinhkem",
            "NgayTiepNhan": stamp(d.received),
            "NgayHenTra": stamp(d.due) or None,
            "TrangThaiHoSo": status,
            "NgayTra": stamp(d.returned) or None,
            "ThongTinTra": "",
            "HinhThuc": "0",
            "NgayKetThucXuLy": stamp(d.ended) or None,
            "DonViXuLy": d.group_name,
            "NoiNopHoSo": "2",
            "NgayTuChoi": stamp(d.refused) or None,
            "NgayNopHoSo": stamp(d.received),
            "TaiKhoanDuocXacThucVoiVNeID": "0",
            "DuocThanhToanTrucTuyen": "1" if d.paid_fees else "0",
            "HoSoCoThanhPhanSoHoa": "1" if d.attachments else "0",
            "DinhDanhCHS": [{"LoaiDinhDanh": "1", "SoDinhDanh": d.applicant_id}],
            "DSKetNoiCSDL": [{"MaCSDL": "7"}],
            "TaiLieuNop": documents,
            "DanhSachLePhi": fees,
            "DanhSachGiayToKetQua": [{"TenGiayTo": name, "MaGiayToKetQua": "KQ", "DuongDanTepTinKetQua":
                                      f"https://dvc.thanhhoa.gov.vn/kq/{name}"} for name in d.result_files],
            "DanhSachHoSoBoSung": None,
        }

    @staticmethod
    def _step(d: TDDossier, at: str, status: str, content: str, handler: str = "Cán bộ một cửa",
              step_due: str = "") -> dict:
        return {"MaHoSo": d.code, "ChucDanh": "", "NguoiXuLy": handler, "NoiDungXuLy": content, "ThoiDiemXuLy": at,
                "TrangThai": status, "NgayBatDau": "", "NgayKetThucTheoQuyDinh": step_due, "PhongBanXuLy": ""}

    async def push(self, d: TDDossier) -> str:
        """PushData: the snapshot (create, then update on "đã tồn tại"), then the steps in chunks of 10."""
        if d.synced:
            return "already synced"
        body = [self.snapshot(d)]
        reply = await self._request_json(self.url_create, body)
        synced = False
        if reply["error_code"] in ("0", "3", "-3"):
            if "đã tồn tại" in reply["message"]:
                update = await self._request_json(self.url_update, body)
                synced = update["error_code"] == "0" and "thành công" in update["message"].lower()
            else:
                synced = reply["error_code"] == "0" and "thành công" in reply["message"].lower()
        if not synced:
            return "snapshot failed"
        unsent = [row for row in sorted(d.history, key=lambda r: r.at) if not row.synced]
        steps = [self._step(d, stamp(r.at), r.status or "4", r.action, r.handler[:50], stamp(r.step_due))
                 for r in unsent]
        steps.insert(0, self._step(d, stamp(d.received), "2", "Tiếp nhận hồ sơ"))
        status = d.status
        if status in ("9", "10"):
            steps.append(self._step(d, stamp(d.ended) or stamp(d.received), "9", "Kết thúc xử lý hồ sơ"))
        elif status in ("5", "6", "8"):
            content = {"5": "Cán bộ trả hồ sơ bổ sung", "6": "Công dân thực hiện NVTC", "8": "Cán bộ trả bổ sung hồ sơ"}
            steps.append(self._step(d, stamp(d.supplement_requested) or stamp(d.received), "9", content[status]))
        elif d.due is None:
            steps.append(self._step(d, stamp(d.received), "9", "Hồ sơ không có ngày hẹn trả"))
        for start in range(0, len(steps), 10):
            text = await self._request(self.url_steps, steps[start:start + 10])
            if "thành công" in text.lower():
                # The chunk's ids are taken from the history rows at the same positions (the made-up
                # receipt step shifts them by one, as in the system's own code).
                for row in unsent[start:start + 10]:
                    row.synced = True
        d.synced = True
        return "synced"

    async def run(self, dossiers: list[TDDossier]) -> list[str]:
        """SyncData: every dossier not yet synced, one by one (the scheduled job)."""
        out = []
        for d in dossiers:
            try:
                out.append(await self.push(d))
            except httpx.HTTPError:
                out.append("error")  # logged; still unsynced: the next run sends it again
        return out


# ------------------------------------------------------------------------------------ Hà Giang admissions


@dataclass
class Application:
    """HO_SO_ONLINE: a school-admissions application."""

    code: str  # FCode: MaHoSo
    service: str  # MaDichVu
    created: dt.datetime  # FCreateTime: sent as NgayTiepNhan whatever the status
    school: str  # Organizations.FName: DonViXuLy
    applicant: str = "Hoàng Văn Nam"
    id_number: str = "002086009876"
    files: list[str] = field(default_factory=list)
    result_files: list[str] = field(default_factory=list)


ADMISSION_SERVICES = {
    "3.000181.000.00.00.H22": ("Tuyển sinh trung học phổ thông", "G03-GD10", "Giáo dục Trung học",
                               "3.000181.000.00.00.H22"),
    "TS_lop1.000.00.00.H22": ("Tuyển sinh tiểu học", "G03-GD09", "Giáo dục Tiểu học", "2.002492"),
}


class HaGiangAdmissions(ClientBase):
    """OnegateController.DongBoTrangThaiHoSo: a bare list posted to a fixed URL with the unit and
    isUpdating in the query string (the URL is the configuration); the reply is only logged."""

    def __init__(self, http: httpx.AsyncClient, *, url: str, unit_identifier: str) -> None:
        super().__init__(http)
        self.url, self.unit_identifier = url, unit_identifier

    def record(self, a: Application, status: str) -> dict:
        name, field_code, field_name, procedure = ADMISSION_SERVICES[a.service]
        return {
            "MaHoSo": a.code, "MaTTHC": procedure, "TenTTHC": name, "MaLinhVuc": field_code, "TenLinhVuc": field_name,
            "SoBienNhan": "", "ChuHoSo": a.applicant, "LoaiDoiTuong": "1", "MaDoiTuong": a.id_number,
            "NgayTiepNhan": stamp(a.created), "NgayHenTra": "", "TrangThaiHoSo": status, "HinhThuc": "0",
            "DonViXuLy": a.school,
            "TaiLieuNop": [{"TepDinhKemId": str(i), "TenTepDinhKem": f, "IsDeleted": "False", "MaThanhPhanHoSo": "",
                            "DuongDanTaiTepTin": f"https://tuyensinh.example.vn/{f}"} for i, f in enumerate(a.files)],
            "DanhSachGiayToKetQua": [{"GiayToId": str(i), "TenGiayTo": f, "MaThanhPhanHoSo": "",
                                      "DuongDanTepTinKetQua": f"https://tuyensinh.example.vn/kq/{f}"}
                                     for i, f in enumerate(a.result_files)] if status == "10" else [],
        }

    async def sync(self, applications: list[tuple[Application, str]], is_updating: bool) -> None:
        url = f"{self.url}{'&' if '?' in self.url else '?'}MaDinhDanhDV={self.unit_identifier}&isUpdating={'True' if is_updating else 'False'}"
        try:
            await self._send(url, [self.record(a, s) for a, s in applications], {"Content-Type": "application/json"})
        except httpx.HTTPError:
            pass  # written to its log file; nothing else happens

    # The controller's actions, each syncing the application it touched.
    async def received(self, a: Application) -> None:
        await self.sync([(a, "2")], False)

    async def result_returned(self, a: Application) -> None:  # returnresultmulti: "10", no dates
        await self.sync([(a, "10")], True)

    async def supplement_requested(self, a: Application) -> None:  # TraBoSung: back to "1"
        await self.sync([(a, "1")], True)

    async def refused(self, a: Application) -> None:
        await self.sync([(a, "3")], True)
