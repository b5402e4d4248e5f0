"""The canonical dossier event (events.md §2): its one definition, its validation and its stored form.
Pure: no I/O.

The event is a msgspec ``Struct``: msgspec checks the shape (required fields, types, lengths, ranges,
RFC 3339 times with an offset) in C; ``__post_init__`` adds what a type cannot state (digit strings for
status and channel, the attributes' types, times held in UTC), and :func:`validate_event` the depth
limit, the window of times and NUL. Every way events come in (HTTP, the portal's payloads, Kafka) goes
through :func:`validate_event`, and every stored body is read back (workers, replay, archives) through
:func:`decode_event`, so what is accepted is decided in one place.

Validation never raises for bad input: it returns a :class:`Rejection` with a machine-readable
reason, so one bad event in a batch costs only itself.

The stored form (:func:`encode_event`) is the event's JSON with sorted keys, times in UTC ("…Z") and
absent fields left out: the body kept in ``events`` (and in archive files), the value produced to the
canonical Kafka topic, and the bytes hashed for idempotency (the same event sent twice hashes the same; a different body under a known
event_id is a conflict).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from dataclasses import dataclass
from typing import Annotated, Any

import msgspec

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
MAX_EVENT_ID = 128
MAX_CODE = 64
MAX_STEP_ID = 128


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


class Rejected(Exception):
    """Raised by ``__post_init__`` for a rule msgspec's types cannot state; msgspec lets it through
    unchanged (it wraps only ValueError and TypeError), so it carries its reason and field out."""

    def __init__(self, rejection: Rejection) -> None:
        super().__init__(rejection.detail)
        self.rejection = rejection


_UTC = dt.timezone.utc

# Every time an event carries must fall in [EARLIEST_TIME, LATEST_TIME) once converted to UTC: the
# instants the rules compute with (the working-day calendar holds these years' holidays, and Vietnam
# time stays representable). Outside it, the event is refused at intake with OUT_OF_RANGE_TIME.
EARLIEST_TIME = dt.datetime(2000, 1, 1, tzinfo=_UTC)
LATEST_TIME = dt.datetime(2100, 1, 1, tzinfo=_UTC)


def _iso(value: dt.datetime) -> str:
    return value.astimezone(_UTC).isoformat().replace("+00:00", "Z")


def _utc(value: dt.datetime) -> dt.datetime:
    """``value`` in UTC when it lies in the window of times the rules compute with; outside it, as it is
    (converting could overflow): :func:`validate_event` refuses it, and a stored one is read as stored."""
    if EARLIEST_TIME <= value < LATEST_TIME:  # compared as instants: no conversion, so no overflow
        return value.astimezone(_UTC)
    return value


def time_in_window(value: dt.datetime, name: str, shown: Any = None) -> dt.datetime | Rejection:
    """``value`` (timezone-aware) if it lies in the window of times the rules compute with, else a
    rejection naming the field; ``shown`` is the value as the client sent it."""
    if EARLIEST_TIME <= value < LATEST_TIME:
        return value
    return Rejection(Reason.OUT_OF_RANGE_TIME, f"{name} must be from {_iso(EARLIEST_TIME)} up to "
                     f"{_iso(LATEST_TIME)} (UTC), not {value.isoformat() if shown is None else shown!r}", name)


# An RFC 3339 time with its offset (events.md: a time without one is rejected).
Time = Annotated[dt.datetime, msgspec.Meta(tz=True)]
EventId = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_EVENT_ID)]
Code = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_CODE)]
# Status and channel: an integer, or its ASCII digits as a string (older systems send them so).
StatusCode = Annotated[int, msgspec.Meta(ge=1, le=10)] | str
ChannelCode = Annotated[int, msgspec.Meta(ge=1, le=3)] | str


def _digits(value: int | str, name: str, low: int, high: int, reason: str) -> int:
    if type(value) is int:
        return value
    text = value.strip()
    if not is_ascii_digits(text):
        raise Rejected(Rejection(reason, f"{name} must be an integer from {low} to {high}", name))
    number = int(text)
    if not low <= number <= high:
        raise Rejected(Rejection(reason, f"{name} must be from {low} to {high}, not {number}", name))
    return number


class Step(msgspec.Struct, omit_defaults=True, gc=False):
    """A processing step (QuaTrinhXuLy). Without ``open``: the step this event closes. With ``open``: a
    step started (at ``started_at``, else the event's time) and still open; a later event naming the same
    step (``id``, else ``name`` and ``started_at``, else ``name``) closes it, as does the end of processing."""

    name: str | None = None
    handler: str | None = None
    due_at: Time | None = None
    started_at: Time | None = None
    id: Annotated[str, msgspec.Meta(max_length=MAX_STEP_ID)] | None = None
    open: bool | None = False

    def __post_init__(self) -> None:
        if self.due_at is not None:
            self.due_at = _utc(self.due_at)
        if self.started_at is not None:
            self.started_at = _utc(self.started_at)
        if self.open is None:
            self.open = False


class DossierEvent(msgspec.Struct, omit_defaults=True, dict=True):
    """A canonical event. Times are held in UTC; absent optional fields are None (``attributes``: empty).

    ``source`` (the API key's or the topic's) is not a field: the edge sets it on the validated event, so
    a body can never name it, and it is neither stored in the body nor hashed (``dict=True`` lets the
    instance carry it, with its encoded body, beside the fields)."""

    event_id: EventId
    dossier_code: Code
    unit_code: Code
    procedure_code: Code
    status: StatusCode
    occurred_at: Time
    channel: ChannelCode | None = None
    due_at: Time | None = None
    step: Step | None = None
    # Unknown attributes are kept (sources add facts before we score them) but not interpreted.
    attributes: dict[str, Any] = {}

    def __post_init__(self) -> None:
        self.status = _digits(self.status, "status", 1, 10, Reason.BAD_STATUS)
        self.occurred_at = _utc(self.occurred_at)
        if self.channel is not None:
            self.channel = _digits(self.channel, "channel", 1, 3, Reason.BAD_CHANNEL)
        if self.due_at is not None:
            self.due_at = _utc(self.due_at)
        if self.attributes:
            self.attributes = _attributes(self.attributes)

    def encoded_body(self) -> bytes:
        """The stored form (:func:`encode_event`), encoded once per event (it is hashed and stored)."""
        encoded = self.__dict__.get("_body")
        if encoded is None:
            encoded = self.__dict__["_body"] = encode_event(self)
        return encoded

    def body(self) -> dict[str, Any]:
        """The stored form as decoded JSON."""
        return msgspec.json.decode(self.encoded_body())

    def body_hash(self) -> str:
        return hashlib.sha256(self.encoded_body()).hexdigest()[:32]


def _attributes(raw: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in raw.items():
        if value is None:
            continue
        if key in BOOLEAN_ATTRIBUTES:
            if type(value) is not bool:
                raise Rejected(Rejection(Reason.BAD_FIELD, f"attributes.{key} must be true or false",
                                         f"attributes.{key}"))
        elif key in INT_ATTRIBUTES:
            if type(value) is not int:
                raise Rejected(Rejection(Reason.BAD_FIELD, f"attributes.{key} must be an integer",
                                         f"attributes.{key}"))
        out[key] = value
    return out


_ENCODER = msgspec.json.Encoder(order="sorted")
_DECODER = msgspec.json.Decoder(DossierEvent)


def encode_event(event: DossierEvent) -> bytes:
    """An event's stored form: JSON, keys sorted (struct fields and dicts alike), times in UTC, absent
    fields left out. The same bytes for the same event whatever shape it arrived in."""
    return _ENCODER.encode(event)


def decode_event(data: bytes | str | dict[str, Any], source: str | None = None) -> DossierEvent:
    """An event from its stored form (:func:`encode_event`; trusted: it was validated once), as JSON text
    or already decoded (an archive file's line)."""
    event = msgspec.convert(data, DossierEvent) if type(data) is dict else _DECODER.decode(data)
    if source is not None:
        event.source = source
    return event


def validate_event(raw: Any, source: str) -> DossierEvent | Rejection:
    """Validate one decoded JSON value as a canonical event of ``source``."""
    if type(raw) is not dict:
        return Rejection(Reason.NOT_AN_OBJECT, "each event must be a JSON object")
    if _may_nest(raw) and nested_deeper_than(raw, MAX_DEPTH):
        return Rejection(Reason.TOO_DEEP, f"an event may nest objects and arrays at most {MAX_DEPTH} levels deep")
    if raw.get("due_at") == "" or (type(raw.get("step")) is dict and "" in raw["step"].values()):
        raw = _without_empty_times(raw)
    try:
        event = msgspec.convert(raw, DossierEvent)
    except Rejected as rejected:
        return rejected.rejection
    except msgspec.ValidationError:
        return _first_fault(raw)
    step = event.step
    for name, value in (("occurred_at", event.occurred_at), ("due_at", event.due_at),
                        ("step.due_at", step and step.due_at), ("step.started_at", step and step.started_at)):
        if value is not None and not EARLIEST_TIME <= value < LATEST_TIME:
            return time_in_window(value, name, _value_at(raw, name))  # type: ignore[return-value]
    body = encode_event(event)
    if b"u0000" in body and _ESCAPED_NUL.search(body):
        # PostgreSQL's jsonb and text cannot hold U+0000: stored, it would fail the whole batch.
        return Rejection(Reason.BAD_FIELD, "text may not contain the NUL character (U+0000)")
    event.source = source
    event.__dict__["_body"] = body
    return event


# \u0000 in JSON text, not preceded by an escaped backslash (a literal "\u0000" is text, not NUL).
_ESCAPED_NUL = re.compile(rb"(?<!\\)(?:\\\\)*\\u0000")


def _may_nest(raw: dict[str, Any]) -> bool:
    """Whether ``raw`` holds anything deeper than the common shape (flat ``step`` and ``attributes``):
    only then is its depth measured."""
    for name, value in raw.items():
        kind = type(value)
        if kind is list or (kind is dict and name not in ("step", "attributes")):
            return True
        if kind is dict:
            for inner in value.values():
                if type(inner) is dict or type(inner) is list:
                    return True
    return False


def _without_empty_times(raw: dict[str, Any]) -> dict[str, Any]:
    """An empty string for an optional time means absent (events.md), as null does."""
    out = dict(raw)
    if out.get("due_at") == "":
        out["due_at"] = None
    step = out.get("step")
    if type(step) is dict:
        out["step"] = {k: (None if v == "" and k in ("due_at", "started_at") else v) for k, v in step.items()}
    return out


_PATH = re.compile(r" - at `\$\.?([^`]*)`$")
_MISSING = re.compile(r"^Object missing required field `([^`]+)`")
_CODE_LIMITS = {"event_id": MAX_EVENT_ID, "dossier_code": MAX_CODE, "unit_code": MAX_CODE, "procedure_code": MAX_CODE}
_TIMES = ("occurred_at", "due_at", "step.due_at", "step.started_at")


# The order of checks: a required field missing first, then the first field at fault in this order, whatever
# the order of the event's keys (msgspec reports the first fault in the input's order, missing fields last).
_CONTRACT_ORDER = ("event_id", "dossier_code", "unit_code", "procedure_code", "status", "occurred_at", "channel",
                   "due_at", "step", "attributes")
_REQUIRED = frozenset({"event_id", "dossier_code", "unit_code", "procedure_code", "status", "occurred_at"})


def _first_fault(raw: dict[str, Any]) -> Rejection:
    """Why ``raw`` is not an event (it failed conversion), in the order of checks above."""
    for name in _CONTRACT_ORDER:
        if name in _REQUIRED and raw.get(name) in (None, ""):
            return Rejection(Reason.MISSING_FIELD, f"{name} is required", name)
    ordered = {name: raw[name] for name in _CONTRACT_ORDER if name in raw}
    ordered.update((name, value) for name, value in raw.items() if name not in ordered)
    try:
        msgspec.convert(ordered, DossierEvent)
    except Rejected as rejected:
        return rejected.rejection
    except msgspec.ValidationError as error:
        return _explain(error, ordered)
    raise AssertionError("_first_fault of a valid event")


def _explain(error: msgspec.ValidationError, raw: dict[str, Any]) -> Rejection:
    """msgspec's error (its message names the JSON path) as our reason, field and detail."""
    message = str(error)
    at = _PATH.search(message)
    path = at.group(1) if at else ""
    missing = _MISSING.match(message)
    if missing:
        name = f"{path}.{missing.group(1)}" if path else missing.group(1)
        return Rejection(Reason.MISSING_FIELD, f"{name} is required", name)
    name = path.split("[", 1)[0]
    value = _value_at(raw, name)
    if name in _CODE_LIMITS:
        if value is None or value == "":
            return Rejection(Reason.MISSING_FIELD, f"{name} is required", name)
        if type(value) is str:
            return Rejection(Reason.BAD_FIELD, f"{name} is longer than {_CODE_LIMITS[name]} characters", name)
        return Rejection(Reason.BAD_FIELD, f"{name} must be a string", name)
    if name == "status":
        if value is None:
            return Rejection(Reason.MISSING_FIELD, "status is required", name)
        return Rejection(Reason.BAD_STATUS, "status must be an integer from 1 to 10", name)
    if name == "channel":
        return Rejection(Reason.BAD_CHANNEL, "channel must be an integer from 1 to 3", name)
    if name in _TIMES:
        if value is None:
            return Rejection(Reason.MISSING_FIELD, f"{name} is required", name)
        return _time_rejection(value, name)
    if name == "step":
        return Rejection(Reason.BAD_FIELD, "step must be an object", name)
    if name == "step.open":
        return Rejection(Reason.BAD_FIELD, "step.open must be true or false", name)
    if name == "step.id" and type(value) is str:
        return Rejection(Reason.BAD_FIELD, f"step.id is longer than {MAX_STEP_ID} characters", name)
    if name.startswith("step."):
        return Rejection(Reason.BAD_FIELD, f"{name} must be a string", name)
    if name == "attributes":
        return Rejection(Reason.BAD_FIELD, "attributes must be an object", name)
    return Rejection(Reason.BAD_FIELD, message, name or None)


def _value_at(raw: dict[str, Any], path: str) -> Any:
    value: Any = raw
    for part in path.split("."):
        value = value.get(part) if type(value) is dict else None
    return value


def _time_rejection(value: Any, name: str) -> Rejection:
    """Why ``value`` is not an RFC 3339 time with an offset: none at all (naive) or not a time."""
    if type(value) is str:
        try:
            parsed = dt.datetime.fromisoformat(value.strip())
        except ValueError:
            parsed = None
        if parsed is not None and parsed.tzinfo is None:
            return Rejection(Reason.NAIVE_TIMESTAMP, f"{name} has no UTC offset: {value!r}", name)
        return Rejection(Reason.BAD_TIMESTAMP, f"{name} is not an RFC 3339 timestamp: {value!r}", name)
    return Rejection(Reason.BAD_TIMESTAMP, f"{name} must be an RFC 3339 string", name)


def parse_timestamp(value: Any, name: str) -> dt.datetime | Rejection:
    """One time as events carry them (RFC 3339 with an offset, within the window), for other feeds."""
    try:
        parsed = msgspec.convert(value, Time)
    except msgspec.ValidationError:
        return _time_rejection(value, name)
    return time_in_window(parsed, name, value)
