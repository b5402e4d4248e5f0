"""The shapes ingest takes and answers, for OpenAPI and generated clients.

The routes read their bodies raw and validate each event on its own (shared/events.py; a bad event is
rejected with its index and reason, never the batch): these models document the wire format, they are
not a second validation."""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

# --- canonical events (events.md §2) --------------------------------------------------------------------

Code64 = Field(min_length=1, max_length=64)


class StepIn(BaseModel):
    """The processing step (QuaTrinhXuLy) the event closes, or opens with ``open``."""

    name: str | None = None
    handler: str | None = None
    due_at: dt.datetime | None = Field(None, description="the step's own deadline (NgayKetThucTheoQuyDinh)")
    started_at: dt.datetime | None = Field(None, description="NgayBatDau")
    id: str | None = Field(None, max_length=128, description="the step's identity")
    open: bool = Field(False, description="true: the step started and is still open")


class AttributesIn(BaseModel):
    """Facts about the dossier; the latest value (by ``occurred_at``) wins. Other keys are kept as sent."""

    model_config = ConfigDict(extra="allow")

    result_required: bool | None = None
    e_result: bool | None = None
    digitized: bool | None = None
    reused_digitized: bool | None = None
    from_data_store: bool | None = None
    population_data: bool | None = None
    fee_required: bool | None = None
    fee_data: bool | None = None
    paid_online: bool | None = None
    synced_to_portal: bool | None = None
    apology_letter: bool | None = None
    applicant_type: int | None = Field(None, description="LoaiDoiTuong")


class EventIn(BaseModel):
    """One dossier status change. (source, event_id) is the idempotency key; the source is the key's."""

    event_id: str = Field(min_length=1, max_length=128)
    dossier_code: str = Code64
    unit_code: str = Field(min_length=1, max_length=64, description="must exist in the unit tree, within the "
                                                                    "key's units")
    procedure_code: str = Code64
    status: int = Field(ge=1, le=10, description="TrangThaiHoSo (events.md §1)")
    occurred_at: dt.datetime = Field(description="RFC 3339 with offset (a time without one is rejected), from 2000 "
                                                 "up to 2100")
    channel: int | None = Field(None, ge=1, le=3, description="1 in person (default), 2 online, 3 postal")
    due_at: dt.datetime | None = Field(None, description="due time of the whole dossier (NgayHenTra)")
    step: StepIn | None = None
    attributes: AttributesIn | None = None


class EventResult(BaseModel):
    model_config = ConfigDict(extra="forbid")

    index: int
    event_id: str | None = None
    status: Literal["accepted", "duplicate", "rejected"]
    reason: str | None = Field(None, description="why it was rejected: missing_field, bad_status, unknown_unit …")
    detail: str | None = None
    field: str | None = None


class EventsAnswer(BaseModel):
    model_config = ConfigDict(extra="forbid")

    accepted: int
    duplicates: int
    rejected: int
    results: list[EventResult]


# --- the national portal's sync calls (events.md §4) -------------------------------------------------

class PortalRecord(BaseModel):
    """A ``DongBoHoSoMC`` dossier or a ``CapNhatTienDoHoSoMC`` step record, as the portal defines it
    (string or plain values; yyyyMMddHHmmss Vietnam times). A record the mapping cannot read is refused
    on its own, with its index and reason."""

    model_config = ConfigDict(extra="allow")

    MaHoSo: str | None = None  # noqa: N815 - the portal's field names


class PortalEnvelope(BaseModel):
    model_config = ConfigDict(extra="allow")

    service: Literal["DongBoHoSoMC", "CapNhatTienDoHoSoMC", "TraCuuHoSo", "LayThuTuc"] | None = Field(
        None, description="default: the path's service, the query's, or the records' own")
    madonvi: str | None = Field(None, description="the unit (or MaDinhDanhDV in the query string)")
    isUpdating: str | bool | None = None  # noqa: N815
    session: str | None = Field(None, description="the token of POST /v1/dvcqg/login")
    data: list[PortalRecord | Any] | None = Field(
        None, description="the records of DongBoHoSoMC and CapNhatTienDoHoSoMC (a look-up ignores them)")
    MaHoSo: str | None = Field(None, description="TraCuuHoSo: the dossier looked up")  # noqa: N815
    MaTTHC: str | None = Field(None, description="LayThuTuc: the procedure looked up")  # noqa: N815


class PortalLogin(BaseModel):
    model_config = ConfigDict(extra="allow")

    username: str | None = Field(None, description="your system's name (not checked)")
    password: str = Field(min_length=1, description="one of our API keys (role source or admin)")


class PortalRecordResult(BaseModel):
    model_config = ConfigDict(extra="forbid")

    index: int
    MaHoSo: str | None  # noqa: N815
    status: Literal["accepted", "duplicate", "rejected"]
    events: int
    reason: str | None = None
    detail: str | None = None
    field: str | None = None


class PortalReply(BaseModel):
    """The national portal's reply: ``error_code`` 0 (or the key's own success code) only when every
    record was kept; otherwise non-zero with a ``reason``."""

    model_config = ConfigDict(extra="allow")

    error_code: int | str
    message: str
    reason: str | None = None
    detail: str | None = None
    field: str | None = None
    service: str | None = None
    accepted: int | None = None
    duplicates: int | None = None
    rejected: int | None = None
    results: list[PortalRecordResult] | None = None
    result: list[dict[str, Any]] | None = Field(None, description="the answer of a look-up (TraCuuHoSo, LayThuTuc)")
    session: str | None = Field(None, description="login: the session token")
    expires_in: int | None = Field(None, description="login: seconds the token lasts")
