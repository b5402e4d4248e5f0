"""``POST /v1/dvcqg``: the national portal's own sync calls, accepted unchanged (events.md §4).

A province connects its one-stop-shop system (VNPT iGate, OpenCPS, in-house) by adding one URL to
the sync it already runs: ``DongBoHoSoMC`` (dossier snapshots) and ``CapNhatTienDoHoSoMC`` (step
records), on ``/v1/dvcqg`` or the path variants systems use (``/v1/dvcqg/DongBoHoSoMC``, …).

Auth as the portal's callers expect it: a token per calling system (``Authorization: Bearer`` or a
``token`` header), which is one of our API keys (role ``source``, bound to its units; or ``admin``).
Replies use the portal's shape, ``{"error_code": 0, "message": ...}``, non-zero with a reason, and
one result per element of ``data`` (its index, MaHoSo, status and, when refused, a machine-readable
reason). The mapped events go through :func:`services.ingest.intake.intake`, the one acceptance path.
"""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from services.ingest.http import read_limited_body
from services.ingest.intake import Item, compact_json, dead_letter_body, intake
from services.ingest.portal_mapping import SERVICES, MappedPayload, map_payload
from shared.auth import Principal
from shared.events import Reason, Rejection
from shared.problems import Problem

router = APIRouter(tags=["ingest"])
TRANSPORT = "dvcqg"


class ErrorCode:
    """The reply's ``error_code`` (0 = every element accepted or already known)."""

    OK = 0
    PARTIAL = 1  # some elements refused; the others stand
    ALL_REJECTED = 2
    BAD_PAYLOAD = 3  # not JSON, not the portal's shape, unknown service, data not an array
    AUTH = 4  # no token, unknown token, or a token that may not sync for this unit
    TOO_LARGE = 5


MESSAGES = {
    ErrorCode.OK: "Thành công",
    ErrorCode.PARTIAL: "Một số hồ sơ không hợp lệ",
    ErrorCode.ALL_REJECTED: "Không có hồ sơ hợp lệ",
    ErrorCode.BAD_PAYLOAD: "Dữ liệu không hợp lệ",
    ErrorCode.AUTH: "Xác thực không thành công",
    ErrorCode.TOO_LARGE: "Dữ liệu quá lớn",
}


def portal_reply(http_status: int, error_code: int, *, reason: str | None = None, detail: str | None = None,
                 **extra: Any) -> JSONResponse:
    body: dict[str, Any] = {"error_code": error_code, "message": MESSAGES[error_code]}
    if reason:
        body["reason"] = reason
    if detail:
        body["detail"] = detail
    body.update(extra)
    return JSONResponse(body, status_code=http_status)


def caller(request: Request) -> Principal | JSONResponse:
    """The calling system, from ``Authorization: Bearer <token>`` or a ``token`` header."""
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    token = token.strip() if scheme.lower() == "bearer" else ""
    token = token or request.headers.get("token", "").strip()
    if not token:
        return portal_reply(401, ErrorCode.AUTH, reason="unauthenticated",
                            detail="send the system's token as 'Authorization: Bearer <token>'")
    found = request.app.state.keyring.lookup(token)
    if found is None:
        return portal_reply(401, ErrorCode.AUTH, reason="bad_api_key", detail="this token is not known")
    if found.role not in ("source", "admin"):
        return portal_reply(403, ErrorCode.AUTH, reason="forbidden", detail=f"role {found.role!r} may not sync dossiers")
    return found


async def _handle(request: Request, path_service: str | None) -> JSONResponse:
    who = caller(request)
    if isinstance(who, JSONResponse):
        return who
    runtime = request.app.state.runtime
    settings = runtime.settings
    try:
        body = await read_limited_body(request, settings.max_body_bytes)
    except Problem as exc:
        return portal_reply(413, ErrorCode.TOO_LARGE, reason=exc.code, detail=exc.detail)
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        rejection = Rejection(Reason.INVALID_JSON, f"body is not JSON: {exc}")
        await dead_letter_body(runtime, source=who.source, transport=TRANSPORT, rejection=rejection, raw=body)
        return portal_reply(400, ErrorCode.BAD_PAYLOAD, reason=rejection.reason, detail=rejection.detail)
    mapped = map_payload(payload, service=path_service, is_unit=runtime.units.__contains__)
    if isinstance(mapped, Rejection):
        await dead_letter_body(runtime, source=who.source, transport=TRANSPORT, rejection=mapped, raw=body)
        return portal_reply(400, ErrorCode.BAD_PAYLOAD, reason=mapped.reason, detail=mapped.detail,
                            field=mapped.field)
    if len(mapped.items) > settings.max_batch_events:
        return portal_reply(413, ErrorCode.TOO_LARGE, reason="too_many_events",
                            detail=f"at most {settings.max_batch_events} records per call, got {len(mapped.items)}")
    allowed = None if who.role == "admin" else who.units
    if allowed is not None and mapped.madonvi in runtime.units and not runtime.units.is_within(mapped.madonvi, allowed):
        return portal_reply(403, ErrorCode.AUTH, reason=Reason.UNIT_NOT_ALLOWED,
                            detail=f"this token may not sync for unit {mapped.madonvi!r}")
    return await _accept(request, runtime, who, allowed, payload, mapped)


async def _accept(request: Request, runtime, who: Principal, allowed, payload: dict, mapped: MappedPayload):
    # Every canonical event (and every refused record, to be dead-lettered with its reason) is one intake item.
    items: list[Item] = []
    owner: list[int] = []  # intake item -> portal record index
    raw_records = payload["data"]
    for record in mapped.items:
        if record.rejection is not None:
            raw = compact_json(raw_records[record.index])
            items.append(Item(len(items), raw_records[record.index], raw, record.rejection))
            owner.append(record.index)
            continue
        for event in record.events:
            items.append(Item(len(items), event, orjson.dumps(event).decode()))
            owner.append(record.index)
    results: list[dict[str, Any]] = [
        {"index": r.index, "MaHoSo": r.dossier_code, "status": "accepted", "events": len(r.events)}
        for r in mapped.items
    ]
    if items:
        publisher = request.app.state.__dict__.get("publish_events")
        if publisher is not None:  # Kafka mode: produce to the topic before answering
            outcome = await publisher(runtime, items, source=who.source, allowed_units=allowed)
        else:
            outcome = await intake(runtime, items, source=who.source, transport=TRANSPORT, allowed_units=allowed,
                                   enqueue=True)
        seen: dict[int, set[str]] = {}
        for entry in outcome.results:
            record_index = owner[entry["index"]]
            result = results[record_index]
            seen.setdefault(record_index, set()).add(entry["status"])
            if entry["status"] == "rejected" and "reason" not in result:
                result.update(status="rejected", reason=entry["reason"], detail=entry["detail"])
                if entry.get("field"):
                    result["field"] = entry["field"]
        for record_index, statuses in seen.items():
            if results[record_index]["status"] != "rejected" and statuses == {"duplicate"}:
                results[record_index]["status"] = "duplicate"
    rejected = sum(1 for r in results if r["status"] == "rejected")
    if not results:
        code = ErrorCode.OK
    elif rejected == len(results):
        code = ErrorCode.ALL_REJECTED
    else:
        code = ErrorCode.PARTIAL if rejected else ErrorCode.OK
    summary = {
        "service": mapped.service,
        "accepted": sum(1 for r in results if r["status"] == "accepted"),
        "duplicates": sum(1 for r in results if r["status"] == "duplicate"),
        "rejected": rejected,
        "results": results,
    }
    if code == ErrorCode.ALL_REJECTED:
        return portal_reply(422, code, reason="all_rejected", detail="every record of data was refused", **summary)
    return portal_reply(200, code, **summary)


_DESCRIPTION = (
    "The national portal's sync calls, unchanged: `{\"service\": \"DongBoHoSoMC\", \"madonvi\": ..., "
    "\"isUpdating\": ..., \"data\": [dossier]}` or `{\"service\": \"CapNhatTienDoHoSoMC\", \"madonvi\": ..., "
    "\"data\": [step]}` (string values, yyyyMMddHHmmss Vietnam times). Reply: `{\"error_code\": 0, "
    "\"message\": ...}`, non-zero with a `reason`, and one result per record of `data`."
)


@router.post("/v1/dvcqg", summary="Sync calls of the national portal (DongBoHoSoMC, CapNhatTienDoHoSoMC)",
             description=_DESCRIPTION)
async def post_portal(request: Request):
    return await _handle(request, None)


@router.post("/v1/dvcqg/{service}", summary="Sync calls of the national portal, service named in the path",
             description=_DESCRIPTION)
async def post_portal_service(request: Request, service: str):
    # Systems append the service (and sometimes an api/ prefix or a version) to the base URL they sync to.
    named = next((s for s in SERVICES if s.lower() == service.lower()), None)
    if named is None:
        return portal_reply(404, ErrorCode.BAD_PAYLOAD, reason="unknown_service",
                            detail=f"service must be one of {', '.join(SERVICES)}, not {service!r}")
    return await _handle(request, named)
