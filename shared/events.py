"""The canonical dossier event (events.md §2) and its validation. Pure: no I/O.

Validation never raises for bad input: it returns a :class:`Rejection` with a machine-readable
reason, so one bad event in a batch costs only itself.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from dataclasses import dataclass, field
from typing import Any

import orjson

from shared.jsonbytes import json_bytes

BOOLEAN_ATTRIBUTES = frozenset(
    {
        "result_required",
        "e_result",
        "digitized",
        "reused_digitized",
        "from_data_store",
        "population_data",
        "fee_required",
        "fee_data",
        "paid_online",
        "synced_to_portal",
        "apology_letter",
    }
)
INT_ATTRIBUTES = frozenset({"applicant_type"})
KNOWN_FIELDS = frozenset(
    {
        "event_id",
        "dossier_code",
        "unit_code",
        "procedure_code",
        "status",
        "occurred_at",
        "channel",
        "due_at",
        "step",
        "attributes",
    }
)


class Reason:
    """Machine-readable rejection reasons (kept as plain strings on the wire and in metrics)."""

    INVALID_JSON = "invalid_json"
    NOT_AN_OBJECT = "not_an_object"
    MISSING_FIELD = "missing_field"
    BAD_FIELD = "bad_field"
    BAD_STATUS = "bad_status"
    BAD_CHANNEL = "bad_channel"
    NAIVE_TIMESTAMP = "naive_timestamp"
    BAD_TIMESTAMP = "bad_timestamp"
    OUT_OF_RANGE_TIME = "out_of_range_time"
    UNKNOWN_UNIT = "unknown_unit"
    UNIT_NOT_ALLOWED = "unit_not_allowed"
    TOO_LARGE = "too_large"
    TOO_DEEP = "too_deep"
    CONFLICT = "conflict"
    NOT_OWNER = "not_owner"
    # The event's dossier belongs to a month that was archived (exported to files and dropped): its
    # history can no longer change (see `dvc766 archive`).
    DOSSIER_ARCHIVED = "dossier_archived"


# An event is a flat object whose attributes are mostly scalars: anything nested deeper than this is not
# an event (and past ~250 levels JSON encoders and PostgreSQL's jsonb give up, failing a whole batch).
MAX_DEPTH = 8


def nested_deeper_than(value: Any, limit: int) -> bool:
    """Whether ``value`` (decoded JSON) nests objects or arrays more than ``limit`` levels deep
    (a scalar is depth 0, ``{}`` depth 1). Iterative: it never recurses, whatever the input."""
    level = [value]
    depth = 0
    while level:
        containers = [v for v in level if isinstance(v, (dict, list))]
        if not containers:
            return False
        depth += 1
        if depth > limit:
            return True
        level = [child for c in containers for child in (c.values() if isinstance(c, dict) else c)]
    return False


def is_ascii_digits(text: str) -> bool:
    """``str.isdigit`` accepts any script's digits ("٢", "２"); numbers on our wire are ASCII only."""
    return text.isascii() and text.isdigit()


@dataclass(frozen=True)
class Rejection:
    reason: str
    detail: str
    field: str | None = None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"reason": self.reason, "detail": self.detail}
        if self.field:
            out["field"] = self.field
        return out


MAX_STEP_ID = 128


@dataclass(frozen=True)
class Step:
    """A processing step (QuaTrinhXuLy). Without ``open``: the step this event closes. With ``open``: a
    step started (at ``started_at``, else the event's time) and still open; a later event naming the same
    step (``id``, else ``name`` and ``started_at``, else ``name``) closes it, as does the end of processing."""

    name: str | None = None
    handler: str | None = None
    due_at: dt.datetime | None = None
    started_at: dt.datetime | None = None
    id: str | None = None
    open: bool = False


@dataclass(frozen=True)
class DossierEvent:
    """A validated canonical event. ``source`` is set by the edge (API key or topic), never by the body."""

    source: str
    event_id: str
    dossier_code: str
    unit_code: str
    procedure_code: str
    status: int
    occurred_at: dt.datetime
    channel: int | None = None
    due_at: dt.datetime | None = None
    step: Step | None = None
    attributes: dict[str, Any] = field(default_factory=dict)

    def body(self) -> dict[str, Any]:
        """The normalised body we store and hash (times in UTC, fixed key set)."""
        out: dict[str, Any] = {
            "event_id": self.event_id,
            "dossier_code": self.dossier_code,
            "unit_code": self.unit_code,
            "procedure_code": self.procedure_code,
            "status": self.status,
            "occurred_at": _iso(self.occurred_at),
        }
        if self.channel is not None:
            out["channel"] = self.channel
        if self.due_at is not None:
            out["due_at"] = _iso(self.due_at)
        if self.step is not None:
            out["step"] = {
                k: (_iso(v) if isinstance(v, dt.datetime) else v)
                for k, v in (
                    ("name", self.step.name),
                    ("handler", self.step.handler),
                    ("due_at", self.step.due_at),
                    ("started_at", self.step.started_at),
                    ("id", self.step.id),
                    ("open", self.step.open or None),
                )
                if v is not None
            }
        if self.attributes:
            out["attributes"] = dict(sorted(self.attributes.items()))
        return out

    def encoded_body(self) -> bytes:
        """:meth:`body` as JSON with sorted keys: computed once per event (it is hashed and stored)."""
        encoded = self.__dict__.get("_encoded_body")
        if encoded is None:
            encoded = json_bytes(self.body(), option=orjson.OPT_SORT_KEYS)
            object.__setattr__(self, "_encoded_body", encoded)  # a cache, not a field: eq and hash ignore it
        return encoded

    def body_hash(self) -> str:
        return hashlib.sha256(self.encoded_body()).hexdigest()[:32]


_UTC = dt.timezone.utc
_FAST_BODY_OPTIONS = orjson.OPT_SORT_KEYS | orjson.OPT_UTC_Z

# Every time an event carries must fall in [EARLIEST_TIME, LATEST_TIME) once converted to UTC: the
# instants the rules compute with (the working-day calendar holds these years' holidays, and Vietnam
# time stays representable). Outside it, the event is refused at intake with OUT_OF_RANGE_TIME.
EARLIEST_TIME = dt.datetime(2000, 1, 1, tzinfo=_UTC)
LATEST_TIME = dt.datetime(2100, 1, 1, tzinfo=_UTC)


def time_in_window(value: dt.datetime, name: str, shown: Any = None) -> dt.datetime | Rejection:
    """``value`` (timezone-aware) if it lies in the window of times the rules compute with, else a
    rejection naming the field; ``shown`` is the value as the client sent it."""
    if EARLIEST_TIME <= value < LATEST_TIME:  # compared as instants: no conversion, so no overflow
        return value
    return Rejection(Reason.OUT_OF_RANGE_TIME, f"{name} must be from {_iso(EARLIEST_TIME)} up to "
                     f"{_iso(LATEST_TIME)} (UTC), not {value.isoformat() if shown is None else shown!r}", name)


def _iso(value: dt.datetime) -> str:
    return value.astimezone(dt.timezone.utc).isoformat().replace("+00:00", "Z")


def parse_timestamp(value: Any, name: str) -> dt.datetime | Rejection:
    fast = _fast_timestamp(value)
    return fast if fast is not None else _parse_timestamp_full(value, name)


def _parse_timestamp_full(value: Any, name: str) -> dt.datetime | Rejection:
    if not isinstance(value, str) or not value:
        return Rejection(Reason.BAD_TIMESTAMP, f"{name} must be an RFC 3339 string", name)
    text = value.strip()
    if text.endswith(("z", "Z")):
        text = text[:-1] + "+00:00"
    try:
        parsed = dt.datetime.fromisoformat(text)
    except ValueError:
        return Rejection(Reason.BAD_TIMESTAMP, f"{name} is not an RFC 3339 timestamp: {value!r}", name)
    if parsed.tzinfo is None or parsed.utcoffset() is None:
        return Rejection(Reason.NAIVE_TIMESTAMP, f"{name} has no UTC offset: {value!r}", name)
    return time_in_window(parsed, name, value)


def _fast_timestamp(value: Any) -> dt.datetime | None:
    """The common case of :func:`parse_timestamp`: ``YYYY-MM-DDTHH:MM:SS+HH:MM`` (any numeric offset),
    nothing to strip, within the window of times. None means "not this case" (the full path decides,
    rejections included); a datetime is exactly what the full path returns for the same input."""
    if (
        type(value) is not str or len(value) != 25 or value[10] != "T" or value[22] != ":"
        or value[19] not in "+-" or not ("0" <= value[0] <= "9" and "0" <= value[24] <= "9")
    ):
        return None
    try:
        parsed = dt.datetime.fromisoformat(value)  # what the full path parses: nothing to strip, no "Z"
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None and EARLIEST_TIME <= parsed < LATEST_TIME else None


def _code(raw: dict[str, Any], name: str, limit: int) -> str | Rejection:
    value = raw.get(name)
    if value is None or value == "":
        return Rejection(Reason.MISSING_FIELD, f"{name} is required", name)
    if not isinstance(value, str):
        return Rejection(Reason.BAD_FIELD, f"{name} must be a string", name)
    if len(value) > limit:
        return Rejection(Reason.BAD_FIELD, f"{name} is longer than {limit} characters", name)
    return value


def _small_int(raw: dict[str, Any], name: str, low: int, high: int, reason: str) -> int | None | Rejection:
    value = raw.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        # Strings of digits are common from older systems; accept them exactly.
        if isinstance(value, str) and is_ascii_digits(value.strip()):
            value = int(value.strip())
        else:
            return Rejection(reason, f"{name} must be an integer from {low} to {high}", name)
    if not low <= value <= high:
        return Rejection(reason, f"{name} must be from {low} to {high}, not {value}", name)
    return value


def validate_event(raw: Any, source: str) -> DossierEvent | Rejection:
    """Validate one decoded JSON value as a canonical event of ``source``."""
    event = None
    if type(raw) is dict:
        event = _validate_fast(raw, source)
    if event is None:
        event = _validate_full(raw, source)
        if isinstance(event, Rejection):
            return event
    if b"u0000" in event.encoded_body() and _ESCAPED_NUL.search(event.encoded_body()):
        # PostgreSQL's jsonb and text cannot hold U+0000: stored, it would fail the whole batch.
        return Rejection(Reason.BAD_FIELD, "text may not contain the NUL character (U+0000)")
    return event


# \u0000 in JSON text, not preceded by an escaped backslash (a literal "\u0000" is text, not NUL).
_ESCAPED_NUL = re.compile(rb"(?<!\\)(?:\\\\)*\\u0000")


def _new(cls: type, fields: dict[str, Any]) -> Any:
    """An instance of the frozen dataclass ``cls`` from its complete ``fields`` (checked already),
    without the per-field ``object.__setattr__`` of the generated ``__init__``."""
    instance = object.__new__(cls)
    object.__setattr__(instance, "__dict__", fields)
    return instance


def _validate_fast(raw: dict[str, Any], source: str) -> DossierEvent | None:
    """The well-formed common case, checked and normalised in one pass: the event (with its encoded
    body already cached) exactly as :func:`_validate_full` builds it, or None whenever anything is
    unusual (the full path then accepts or rejects it with the right reason). It never rejects.

    Times go into the body as UTC datetimes that orjson writes as :func:`_iso` does
    (``2026-07-31T00:39:29Z``, microseconds only when there are some): same bytes, same hash."""
    event_id = raw.get("event_id")
    dossier_code = raw.get("dossier_code")
    unit_code = raw.get("unit_code")
    procedure_code = raw.get("procedure_code")
    if (
        type(event_id) is not str or not 0 < len(event_id) <= 128
        or type(dossier_code) is not str or not 0 < len(dossier_code) <= 64
        or type(unit_code) is not str or not 0 < len(unit_code) <= 64
        or type(procedure_code) is not str or not 0 < len(procedure_code) <= 64
    ):
        return None
    status = raw.get("status")
    if type(status) is not int or not 1 <= status <= 10:
        return None
    occurred_raw = raw.get("occurred_at")
    occurred_at = _fast_timestamp(occurred_raw)
    if occurred_at is None:
        return None
    body: dict[str, Any] = {
        "event_id": event_id,
        "dossier_code": dossier_code,
        "unit_code": unit_code,
        "procedure_code": procedure_code,
        "status": status,
        "occurred_at": occurred_at.astimezone(_UTC),
    }
    channel = raw.get("channel")
    if channel is not None:
        if type(channel) is not int or not 1 <= channel <= 3:
            return None
        body["channel"] = channel
    due_at = raw.get("due_at")
    if due_at is None or due_at == "":
        due_at = None
    else:
        due_at = _fast_timestamp(due_at)
        if due_at is None:
            return None
        body["due_at"] = due_at.astimezone(_UTC)
    step = raw.get("step")
    attributes = raw.get("attributes")
    # Containers only as step and attributes, each flat: any deeper shape is the full path's (depth limit).
    containers = 0
    for value in raw.values():
        if type(value) is dict or type(value) is list:
            containers += 1
    if containers != (type(step) is dict) + (type(attributes) is dict):
        return None
    if step is not None:
        if type(step) is not dict:
            return None
        for value in step.values():
            if type(value) is dict or type(value) is list:
                return None
        step_body: dict[str, Any] = {}
        parts: dict[str, Any] = {}
        for name in ("name", "handler", "id"):
            value = step.get(name)
            if value is not None:
                if type(value) is not str or (name == "id" and len(value) > MAX_STEP_ID):
                    return None
                step_body[name] = value
            parts[name] = value
        is_open = step.get("open")
        if is_open is not None and type(is_open) is not bool:
            return None
        if is_open:
            step_body["open"] = True
        parts["open"] = bool(is_open)
        for name in ("due_at", "started_at"):
            value = step.get(name)
            if value is None or value == "":
                value = None
            else:
                value = _fast_timestamp(value)
                if value is None:
                    return None
                step_body[name] = value.astimezone(_UTC)
            parts[name] = value
        step = _new(Step, parts)
        body["step"] = step_body
    if attributes is None:
        attributes = {}
    else:
        if type(attributes) is not dict:
            return None
        kept: dict[str, Any] = {}
        for key, value in attributes.items():
            if value is None:
                continue
            if key in BOOLEAN_ATTRIBUTES:
                if type(value) is not bool:
                    return None
            elif key in INT_ATTRIBUTES:
                if type(value) is not int:
                    return None
            elif type(value) is dict or type(value) is list:
                return None  # the full path bounds its depth
            kept[key] = value
        attributes = kept
        if kept:
            body["attributes"] = kept  # the encoding sorts keys, as body() does
    return _new(DossierEvent, {
        "source": source,
        "event_id": event_id,
        "dossier_code": dossier_code,
        "unit_code": unit_code,
        "procedure_code": procedure_code,
        "status": status,
        "occurred_at": occurred_at,
        "channel": channel,
        "due_at": due_at,
        "step": step,
        "attributes": attributes,
        "_encoded_body": json_bytes(body, option=_FAST_BODY_OPTIONS),
    })


def _validate_full(raw: Any, source: str) -> DossierEvent | Rejection:
    """Every check in the contract's order: the first that fails is the event's rejection."""
    if not isinstance(raw, dict):
        return Rejection(Reason.NOT_AN_OBJECT, "each event must be a JSON object")
    if nested_deeper_than(raw, MAX_DEPTH):
        return Rejection(Reason.TOO_DEEP, f"an event may nest objects and arrays at most {MAX_DEPTH} levels deep")
    codes = {}
    for name, limit in (("event_id", 128), ("dossier_code", 64), ("unit_code", 64), ("procedure_code", 64)):
        value = _code(raw, name, limit)
        if isinstance(value, Rejection):
            return value
        codes[name] = value
    if raw.get("status") is None:
        return Rejection(Reason.MISSING_FIELD, "status is required", "status")
    status = _small_int(raw, "status", 1, 10, Reason.BAD_STATUS)
    if isinstance(status, Rejection):
        return status
    if raw.get("occurred_at") is None:
        return Rejection(Reason.MISSING_FIELD, "occurred_at is required", "occurred_at")
    occurred_at = parse_timestamp(raw["occurred_at"], "occurred_at")
    if isinstance(occurred_at, Rejection):
        return occurred_at
    channel = _small_int(raw, "channel", 1, 3, Reason.BAD_CHANNEL)
    if isinstance(channel, Rejection):
        return channel
    due_at = None
    if raw.get("due_at") not in (None, ""):
        due_at = parse_timestamp(raw["due_at"], "due_at")
        if isinstance(due_at, Rejection):
            return due_at
    step = _step(raw.get("step"))
    if isinstance(step, Rejection):
        return step
    attributes = _attributes(raw.get("attributes"))
    if isinstance(attributes, Rejection):
        return attributes
    return DossierEvent(
        source=source,
        status=status,  # type: ignore[arg-type]
        occurred_at=occurred_at,
        channel=channel,  # type: ignore[arg-type]
        due_at=due_at,
        step=step,
        attributes=attributes,
        **codes,
    )


def _step(raw: Any) -> Step | None | Rejection:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        return Rejection(Reason.BAD_FIELD, "step must be an object", "step")
    times = {}
    for name in ("due_at", "started_at"):
        if raw.get(name) in (None, ""):
            times[name] = None
            continue
        parsed = parse_timestamp(raw[name], f"step.{name}")
        if isinstance(parsed, Rejection):
            return parsed
        times[name] = parsed
    texts = {}
    for name in ("name", "handler", "id"):
        value = raw.get(name)
        if value is not None and not isinstance(value, str):
            return Rejection(Reason.BAD_FIELD, f"step.{name} must be a string", f"step.{name}")
        texts[name] = value
    if texts["id"] is not None and len(texts["id"]) > MAX_STEP_ID:
        return Rejection(Reason.BAD_FIELD, f"step.id is longer than {MAX_STEP_ID} characters", "step.id")
    is_open = raw.get("open")
    if is_open is not None and not isinstance(is_open, bool):
        return Rejection(Reason.BAD_FIELD, "step.open must be true or false", "step.open")
    return Step(**texts, **times, open=bool(is_open))


def _attributes(raw: Any) -> dict[str, Any] | Rejection:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        return Rejection(Reason.BAD_FIELD, "attributes must be an object", "attributes")
    out: dict[str, Any] = {}
    for key, value in raw.items():
        if value is None:
            continue
        if key in BOOLEAN_ATTRIBUTES:
            if not isinstance(value, bool):
                return Rejection(Reason.BAD_FIELD, f"attributes.{key} must be true or false", f"attributes.{key}")
        elif key in INT_ATTRIBUTES:
            if isinstance(value, bool) or not isinstance(value, int):
                return Rejection(Reason.BAD_FIELD, f"attributes.{key} must be an integer", f"attributes.{key}")
        # Unknown attributes are kept (sources add facts before we score them) but not interpreted.
        out[key] = value
    return out


def event_from_body(source: str, body: dict[str, Any]) -> DossierEvent:
    """Rebuild an event from its stored normalised body (trusted: it passed validation once)."""
    result = validate_event(body, source)
    if isinstance(result, Rejection):  # pragma: no cover - stored bodies are valid by construction
        raise ValueError(f"stored event no longer validates: {result}")
    return result
