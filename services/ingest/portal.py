"""``POST /v1/dvcqg``: the national portal's own sync calls, accepted unchanged (events.md §4, clients.md).

A province connects its one-stop-shop system (OpenCPS, TD DichVuCong, VNPT iGate, in-house) by pointing
the sync it already runs at this URL: ``DongBoHoSoMC`` (dossier snapshots) and ``CapNhatTienDoHoSoMC``
(step records), on ``/v1/dvcqg`` or with the service in the path (``/v1/dvcqg/DongBoHoSoMC``, …). The
call is the portal's JSON envelope, or a bare array with the unit (``madonvi`` / ``MaDinhDanhDV``) and
``isUpdating`` in the query string, as provincial gateways relay it.

Auth as those systems send it: the portal's login call (``POST /v1/dvcqg/login`` with ``username`` and
``password`` = one of our API keys) issues an expiring session token bound to that key and its units,
which the sync calls carry in the body's ``session``; or the key (or token) itself as
``Authorization: Bearer``, a ``token`` header, or ``token`` / ``session`` in the query string (for
systems whose URL is all that can be configured). The ``dstcode`` header some systems send is accepted
and ignored.

Replies use the portal's shape, ``{"error_code": 0, "message": "Thành công"}`` only when every record
was kept (accepted or already known), non-zero with a reason otherwise, and one result per record. The
mapped events go through :func:`services.ingest.intake.submit`, the one door for dossier events.
"""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from services.ingest.http import read_limited_body
from services.ingest.schemas import PortalEnvelope, PortalLogin, PortalRecord, PortalReply
from services.events.checks import Item, compact_json
from services.ingest.intake import dead_letter_body, submit
from services.ingest.portal_mapping import (
    LOOKUP_DOSSIER,
    LOOKUPS,
    SERVICES,
    Envelope,
    MappedPayload,
    blank_personal,
    blank_personal_text,
    map_payload,
    read_envelope,
)
from shared.auth import Principal
from shared.db.raw import driver_connection
from shared.events import Reason, Rejection
from services.openapi import request_body
from shared.problems import Problem

router = APIRouter(tags=["ingest"])
TRANSPORT = "dvcqg"


class ErrorCode:
    """The reply's ``error_code`` (0 = every record kept: accepted or already known)."""

    OK = 0
    PARTIAL = 1  # some records refused; the others stand
    ALL_REJECTED = 2
    BAD_PAYLOAD = 3  # not JSON, not the portal's shape, unknown service, data not an array
    AUTH = 4  # no credentials, unknown or expired ones, or a key that may not sync for this unit
    TOO_LARGE = 5


MESSAGES = {
    ErrorCode.OK: "Thành công",
    ErrorCode.PARTIAL: "Một số hồ sơ không hợp lệ",
    ErrorCode.ALL_REJECTED: "Không có hồ sơ hợp lệ",
    ErrorCode.BAD_PAYLOAD: "Dữ liệu không hợp lệ",
    ErrorCode.AUTH: "Xác thực không thành công",
    ErrorCode.TOO_LARGE: "Dữ liệu quá lớn",
}


def portal_reply(http_status: int, error_code: int, *, ok_code: int | str = 0, reason: str | None = None,
                 detail: str | None = None, **extra: Any) -> JSONResponse:
    body: dict[str, Any] = {"error_code": ok_code if error_code == ErrorCode.OK else error_code,
                            "message": MESSAGES[error_code]}
    if reason:
        body["reason"] = reason
    if detail:
        body["detail"] = detail
    body.update(extra)
    return JSONResponse(body, status_code=http_status)


def _presented(request: Request, body_session: str) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    return ((token.strip() if scheme.lower() == "bearer" else "") or request.headers.get("token", "").strip()
            or request.query_params.get("token", "").strip() or request.query_params.get("session", "").strip()
            or body_session)


def caller(request: Request, body_session: str = "") -> Principal | JSONResponse:
    """The calling system, from a session token or an API key, wherever the system puts it."""
    presented = _presented(request, body_session)
    if not presented:
        return portal_reply(401, ErrorCode.AUTH, reason="unauthenticated",
                            detail="log in at /v1/dvcqg/login and send the session in the body's 'session', "
                                   "or send an API key as 'Authorization: Bearer <key>'")
    keyring = request.app.state.keyring
    found = keyring.lookup_session(presented)
    if found == "expired":
        return portal_reply(401, ErrorCode.AUTH, reason="session_expired", detail="the session expired; log in again")
    found = found or keyring.lookup(presented)
    if found is None:
        return portal_reply(401, ErrorCode.AUTH, reason="bad_api_key", detail="this token is not known")
    if found.role not in ("source", "admin"):
        return portal_reply(403, ErrorCode.AUTH, reason="forbidden", detail=f"role {found.role!r} may not sync dossiers")
    return found


async def _handle(request: Request, path_service: str | None) -> JSONResponse:
    runtime = request.app.state.runtime
    settings = runtime.settings
    try:
        body = await read_limited_body(request, settings.max_body_bytes)
    except Problem as exc:
        return portal_reply(413, ErrorCode.TOO_LARGE, reason=exc.code, detail=exc.detail)
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        who = caller(request)
        if isinstance(who, JSONResponse):
            return who
        rejection = Rejection(Reason.INVALID_JSON, f"body is not JSON: {exc}")
        raw = blank_personal_text(body.decode("utf-8", "replace")).encode()
        await dead_letter_body(runtime, source=who.source, transport=TRANSPORT, rejection=rejection, raw=raw)
        return portal_reply(400, ErrorCode.BAD_PAYLOAD, reason=rejection.reason, detail=rejection.detail)
    session = payload.get("session") if isinstance(payload, dict) else None
    who = caller(request, session.strip() if isinstance(session, str) else "")
    if isinstance(who, JSONResponse):
        return who
    envelope = read_envelope(payload, query=request.query_params, service=path_service)
    if isinstance(envelope, Rejection):
        return await _refuse_payload(runtime, who, envelope, payload)
    if envelope.service in LOOKUPS:
        return await _lookup(runtime, who, envelope, payload)
    allowed = None if who.role == "admin" else who.units
    mapped = map_payload(envelope, runtime.units, allowed=allowed, population_db_codes=settings.portal.population_db_codes)
    if isinstance(mapped, Rejection):
        return await _refuse_payload(runtime, who, mapped, payload)
    if len(mapped.items) > settings.max_batch_events:
        return portal_reply(413, ErrorCode.TOO_LARGE, reason="too_many_events",
                            detail=f"at most {settings.max_batch_events} records per call, got {len(mapped.items)}")
    tree = runtime.units
    if (allowed is not None and mapped.madonvi in tree and not tree.is_within(mapped.madonvi, allowed)
            and not any(tree.is_within(e["unit_code"], allowed) for r in mapped.items for e in r.events)):
        # The call names another unit and none of its records is this key's (a record whose MaHoSo names
        # one of the key's units may come under a parent's madonvi).
        return portal_reply(403, ErrorCode.AUTH, reason=Reason.UNIT_NOT_ALLOWED,
                            detail=f"this key may not sync for unit {mapped.madonvi!r}")
    return await _accept(request, runtime, who, allowed, envelope, mapped)


async def _refuse_payload(runtime, who: Principal, rejection: Rejection, payload: Any) -> JSONResponse:
    raw = compact_json(blank_personal(payload)).encode()
    await dead_letter_body(runtime, source=who.source, transport=TRANSPORT, rejection=rejection, raw=raw)
    return portal_reply(400, ErrorCode.BAD_PAYLOAD, reason=rejection.reason, detail=rejection.detail,
                        field=rejection.field)


async def _lookup(runtime, who: Principal, envelope: Envelope, payload: Any) -> JSONResponse:
    """The look-ups systems make on the sync URL: whether a dossier is known (``TraCuuHoSo``), a
    procedure's name and field (``LayThuTuc``), answered as the portal does (``result``: a list)."""
    if not isinstance(payload, dict):
        return portal_reply(400, ErrorCode.BAD_PAYLOAD, reason=Reason.NOT_AN_OBJECT,
                            detail=f"{envelope.service} takes a JSON object with MaHoSo or MaTTHC")
    body = payload
    for name, wanted in (("MaHoSo", str), ("MaTTHC", str), ("data", list)):
        if body.get(name) is not None and not isinstance(body[name], wanted):
            return portal_reply(400, ErrorCode.BAD_PAYLOAD, reason=Reason.BAD_FIELD, field=name,
                                detail=f"{name} must be {'text' if wanted is str else 'an array'}")
    async with runtime.engine.connect() as conn:
        apg = await driver_connection(conn)
        if envelope.service == LOOKUP_DOSSIER:
            code = str(body.get("MaHoSo") or "").strip()
            known = code and await apg.fetchval(
                "SELECT 1 FROM events WHERE dossier_code = $1 AND source = $2 LIMIT 1", code, who.source)
            result = [{"MaHoSo": code}] if known else []
        else:
            code = str(body.get("MaTTHC") or "").strip()
            row = code and await apg.fetchrow(
                "SELECT name, field_code, field_name FROM procedures WHERE procedure_code = $1 AND NOT removed "
                "ORDER BY valid_from DESC LIMIT 1", code)
            result = [{"MATTHC": code, "TENTTHC": row["name"] or "",
                       "LINHVUCTHUCHIEN": [{"MALINHVUC": row["field_code"] or "", "TENLINHVUC": row["field_name"] or ""}]}
                      ] if row else []
    return portal_reply(200, ErrorCode.OK, ok_code=who.portal_ok_code, service=envelope.service, result=result)


async def _accept(request: Request, runtime, who: Principal, allowed, envelope: Envelope, mapped: MappedPayload):
    # Every canonical event (and every refused record, to be dead-lettered with its reason) is one intake item.
    items: list[Item] = []
    owner: list[int] = []  # intake item -> portal record index
    raw_records = envelope.data
    for record in mapped.items:
        if record.rejection is not None:
            kept = blank_personal(raw_records[record.index])
            items.append(Item(len(items), kept, compact_json(kept), record.rejection))
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
        outcome = await submit(request.app.state, runtime, items, source=who.source, transport=TRANSPORT,
                               allowed_units=allowed)
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
    return portal_reply(200, code, ok_code=who.portal_ok_code, **summary)


async def _login(request: Request) -> JSONResponse:
    runtime = request.app.state.runtime
    try:
        body = orjson.loads(await read_limited_body(request, 64 * 1024))
    except (orjson.JSONDecodeError, Problem):
        body = None
    password = body.get("password") if isinstance(body, dict) else None
    if not isinstance(password, str) or not password.strip():
        return portal_reply(400, ErrorCode.BAD_PAYLOAD, reason="missing_field",
                            detail="send {\"username\": <your system>, \"password\": <your API key>}", field="password")
    keyring = request.app.state.keyring
    who = keyring.lookup(password.strip())
    if who is None:
        return portal_reply(401, ErrorCode.AUTH, reason="bad_api_key", detail="this key is not known")
    if who.role not in ("source", "admin"):
        return portal_reply(403, ErrorCode.AUTH, reason="forbidden", detail=f"role {who.role!r} may not sync dossiers")
    seconds = runtime.settings.portal.session_seconds
    token = keyring.issue_session(password.strip(), seconds)
    return portal_reply(200, ErrorCode.OK, ok_code=who.portal_ok_code, session=token, expires_in=seconds)


_DESCRIPTION = (
    "The national portal's sync calls, unchanged: `{\"service\": \"DongBoHoSoMC\", \"madonvi\": ..., "
    "\"isUpdating\": ..., \"session\": ..., \"data\": [dossier]}` or `{\"service\": \"CapNhatTienDoHoSoMC\", "
    "\"madonvi\": ..., \"data\": [step]}`, or a bare array of records with `madonvi` (or `MaDinhDanhDV`) and "
    "`isUpdating` in the query string (string or plain values, `\"\"` or null for empty, yyyyMMddHHmmss Vietnam "
    "times). `TraCuuHoSo` and `LayThuTuc` look-ups are answered too. Reply: `{\"error_code\": 0, \"message\": "
    "\"Thành công\"}` only when every record was kept, non-zero with a `reason` otherwise, and one result per "
    "record. See docs/integrators.md."
)


SYNC_BODY = request_body(PortalEnvelope | list[PortalRecord | Any],
                         description="the portal's envelope, or a bare array of records with madonvi in the query")


@router.post("/v1/dvcqg", summary="Sync calls of the national portal (DongBoHoSoMC, CapNhatTienDoHoSoMC)",
             description=_DESCRIPTION, response_model=PortalReply, openapi_extra=SYNC_BODY)
async def post_portal(request: Request):
    return await _handle(request, None)


@router.post("/v1/dvcqg/login", summary="The portal's login call: an expiring session token for an API key",
             description="`{\"username\": <system>, \"password\": <API key>}` → `{\"error_code\": 0, \"session\": "
                         "<token>, \"expires_in\": <seconds>}`; the token is bound to the key and its units.",
             response_model=PortalReply,
             openapi_extra=request_body(PortalLogin, description="your system's name and one of our API keys"))
async def post_login(request: Request):
    return await _login(request)


@router.post("/v1/dvcqg/{service}", summary="Sync calls of the national portal, service named in the path",
             description=_DESCRIPTION, response_model=PortalReply, openapi_extra=SYNC_BODY)
async def post_portal_service(request: Request, service: str):
    # Systems append the service (and sometimes an api/ prefix or a version) to the base URL they sync to.
    named = next((s for s in SERVICES + LOOKUPS if s.lower() == service.lower()), None)
    if named is None:
        return portal_reply(404, ErrorCode.BAD_PAYLOAD, reason="unknown_service",
                            detail=f"service must be one of {', '.join(SERVICES)}, not {service!r}")
    return await _handle(request, named)
