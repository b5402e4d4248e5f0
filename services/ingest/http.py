"""``POST /v1/events``: canonical events as a JSON array (up to 1,000) or NDJSON."""

from __future__ import annotations

import orjson
from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from services.ingest.intake import dead_letter_body, decode_json, decode_ndjson, submit
from services.ingest.schemas import EventsAnswer, event_schemas
from services.openapi import BODY_SCHEMAS, request_body
from shared.auth import Principal, source_or_admin
from shared.events import Reason, Rejection
from shared.problems import Problem, problem_response

router = APIRouter(tags=["ingest"])


async def read_limited_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise Problem(413, Reason.TOO_LARGE, f"request body is larger than {limit} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise Problem(413, Reason.TOO_LARGE, f"request body is larger than {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


EVENT, EVENT_COMPONENTS = event_schemas()
BODY_SCHEMAS.update(EVENT_COMPONENTS)
EVENTS_BODY = request_body(
    {"anyOf": [{"type": "array", "items": EVENT, "minItems": 1}, EVENT]},
    description="a JSON array of canonical events (up to 1,000) or a single one; or NDJSON",
    more={"application/x-ndjson": {"schema": {"type": "string", "description": "one canonical event (JSON) a line"}}})


@router.post(
    "/v1/events",
    response_model=EventsAnswer,
    openapi_extra=EVENTS_BODY,
    summary="Post dossier events",
    description=(
        "A JSON array of canonical events (up to 1,000), a single event object, or NDJSON "
        "(`Content-Type: application/x-ndjson`). Each event is answered in `results` with its index: "
        "`accepted`, `duplicate`, or `rejected` with a machine-readable `reason`. Accepted events are "
        "durable before the response. 200 when at least one event was accepted or known, 422 when all "
        "were rejected.\n\n"
        "`step` (QuaTrinhXuLy), optional: `name`, `handler`, `due_at` (the step's own deadline, "
        "NgayKetThucTheoQuyDinh), `started_at` (NgayBatDau), `id` (string ≤ 128: the step's identity), "
        "`open` (boolean). Without `open` the event closes that step at `occurred_at`; a step finished "
        "after its `due_at` is an overdue step. With `\"open\": true` the step has started (send it at "
        "`started_at`) and is still open: it counts as an overdue step as soon as the clock passes its "
        "`due_at`, with no further event. A later event closes it: the same `step.id`, else the same "
        "`name` and `started_at`, else the same `started_at`, else the same `name`; the end of processing "
        "closes every step still open."
    ),
)
async def post_events(request: Request, who: Principal = Depends(source_or_admin)):
    runtime = request.app.state.runtime
    settings = runtime.settings
    body = await read_limited_body(request, settings.max_body_bytes)
    content_type = request.headers.get("content-type", "")
    if "ndjson" in content_type or "jsonlines" in content_type or "json-seq" in content_type:
        items = decode_ndjson(body)
    else:
        decoded = decode_json(body)
        if isinstance(decoded, Rejection):
            await dead_letter_body(runtime, source=who.source, transport="http", rejection=decoded, raw=body)
            raise Problem(400, decoded.reason, decoded.detail)
        items = decoded
    if not items:
        raise Problem(400, "empty_batch", "the body holds no events")
    if len(items) > settings.max_batch_events:
        raise Problem(413, "too_many_events", f"at most {settings.max_batch_events} events per request, "
                      f"got {len(items)}")
    allowed = None if who.role == "admin" else who.units
    result = await submit(request.app.state, runtime, items, source=who.source, transport="http",
                          allowed_units=allowed)
    status = 200 if (result.accepted or result.duplicates) else 422
    if status == 422:
        return problem_response(422, "all_rejected", "every event in the batch was rejected", **result.summary())
    # Encoded here (orjson) rather than validated against EventsAnswer: the results of a 1,000-event batch
    # are on the ingest hot path.
    return Response(orjson.dumps(result.summary()), status_code=status, media_type="application/json")
