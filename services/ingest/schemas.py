"""The shapes ingest takes and answers, for OpenAPI and generated clients.

The routes read their bodies raw and validate each event on its own (shared/events.py; a bad event is
rejected with its index and reason, never the batch): the event's schema is its definition's, and the
portal's models document the wire format; neither is a second validation."""

from __future__ import annotations

from typing import Any, Literal

import msgspec
from pydantic import BaseModel, ConfigDict, Field

from shared.events import BOOLEAN_ATTRIBUTES, INT_ATTRIBUTES, DossierEvent

# --- canonical events (events.md §2) --------------------------------------------------------------------

def event_schemas() -> tuple[dict, dict[str, dict]]:
    """The canonical event's JSON Schema, from its one definition (shared/events.py, msgspec): a reference
    and the components it names. ``attributes`` lists the facts the rules read (other keys are kept)."""
    (reference,), components = msgspec.json.schema_components(
        [DossierEvent], ref_template="#/components/schemas/{name}")
    known = {name: {"anyOf": [{"type": "boolean"}, {"type": "null"}]} for name in sorted(BOOLEAN_ATTRIBUTES)}
    known |= {name: {"anyOf": [{"type": "integer"}, {"type": "null"}]} for name in sorted(INT_ATTRIBUTES)}
    components["DossierEvent"]["properties"]["attributes"] = {
        "type": "object", "properties": known, "additionalProperties": True,
        "description": "facts about the dossier; the latest value (by occurred_at) wins; other keys are kept"}
    return reference, components


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
