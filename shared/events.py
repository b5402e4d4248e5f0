"""The canonical dossier event (events.md §2) and its validation. Pure: no I/O.

Validation never raises for bad input: it returns a :class:`Rejection` with a machine-readable
reason, so one bad event in a batch costs only itself.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass, field
from typing import Any

import orjson

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
    UNKNOWN_UNIT = "unknown_unit"
    UNIT_NOT_ALLOWED = "unit_not_allowed"
    TOO_LARGE = "too_large"
    CONFLICT = "conflict"


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


@dataclass(frozen=True)
class Step:
    name: str | None = None
    handler: str | None = None
    due_at: dt.datetime | None = None
    started_at: dt.datetime | None = None


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
            encoded = orjson.dumps(self.body(), option=orjson.OPT_SORT_KEYS)
            object.__setattr__(self, "_encoded_body", encoded)  # a cache, not a field: eq and hash ignore it
        return encoded

    def body_hash(self) -> str:
        return hashlib.sha256(self.encoded_body()).hexdigest()[:32]


def _iso(value: dt.datetime) -> str:
    return value.astimezone(dt.timezone.utc).isoformat().replace("+00:00", "Z")


def parse_timestamp(value: Any, name: str) -> dt.datetime | Rejection:
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
    return parsed


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
        if isinstance(value, str) and value.strip().isdigit():
            value = int(value.strip())
        else:
            return Rejection(reason, f"{name} must be an integer from {low} to {high}", name)
    if not low <= value <= high:
        return Rejection(reason, f"{name} must be from {low} to {high}, not {value}", name)
    return value


def validate_event(raw: Any, source: str) -> DossierEvent | Rejection:
    """Validate one decoded JSON value as a canonical event of ``source``."""
    if not isinstance(raw, dict):
        return Rejection(Reason.NOT_AN_OBJECT, "each event must be a JSON object")
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
    for name in ("name", "handler"):
        value = raw.get(name)
        if value is not None and not isinstance(value, str):
            return Rejection(Reason.BAD_FIELD, f"step.{name} must be a string", f"step.{name}")
        texts[name] = value
    return Step(**texts, **times)


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
